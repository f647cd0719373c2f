"""按 Slurm 的 squeue 与 sacct 的样子格式化作业记录（纯函数，不做 I/O，不读时钟）。

Slurm 的替身命令（issue 18）要让解析 squeue/sacct 输出的脚本照常工作，
所以这里逐字符对齐 Slurm 的输出；每种格式都注明取自 SchedMD/slurm 的哪个源文件：

- squeue：src/squeue/squeue.c（默认格式）、src/squeue/opts.c（格式串解析）、
  src/squeue/print.c（各字段与 _print_str 的对齐、截断规则）；
- sacct：src/sacct/sacct.c（字段表与默认宽度）、src/sacct/sacct.h（默认字段）、
  src/sacct/options.c（字段名与 %宽度 的解析）、src/sacct/print.c（作业行与作业步行各打印什么）、
  src/common/print_fields.c（定宽与 -p/-P 的排版）；
- 时间：src/common/parse_time.c（secs2time_str、mins2time_str、slurm_make_time_str）。
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from conductor import hostlist

Parsable = Literal["none", "p", "p2"]

# src/squeue/squeue.c 在没有 -o/-O 时拼出长格式
# "jobarrayid:.18 ,partition:.9 ,name:.8 ,username:.8 ,statecompact:.2 ,timeused:.10 ,numnodes:.6 ,reasonlist:0"，
# 与下面的短格式逐字段等价（每个字段后跟一个空格，最后的 reasonlist 不限宽、无后缀）。
DEFAULT_SQUEUE_FORMAT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
# src/sacct/sacct.h 的 DEFAULT_FIELDS
DEFAULT_SACCT_FIELDS = (
    "JobID",
    "JobName",
    "Partition",
    "Account",
    "AllocCPUS",
    "State",
    "ExitCode",
)

# src/squeue/print.c 的 _print_secs：超过一年（YEAR_SECONDS，365 天）或为负时显示 INVALID
_YEAR_SECONDS = 365 * 86400

# src/common/slurm_protocol_defs.c 的 job_state_string_compact
_STATE_COMPACT = {
    "PENDING": "PD",
    "RUNNING": "R",
    "SUSPENDED": "S",
    "COMPLETING": "CG",
    "COMPLETED": "CD",
    "CANCELLED": "CA",
    "FAILED": "F",
    "TIMEOUT": "TO",
    "NODE_FAIL": "NF",
    "PREEMPTED": "PR",
    "BOOT_FAIL": "BF",
    "DEADLINE": "DL",
    "OUT_OF_MEMORY": "OOM",
}
# src/squeue/print.c 的 _print_job_reason_list：这些状态显示（原因），其余显示节点列表
_REASON_STATES = frozenset({"PENDING", "TIMEOUT", "OUT_OF_MEMORY", "DEADLINE", "FAILED"})


# ---------------------------------------------------------------------------
# 输入：REST 列表项 → 记录
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """一个作业步（12.batch、12.0…），字段同 REST 的 steps 项；可选键缺省为 None。"""

    step_id: str
    name: str | None
    state: str
    exit_code: str | None
    start_time: datetime | None
    end_time: datetime | None
    node_list: str
    ntasks: int | None
    # 以下为可选键：REST 暂无，缺省时按 Slurm 的退路处理（见 format_sacct 的字段说明）
    allocated_cpus: int | None = None
    nodes: int | None = None
    cancelled_by_uid: int | None = None
    alloc_tres: str | None = None
    max_rss: str | None = None
    ave_rss: str | None = None
    total_cpu_seconds: float | None = None


@dataclass(frozen=True)
class JobRecord:
    """squeue/sacct 需要的作业字段，取自 GET /jobs 的一项（见 from_api）。"""

    job_id: int
    name: str | None
    account: str | None
    user: str | None
    partition: str | None
    state: str
    state_reason: str | None
    allocated_cpus: int
    nodes: int
    node_list: str
    priority: int
    submit_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    exit_code: str | None
    time_limit_seconds: int | None
    array_job_id: int | None = None
    array_task_id: int | None = None
    # 合并后的待排数组任务的下标（"3-5,7"，fold_pending_arrays），显示为 12_[3-5,7]
    array_task_str: str | None = None
    steps: tuple[StepRecord, ...] = ()
    # 以下为可选键：REST 暂无
    cancelled_by_uid: int | None = None
    derived_exit_code: str | None = None
    restarts: int = 0
    alloc_tres: str | None = None
    req_tres: str | None = None
    req_mem: str | None = None
    tres_per_node: str | None = None
    total_cpu_seconds: float | None = None


def _ts(value: Any) -> datetime | None:
    """ISO 8601 → 带时区的 datetime；无时区的按 UTC（项目约定）。"""
    if value is None or value == "":
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if dt.utcoffset() is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _step_from_api(item: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        step_id=str(item["step_id"]),
        name=item.get("name"),
        state=str(item.get("state") or ""),
        exit_code=item.get("exit_code"),
        start_time=_ts(item.get("start_time")),
        end_time=_ts(item.get("end_time")),
        node_list=item.get("node_list") or "",
        ntasks=_opt_int(item.get("ntasks")),
        allocated_cpus=_opt_int(item.get("allocated_cpus")),
        nodes=_opt_int(item.get("nodes")),
        cancelled_by_uid=_opt_int(item.get("cancelled_by_uid")),
        alloc_tres=item.get("alloc_tres"),
        max_rss=item.get("max_rss"),
        ave_rss=item.get("ave_rss"),
        total_cpu_seconds=item.get("total_cpu_seconds"),
    )


def from_api(item: Mapping[str, Any]) -> JobRecord:
    """把 REST 列表项（dict）转成 JobRecord；可选键缺失时取默认值，旧服务端的响应也能用。"""
    return JobRecord(
        job_id=int(item["job_id"]),
        name=item.get("name"),
        account=item.get("account"),
        user=item.get("user"),
        partition=item.get("partition"),
        state=str(item["state"]),
        state_reason=item.get("state_reason"),
        allocated_cpus=int(item.get("allocated_cpus") or 0),
        nodes=int(item.get("nodes") or 0),
        node_list=item.get("node_list") or "",
        priority=int(item.get("priority") or 0),
        submit_time=_ts(item.get("submit_time")),
        start_time=_ts(item.get("start_time")),
        end_time=_ts(item.get("end_time")),
        exit_code=item.get("exit_code"),
        time_limit_seconds=_opt_int(item.get("time_limit_seconds")),
        array_job_id=_opt_int(item.get("array_job_id")),
        array_task_id=_opt_int(item.get("array_task_id")),
        array_task_str=item.get("array_task_str"),
        steps=tuple(_step_from_api(s) for s in item.get("steps") or ()),
        cancelled_by_uid=_opt_int(item.get("cancelled_by_uid")),
        derived_exit_code=item.get("derived_exit_code"),
        restarts=int(item.get("restarts") or 0),
        alloc_tres=item.get("alloc_tres"),
        req_tres=item.get("tres_req_str"),
        req_mem=item.get("req_mem"),
        tres_per_node=item.get("tres_per_node"),
        total_cpu_seconds=item.get("total_cpu_seconds"),
    )


def _records(jobs: Iterable[JobRecord | Mapping[str, Any]]) -> list[JobRecord]:
    return [j if isinstance(j, JobRecord) else from_api(j) for j in jobs]


# ---------------------------------------------------------------------------
# 时间
# ---------------------------------------------------------------------------


def _epoch(dt: datetime) -> int:
    # Slurm 的时间戳是整秒 time_t；先各自取整再相减，与 difftime(end, start) 一致
    return math.floor(dt.timestamp())


def _span(start: datetime | None, end: datetime | None, now: datetime) -> int:
    """已运行秒数：未开始为 0，未结束算到 now；时钟回拨的负值按 0（同 slurmdbd）。"""
    if start is None:
        return 0
    stop = end if end is not None else now
    return max(0, _epoch(stop) - _epoch(start))


def squeue_secs(seconds: int) -> str:
    """squeue 的时长写法 M:SS、H:MM:SS、D-HH:MM:SS（src/squeue/print.c 的 _print_secs）。"""
    if seconds < 0 or seconds > _YEAR_SECONDS:
        return "INVALID"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def sacct_secs(seconds: int) -> str:
    """sacct 的时长写法 HH:MM:SS、D-HH:MM:SS（src/common/parse_time.c 的 secs2time_str）。

    Slurm 的时限以分钟存、用 mins2time_str 显示，写法相同（秒恒为 00）；
    Conductor 的时限精确到秒，这里照同一写法把秒也显示出来。
    """
    if seconds < 0:
        return "INVALID"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _cpu_time_str(seconds: float) -> str:
    """TotalCPU 的写法（src/sacct/print.c 的 _elapsed_time）：不足一小时为 MM:SS.mmm 或 00:MM:SS。"""
    secs = math.floor(seconds)
    usecs = round((seconds - secs) * 1_000_000)
    if usecs >= 1_000_000:
        secs, usecs = secs + 1, usecs - 1_000_000
    subsec = usecs // 1000
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, sec = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{sec:02d}"
    if hours:
        return f"{hours:02d}:{minutes:02d}:{sec:02d}"
    if subsec:
        return f"{minutes:02d}:{sec:02d}.{subsec:03d}"
    return f"00:{minutes:02d}:{sec:02d}"


def convert_num_unit(num: float) -> str:
    """sacct 的 MaxRSS、AveRSS 写法（src/common/slurm_protocol_api.c 的 convert_num_unit2，单位从
    字节起、按 1024 一路换到最大的单位）：整数为 "100M"，有小数为 "50.24M"，0 为 "0"。"""
    if int(num) == 0:
        return "0"
    units = "\0KMGTP"
    index = 0
    while num >= 1024:
        num /= 1024
        index += 1
    suffix = units[index] if index < len(units) else "?"
    suffix = "" if suffix == "\0" else suffix
    whole = int(num)
    return f"{whole}{suffix}" if whole == num else f"{num:.2f}{suffix}"


def _local(dt: datetime, tz: tzinfo) -> str:
    # slurm_make_time_str 的默认格式 "%FT%T"，按本地时区（这里由 tz 代替 TZ 环境变量）
    return dt.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------
# squeue
# ---------------------------------------------------------------------------

# src/squeue/opts.c 的 fmt_data_job 里 Slurm 认识的全部字母：用来区分“Slurm 没有”与“尚未支持”
_SLURM_SQUEUE_LETTERS = frozenset("aFKBokOIXEexfbGgiAWcmdjyNCDhPpQqrRnvYzsHSTtVJLlMUuwZ")


@dataclass(frozen=True)
class _SqueueField:
    header: str
    # 表头与值是否按宽度截断（_print_str 的 cut_output）：节点列表与时长不截断
    header_cut: bool
    value: Callable[[JobRecord, datetime, tzinfo], tuple[str | None, bool]]


def _sq_job_id(j: JobRecord) -> str:
    # _print_job_job_id：合并的待排任务为 主作业号_[下标区间]，数组任务为 主作业号_下标
    if j.array_task_str is not None:
        return f"{j.array_job_id}_[{j.array_task_str}]"
    if j.array_task_id is not None:
        return f"{j.array_job_id if j.array_job_id is not None else j.job_id}_{j.array_task_id}"
    return str(j.job_id)


def _sq_array_job_id(j: JobRecord) -> str:
    # _print_job_array_job_id：不是数组任务时显示作业号本身
    if j.array_task_id is not None and j.array_job_id is not None:
        return str(j.array_job_id)
    return str(j.job_id)


def _sq_used(j: JobRecord, now: datetime) -> int:
    # job_time_used：排队或未开始为 0；运行中算到 now；结束了算到结束时间
    if j.state == "PENDING":
        return 0
    end = None if j.state == "RUNNING" else j.end_time
    return _span(j.start_time, end, now)


def _sq_time(dt: datetime | None, tz: tzinfo) -> tuple[str, bool]:
    # _print_time：时间为 0 时显示 N/A
    return (_local(dt, tz) if dt is not None else "N/A"), True


def _sq_limit(j: JobRecord) -> tuple[str, bool]:
    # _print_job_time_limit：不限时为 UNLIMITED（截断）；否则 _print_secs（不截断）
    if j.time_limit_seconds is None:
        return "UNLIMITED", True
    return squeue_secs(j.time_limit_seconds), False


def _sq_left(j: JobRecord, now: datetime) -> tuple[str, bool]:
    if j.time_limit_seconds is None:
        return "UNLIMITED", True
    return squeue_secs(j.time_limit_seconds - _sq_used(j, now)), False


def _sq_reason(j: JobRecord) -> str:
    # job_state_reason_string(WAIT_NO_REASON) 为 "None"
    return j.state_reason or "None"


def _sq_reason_list(j: JobRecord) -> tuple[str, bool]:
    if j.state in _REASON_STATES:
        return f"({_sq_reason(j)})", True
    return j.node_list, False


def _cut(text: str | None) -> tuple[str | None, bool]:
    return text, True


_SQUEUE_FIELDS: dict[str, _SqueueField] = {
    "i": _SqueueField("JOBID", True, lambda j, n, z: _cut(_sq_job_id(j))),
    "A": _SqueueField("JOBID", True, lambda j, n, z: _cut(str(j.job_id))),
    "F": _SqueueField(
        "ARRAY_JOB_ID",
        True,
        lambda j, n, z: _cut(_sq_array_job_id(j)),
    ),
    "K": _SqueueField(
        "ARRAY_TASK_ID",
        True,
        lambda j, n, z: _cut(
            j.array_task_str
            if j.array_task_str is not None
            else "N/A"
            if j.array_task_id is None
            else str(j.array_task_id)
        ),
    ),
    "j": _SqueueField("NAME", True, lambda j, n, z: _cut(j.name)),
    "u": _SqueueField("USER", True, lambda j, n, z: _cut(j.user)),
    "a": _SqueueField("ACCOUNT", True, lambda j, n, z: _cut(j.account)),
    "P": _SqueueField("PARTITION", True, lambda j, n, z: _cut(j.partition)),
    "T": _SqueueField("STATE", True, lambda j, n, z: _cut(j.state)),
    "t": _SqueueField("ST", True, lambda j, n, z: _cut(_STATE_COMPACT.get(j.state, "?"))),
    "M": _SqueueField("TIME", True, lambda j, n, z: (squeue_secs(_sq_used(j, n)), False)),
    "l": _SqueueField("TIME_LIMIT", True, lambda j, n, z: _sq_limit(j)),
    "L": _SqueueField("TIME_LEFT", True, lambda j, n, z: _sq_left(j, n)),
    "D": _SqueueField("NODES", True, lambda j, n, z: _cut(str(j.nodes))),
    "C": _SqueueField("CPUS", True, lambda j, n, z: _cut(str(j.allocated_cpus))),
    "Q": _SqueueField("PRIORITY", True, lambda j, n, z: _cut(str(j.priority))),
    "b": _SqueueField("TRES_PER_NODE", True, lambda j, n, z: _cut(j.tres_per_node or "N/A")),
    "r": _SqueueField("REASON", True, lambda j, n, z: _cut(_sq_reason(j))),
    "R": _SqueueField("NODELIST(REASON)", False, lambda j, n, z: _sq_reason_list(j)),
    "N": _SqueueField("NODELIST", False, lambda j, n, z: (j.node_list, False)),
    "S": _SqueueField("START_TIME", True, lambda j, n, z: _sq_time(j.start_time, z)),
    "V": _SqueueField("SUBMIT_TIME", True, lambda j, n, z: _sq_time(j.submit_time, z)),
}


def _print_str(text: str | None, width: int, right: bool, cut: bool) -> str:
    """src/squeue/print.c 的 _print_str：%.N 右对齐（cut 时截成 N 个字符），%N 左对齐、截断并补空格，%0 与不写宽度原样输出。"""
    if text is None:
        # printf("%s", NULL) 在 glibc 下输出 "(null)"；带精度且小于 6 的 "%.Ns" 则什么也不输出
        text = "" if (not right and 0 < width < 6) else "(null)"
    if width <= 0:
        return text
    if right:
        out = text.rjust(width)
        return out[:width] if cut else out
    return text[:width].ljust(width)


@dataclass(frozen=True)
class FormatSpec:
    """格式串里的一个字段：%[.][宽度]字母[后缀]。"""

    letter: str
    width: int
    right: bool
    suffix: str


def parse_percent_format(
    fmt: str, tool: str, known: Container[str], slurm_letters: Container[str]
) -> tuple[str, list[FormatSpec]]:
    """squeue/sinfo 共用的 -o 格式串拆分（src/squeue/opts.c 与 src/sinfo/opts.c 的 _parse_format 同一写法）：
    返回（前缀，字段列表）。known 为支持的字母；slurm_letters 为 Slurm 有、这里尚未支持的字母（报错时区分）。

    Slurm 用 strtok 按 % 切分，所以连续的 %% 只是空段，不是转义。"""
    pos = fmt.find("%")
    if pos < 0:
        return fmt, []
    prefix, rest = fmt[:pos], fmt[pos:]
    specs: list[FormatSpec] = []
    for token in (t for t in rest.split("%") if t):
        i = 0
        right = token.startswith(".")
        if right:
            i = 1
        width = 0
        while i < len(token) and token[i].isascii() and token[i].isdigit():
            width = width * 10 + int(token[i])
            i += 1
        letter = token[i] if i < len(token) else ""
        if letter not in known:
            if letter in slurm_letters:
                raise ValueError(
                    f"{tool} 格式字段 %{letter} 是 Slurm 的字段，但 Conductor 尚未支持"
                )
            shown = f"%{letter}" if letter else f"%{token}"
            raise ValueError(f"{tool} 格式字段 {shown} 无效：Slurm 没有这个字段字母")
        specs.append(FormatSpec(letter, width, right, token[i + 1 :]))
    return prefix, specs


def parse_squeue_format(fmt: str) -> tuple[str, list[FormatSpec]]:
    """按 src/squeue/opts.c 的 parse_format/_parse_token 拆格式串：返回（前缀，字段列表）。

    Slurm 没有 %-N 的写法（'-' 会被当成字段字母），这里同样报错。
    """
    return parse_percent_format(fmt, "squeue", _SQUEUE_FIELDS, _SLURM_SQUEUE_LETTERS)


def fold_pending_arrays(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """squeue 不带 -r 时的样子（src/squeue/print.c 的 _combine_pending_array_tasks）：同一数组里作业名、
    分区都相同的待排任务合成一条，下标写成 3-5,7（bit_fmt），等待原因不同的用逗号连起来。
    合成的一条取下标最小的那个任务的其余字段，留在它的位置上。只有一个待排任务时照常显示 12_3。"""
    rows = [dict(i) for i in items]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for item in rows:
        if item.get("state") == "PENDING" and item.get("array_task_id") is not None:
            key = (item.get("array_job_id"), item.get("name"), item.get("partition"))
            groups.setdefault(key, []).append(item)
    out: list[dict[str, Any]] = []
    for item in rows:
        key = (item.get("array_job_id"), item.get("name"), item.get("partition"))
        members = groups.get(key) if item.get("state") == "PENDING" else None
        if not members or len(members) < 2 or item.get("array_task_id") is None:
            out.append(item)
            continue
        ordered = sorted(members, key=lambda m: int(m["array_task_id"]))
        first = ordered[0]
        if item is not first:
            continue
        reasons = list(dict.fromkeys(m.get("state_reason") or "None" for m in ordered))
        out.append(
            first
            | {
                "array_task_str": hostlist.number_ranges(
                    [int(m["array_task_id"]) for m in ordered]
                ),
                "state_reason": ",".join(reasons),
            }
        )
    return out


def format_squeue(
    jobs: Iterable[JobRecord | Mapping[str, Any]],
    fmt: str | None,
    header: bool,
    now: datetime,
    tz: tzinfo = UTC,
) -> str:
    """按 squeue [-o FMT] [-h] 的样子输出作业列表；每行以换行结尾（同 Slurm 的 printf("\\n")）。

    fmt 为 None 时用 Slurm 的默认格式；%S/%V 按 tz 显示（代替 Slurm 读的本地时区）。
    未知字段字母抛 ValueError。
    """
    prefix, specs = parse_squeue_format(DEFAULT_SQUEUE_FORMAT if fmt is None else fmt)
    lines: list[str] = []
    if header:
        parts = [prefix]
        for s in specs:
            f = _SQUEUE_FIELDS[s.letter]
            parts.append(_print_str(f.header, s.width, s.right, f.header_cut) + s.suffix)
        lines.append("".join(parts))
    for job in _records(jobs):
        parts = [prefix]
        for s in specs:
            text, cut = _SQUEUE_FIELDS[s.letter].value(job, now, tz)
            parts.append(_print_str(text, s.width, s.right, cut) + s.suffix)
        lines.append("".join(parts))
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------
# sacct
# ---------------------------------------------------------------------------

# src/sacct/sacct.c 的 fields[] 的全部字段名，按表中顺序：Slurm 用前缀匹配（xstrncasecmp），
# 取表中第一个匹配的字段，所以 "jobid" 得 JobID 而不是 JobIDRaw；这里按同一顺序匹配，
# 再看 Conductor 是否支持该字段。
_SLURM_SACCT_TABLE = (
    "Account AdminComment AllocCPUS AllocNodes AllocTRES AssocID AveCPU AveCPUFreq "
    "AveDiskRead AveDiskWrite AvePages AveRSS AveVMSize BlockID Cluster Comment Constraints "
    "ConsumedEnergy ConsumedEnergyRaw Container CPUTime CPUTimeRAW DBIndex DerivedExitCode "
    "Elapsed ElapsedRaw Eligible End Exclusive ExitCode Extra FailedNode Flags GID Group "
    "JobID JobIDRaw JobName Layout Licenses MaxDiskRead MaxDiskReadNode MaxDiskReadTask "
    "MaxDiskWrite MaxDiskWriteNode MaxDiskWriteTask MaxPages MaxPagesNode MaxPagesTask "
    "MaxRSS MaxRSSNode MaxRSSTask MaxVMSize MaxVMSizeNode MaxVMSizeTask McsLabel MinCPU "
    "MinCPUNode MinCPUTask NCPUS NNodes NodeList NTasks OriginalSLUID OverSubscribe "
    "Partition Planned PlannedCPU PlannedCPURAW Priority QOS QOSRAW QOSREQ Reason "
    "ReqCPUFreq ReqCPUFreqGov ReqCPUFreqMax ReqCPUFreqMin ReqCPUS ReqMem ReqNodes ReqTRES "
    "Reservation ReservationId ReqReservation Restarts SegmentSize SLUID Start State StdErr "
    "StdIn StdOut Submit SubmitLine Suspended SystemComment SystemCPU Timelimit "
    "TimelimitRaw TotalCPU TRESUsageInAve TRESUsageInMax TRESUsageInMaxNode "
    "TRESUsageInMaxTask TRESUsageInMin TRESUsageInMinNode TRESUsageInMinTask TRESUsageInTot "
    "TRESUsageOutAve TRESUsageOutMax TRESUsageOutMaxNode TRESUsageOutMaxTask TRESUsageOutMin "
    "TRESUsageOutMinNode TRESUsageOutMinTask TRESUsageOutTot UID User UserCPU WCKey WCKeyID "
    "WorkDir"
)
# 按 sacct.c 的表逐行抄录：一串名字比一百多项的列表字面量好核对
_SLURM_SACCT_NAMES = tuple(_SLURM_SACCT_TABLE.split())

# 单元格的种类对应 print_fields.c 的打印函数：
# str → print_fields_str（定宽时过长截断并以 + 结尾）；uint → print_fields_uint32/uint16（不截断）；
# date → print_fields_date（定宽放不下时整格为 #）；secs → print_fields_time_from_secs（不截断）
_Kind = Literal["str", "uint", "date", "secs"]
_Cell = tuple[_Kind, Any]


@dataclass(frozen=True)
class _Row:
    """一行 sacct 输出：作业本身或它的一个作业步（step 为 None 即作业行）。"""

    job: JobRecord
    step: StepRecord | None


def _sa_job_id_str(j: JobRecord) -> str:
    # slurmdb_get_job_id_str：数组任务为 主作业号_下标
    if j.array_task_id is not None:
        return f"{j.array_job_id if j.array_job_id is not None else j.job_id}_{j.array_task_id}"
    return str(j.job_id)


def _step_suffix(s: StepRecord) -> str:
    # REST 的 step_id 形如 12.batch、12.0：取点号后的部分
    return s.step_id.split(".", 1)[1] if "." in s.step_id else s.step_id


def _sa_state(state: str, uid: int | None) -> str:
    # print.c 的 PRINT_STATE："%s by %u"（取消者的 uid）
    if state == "CANCELLED" and uid is not None:
        return f"CANCELLED by {uid}"
    return state


def _sa_elapsed(r: _Row, now: datetime) -> int:
    if r.step is None:
        return _span(r.job.start_time, r.job.end_time, now)
    return _span(r.step.start_time, r.step.end_time, now)


def _sa_cpus(r: _Row) -> int:
    # 作业步没有自己的 CPU 数时用作业的（print.c：步的 TRES 里没有 cpu 时退回作业的）
    if r.step is not None and r.step.allocated_cpus is not None:
        return r.step.allocated_cpus
    return r.job.allocated_cpus


def _sa_step_nodes(s: StepRecord) -> int | None:
    if s.nodes is not None:
        return s.nodes
    if not s.node_list:
        return None
    try:
        return len(hostlist.expand(s.node_list))
    except ValueError:
        return None


def _sa_step_name(s: StepRecord) -> str | None:
    # Slurm 的批处理步、extern 步名字就是 batch、extern；REST 没给名字时照此补上
    if s.name:
        return s.name
    suffix = _step_suffix(s)
    return suffix if suffix in ("batch", "extern", "interactive") else None


def _sa_cell(name: str, r: _Row, now: datetime) -> _Cell:
    """字段在作业行与作业步行上的值，逐项照 src/sacct/print.c 的 print_fields()。"""
    j, s = r.job, r.step
    match name:
        case "JobID":
            jid = _sa_job_id_str(j)
            return "str", jid if s is None else f"{jid}.{_step_suffix(s)}"
        case "JobIDRaw":
            return "str", str(j.job_id) if s is None else f"{j.job_id}.{_step_suffix(s)}"
        case "JobName":
            return "str", j.name if s is None else _sa_step_name(s)
        case "Partition":
            return "str", j.partition if s is None else None
        case "Account":
            # 作业步也显示作业的账户（step->job_ptr->account）
            return "str", j.account
        case "User":
            return "str", j.user if s is None else None
        case "AllocCPUS":
            return "uint", _sa_cpus(r)
        case "AllocTRES":
            return "str", j.alloc_tres if s is None else s.alloc_tres
        case "ReqMem":
            return "str", j.req_mem if s is None else None
        case "ReqTRES":
            return "str", j.req_tres if s is None else None
        case "State":
            if s is None:
                return "str", _sa_state(j.state, j.cancelled_by_uid)
            return "str", _sa_state(s.state, s.cancelled_by_uid)
        case "ExitCode":
            # 未结束的作业在库里的退出码为 0，显示 0:0
            return "str", (j.exit_code if s is None else s.exit_code) or "0:0"
        case "DerivedExitCode":
            return "str", (j.derived_exit_code or "0:0") if s is None else ""
        case "Elapsed":
            return "secs", _sa_elapsed(r, now)
        case "ElapsedRaw":
            return "uint", _sa_elapsed(r, now)
        case "CPUTime":
            return "secs", _sa_elapsed(r, now) * _sa_cpus(r)
        case "Submit":
            # 作业步的 Submit 显示步的开始时间
            return "date", j.submit_time if s is None else s.start_time
        case "Start":
            return "date", j.start_time if s is None else s.start_time
        case "End":
            return "date", j.end_time if s is None else s.end_time
        case "NodeList":
            # slurmdbd 入库时把空节点列表写成 "None assigned"（as_mysql_job.c）
            if s is None:
                return "str", j.node_list or "None assigned"
            return "str", s.node_list or None
        case "NNodes":
            return "uint", j.nodes if s is None else _sa_step_nodes(s)
        case "MaxRSS":
            # 作业行没有用量统计（_get_tres_cnt 只对作业步取值）
            return "str", None if s is None else s.max_rss
        case "AveRSS":
            return "str", None if s is None else s.ave_rss
        case "TotalCPU":
            total = j.total_cpu_seconds if s is None else s.total_cpu_seconds
            return "str", _cpu_time_str(total or 0)
        case "Timelimit":
            # 作业步的时限通常未设置（INFINITE），留空
            if s is not None:
                return "str", None
            if j.time_limit_seconds is None:
                return "str", "UNLIMITED"
            return "str", sacct_secs(j.time_limit_seconds)
        case "Restarts":
            return "uint", j.restarts if s is None else None
        case "Reason":
            # 作业行为 job_state_reason_string(state_reason_prev)，无原因时为 "None"
            return "str", (j.state_reason or "None") if s is None else None
    raise AssertionError(name)  # _resolve_field 已保证字段受支持


# 支持的字段与 src/sacct/sacct.c 中的默认宽度（负数为左对齐）
SACCT_WIDTHS: dict[str, int] = {
    "JobID": -12,
    "JobIDRaw": -12,
    "JobName": 10,
    "Partition": 10,
    "Account": 10,
    "User": 9,
    "AllocCPUS": 10,
    "AllocTRES": 10,
    "ReqMem": 10,
    "ReqTRES": 10,
    "State": 10,
    "ExitCode": 8,
    "DerivedExitCode": 15,
    "Elapsed": 10,
    "ElapsedRaw": 10,
    "Submit": 19,
    "Start": 19,
    "End": 19,
    "NodeList": 15,
    "NNodes": 8,
    "MaxRSS": 10,
    "AveRSS": 10,
    "TotalCPU": 10,
    "CPUTime": 10,
    "Timelimit": 10,
    "Restarts": 8,
    "Reason": 22,
}


_ATOI = re.compile(r"\s*[+-]?\d+", re.ASCII)


def _resolve_field(spec: str) -> tuple[str, int]:
    """解析一个 --format 项（如 jobname%30）为（字段名，宽度），规则同 src/sacct/options.c。"""
    name, sep, width_text = spec.strip().partition("%")
    if not name:
        raise ValueError(f"sacct 字段 {spec!r} 无效：缺少字段名")
    # Slurm 先把 ALL 的前缀（a、al、all）当作“全部字段”
    if "ALL".startswith(name.upper()):
        raise ValueError(f"sacct 字段 {spec!r}（ALL，全部字段）Conductor 尚未支持")
    found = next((n for n in _SLURM_SACCT_NAMES if n.lower().startswith(name.lower())), None)
    if found is None:
        raise ValueError(f"sacct 字段 {name!r} 无效：Slurm 没有这个字段")
    if found not in SACCT_WIDTHS:
        raise ValueError(
            f"sacct 字段 {found}（由 {name!r} 匹配）是 Slurm 的字段，但 Conductor 尚未支持"
        )
    width = SACCT_WIDTHS[found]
    if sep:
        width = _atoi(width_text)
        if width == 0:
            # Slurm 对宽度 0 的截断会写到缓冲区之外（未定义行为），这里直接拒绝
            raise ValueError(f"sacct 字段 {spec!r} 的宽度无效：须为非零整数")
    return found, width


def _atoi(text: str) -> int:
    # C 的 atoi：读开头的空白、可选符号与数字，其余忽略；读不到数字为 0
    match = _ATOI.match(text)
    return int(match[0]) if match else 0


def _justify(text: str, width: int) -> str:
    # print_fields.c：宽度为正右对齐（%*s），为负左对齐（%-*s）
    return text.rjust(width) if width > 0 else text.ljust(-width)


def _fixed(kind: _Kind, value: Any, width: int, tz: tzinfo) -> str:
    """定宽的一格（不含后面的空格），照 print_fields.c 各打印函数的非 parsable 分支。"""
    size = abs(width)

    def justify(text: str) -> str:
        return _justify(text, width)

    if kind == "date":
        if value is None:
            # slurm_make_time_str 对 0 写 "Unknown"，snprintf 按缓冲区截断
            return justify("Unknown"[:size])
        text = _local(value, tz)
        # strftime 放不下时 Slurm 把整格填成 #
        return justify(text if len(text) <= size else "#" * size)
    if value is None:
        return " " * size
    if kind == "str":
        text = str(value)
        if len(text) > size:
            text = text[: size - 1] + "+"
        return justify(text)
    text = str(value) if kind == "uint" else sacct_secs(value)
    return justify(text)


def _parsable(kind: _Kind, value: Any, tz: tzinfo) -> str:
    if value is None:
        return "Unknown" if kind == "date" else ""
    if kind == "date":
        return _local(value, tz)
    if kind == "secs":
        return sacct_secs(value)
    return str(value)


def format_sacct(
    jobs: Iterable[JobRecord | Mapping[str, Any]],
    fields: Sequence[str] | None,
    parsable: Parsable,
    header: bool,
    allocations_only: bool,
    now: datetime,
    tz: tzinfo = UTC,
) -> str:
    """按 sacct 的样子输出：每个作业一行，其后是它的作业步（allocations_only 即 -X 时不输出作业步）。

    fields 为 --format 的各项（大小写不敏感、可写前缀与 %宽度，一项里也可用逗号分隔多个）；
    None 为 Slurm 的默认字段。parsable："none" 定宽（表头下有一行 ---），"p" 即 -p（每格后都有 |），
    "p2" 即 -P/--parsable2（格间用 |，行尾没有）。定宽的每格后都跟一个空格，行尾也是（同 Slurm）。
    """
    specs = [
        _resolve_field(part)
        for item in (DEFAULT_SACCT_FIELDS if fields is None else fields)
        for part in item.split(",")
        if part.strip()
    ]
    if not specs:
        raise ValueError("sacct 没有要输出的字段")
    if parsable not in ("none", "p", "p2"):
        raise ValueError(f"parsable 须为 none、p 或 p2：{parsable!r}")

    def line(cells: list[str]) -> str:
        if parsable == "p2":
            return "|".join(cells) + "\n"
        if parsable == "p":
            return "".join(c + "|" for c in cells) + "\n"
        return "".join(c + " " for c in cells) + "\n"

    out: list[str] = []
    if header:
        if parsable == "none":
            # print_fields_header："%*.*s "，表头按宽度截断但不加 +；其下是与宽度等长的 ---
            out.append(line([_justify(n[: abs(w)], w) for n, w in specs]))
            out.append(line(["-" * abs(w) for _, w in specs]))
        else:
            out.append(line([n for n, _ in specs]))
    for job in _records(jobs):
        rows = [_Row(job, None)]
        if not allocations_only:
            rows += [_Row(job, s) for s in job.steps]
        for r in rows:
            cells: list[str] = []
            for name, width in specs:
                kind, value = _sa_cell(name, r, now)
                if parsable == "none":
                    cells.append(_fixed(kind, value, width, tz))
                else:
                    cells.append(_parsable(kind, value, tz))
            out.append(line(cells))
    return "".join(out)
