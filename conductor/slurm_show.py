"""按 Slurm 的 sinfo 与 scontrol show job/node/partition 的样子格式化（纯函数，不做 I/O，不读时钟）。

出处（SchedMD/slurm）：
- sinfo：src/sinfo/opts.c（默认格式 "partition:9 ,available:.5 ,time:.10 ,nodes:.6 ,statecompact:.6 ,nodelist:0"，
  -N、-l 的格式与字段字母）、src/sinfo/print.c（_print_str 的对齐与截断、分区列宽取最长的分区名、
  默认分区名后加 *、_print_secs 的时限写法、无节点的行 STATE 为 n/a）、src/sinfo/sort.c（默认排序 "#P,-t"）；
- scontrol show：src/api/job_info.c 的 slurm_sprint_job_info、src/api/node_info.c 的
  slurm_sprint_node_table、src/api/partition_info.c 的 slurm_sprint_partition_info（22.05 的版式：
  每条记录第一行顶格，其余各行以三个空格缩进，记录之间空一行）。
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from conductor import hostlist
from conductor.slurm_output import FormatSpec, parse_percent_format

# src/sinfo/print.c 的 MIN_PART_FIELD_SIZE、MIN_NODE_FIELD_SIZE
MIN_PART_FIELD_SIZE = 9
MIN_NODE_FIELD_SIZE = 9

# node_states 的枚举值：sort.c 的 -t 按它倒序（mix、alloc、idle、down）
# 排空是状态上的 DRAIN 标志位（0x200）：排在基本状态之后
_STATE_ORDER = {
    "down*": 1,
    "down": 1,
    "idle": 2,
    "alloc": 3,
    "mix": 5,
    "drain": 0x202,
    "drng": 0x205,
}
_STATE_LONG = {
    "down*": "down*",
    "down": "down",
    "idle": "idle",
    "alloc": "allocated",
    "mix": "mixed",
    "drain": "drained",
    "drng": "draining",
}
_STATE_UPPER = {
    "down*": "DOWN*",
    "down": "DOWN",
    "idle": "IDLE",
    "alloc": "ALLOCATED",
    "mix": "MIXED",
}


@dataclass(frozen=True)
class PartitionView:
    """一个分区：GET /partitions 的一项。时限为秒，None 为不限。"""

    name: str
    is_default: bool
    max_time: int | None
    default_time: int | None = None


@dataclass(frozen=True)
class NodeView:
    """一个节点：GET /dashboard 的 node_info 一项（经 node_from_api）。"""

    name: str
    partitions: tuple[str, ...]
    alive: bool
    cpus_total: int
    cpus_alloc: int
    gpus_total: int = 0
    gpus_alloc: int = 0
    gres: Mapping[str, float] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    memory_mb: int | None = None
    # 排空（node_info 的 drain_reason 等）：原因、操作者与开始时刻；未排空时 reason 为 None
    reason: str | None = None
    reason_user: str | None = None
    reason_time: datetime | None = None

    @property
    def busy(self) -> bool:
        return self.cpus_alloc > 0 or self.gpus_alloc > 0

    @property
    def base_state(self) -> str:
        """不计排空的状态缩写：失联为 down*（DOWN 且不响应），否则按 CPU 占用 idle、mix、alloc。"""
        if not self.alive:
            return "down*"
        if not self.busy:
            return "idle"
        if self.cpus_alloc >= self.cpus_total:
            return "alloc"
        return "mix"

    @property
    def state(self) -> str:
        """sinfo 的状态缩写：排空中还有作业为 drng、没有了为 drain（node_state_string_compact），
        否则同 base_state。"""
        if self.alive and self.reason is not None:
            return "drng" if self.busy else "drain"
        return self.base_state

    @property
    def gres_str(self) -> str:
        """Slurm 的 Gres 写法：gpu:2,nvme:1；没有为 (null)。"""
        items = []
        if self.gpus_total:
            items.append(f"gpu:{self.gpus_total}")
        for name, total in sorted(self.gres.items()):
            items.append(f"{name}:{int(total) if float(total).is_integer() else total}")
        return ",".join(items) or "(null)"


def node_from_api(item: Mapping[str, object]) -> NodeView:
    """/dashboard 的 node_info 项 → NodeView；可选键缺失时取默认值。"""
    gres_raw = item.get("gres") or {}
    gres: dict[str, float] = {}
    if isinstance(gres_raw, Mapping):
        for name, stats in gres_raw.items():
            total = stats.get("total", 0) if isinstance(stats, Mapping) else stats
            gres[str(name)] = float(total or 0)
    partitions = str(item.get("partition") or "")
    memory = item.get("memory_mb")
    since = item.get("drain_since")
    return NodeView(
        name=str(item.get("node_name") or item.get("node_id") or "?"),
        partitions=tuple(p for p in partitions.split(",") if p),
        alive=bool(item.get("available", True)),
        cpus_total=int(item.get("total_cpus") or 0),  # type: ignore[call-overload]
        cpus_alloc=int(item.get("allocated_cpus") or 0),  # type: ignore[call-overload]
        gpus_total=int(item.get("total_gpus") or 0),  # type: ignore[call-overload]
        gpus_alloc=int(item.get("allocated_gpus") or 0),  # type: ignore[call-overload]
        gres=gres,
        features=tuple(str(f) for f in item.get("features") or ()),  # type: ignore[attr-defined]
        memory_mb=None if memory is None else int(memory),  # type: ignore[call-overload]
        reason=None if item.get("drain_reason") is None else str(item["drain_reason"]),
        reason_user=None if item.get("drained_by") is None else str(item["drained_by"]),
        # 同 Slurm 以本地时区显示
        reason_time=datetime.fromisoformat(str(since)).astimezone() if since else None,
    )


# ---------------------------------------------------------------------------
# sinfo
# ---------------------------------------------------------------------------


def sinfo_secs(seconds: int) -> str:
    """src/sinfo/print.c 的 _print_secs：D-HH:MM:SS、H:MM:SS、M:SS。"""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def _print_str(text: str, width: int, right: bool, cut: bool = True) -> str:
    """src/sinfo/print.c 的 _print_str：右对齐为 %Ns，左对齐为 %.Ns 再补空格；cut 时截到宽度。"""
    if width == 0:
        return text
    if right:
        out = text.rjust(width)
        return out[:width] if cut else out
    out = text[:width] if cut else text
    return out.ljust(width)


@dataclass(frozen=True)
class _Group:
    """sinfo 的一行：一个分区里同一状态的节点（-N 时为一个节点）。"""

    partition: PartitionView | None
    nodes: tuple[NodeView, ...]
    state: str

    def cpus(self) -> tuple[int, int, int, int]:
        alloc = sum(n.cpus_alloc for n in self.nodes if n.alive)
        total = sum(n.cpus_total for n in self.nodes)
        other = sum(n.cpus_total for n in self.nodes if not n.alive)
        return alloc, total - alloc - other, other, total


def _partition_cell(g: _Group, width: int) -> str:
    if g.partition is None:
        return "n/a"
    name = g.partition.name
    if g.partition.is_default:
        if len(name) < width or width == 0:
            name += "*"
        elif width > 0:
            name = name[: width - 1] + "*"
    return name


def _nodes_aiot(g: _Group) -> str:
    alloc = sum(1 for n in g.nodes if n.alive and n.cpus_alloc > 0)
    idle = sum(1 for n in g.nodes if n.alive and n.cpus_alloc <= 0)
    other = sum(1 for n in g.nodes if not n.alive)
    return f"{alloc}/{idle}/{other}/{len(g.nodes)}"


def _cpus_range(g: _Group) -> str:
    values = sorted({n.cpus_total for n in g.nodes})
    if not values:
        return "0"
    return str(values[0]) if len(values) == 1 else f"{values[0]}+"


def _memory(g: _Group) -> str:
    values = sorted({n.memory_mb for n in g.nodes if n.memory_mb is not None})
    if not values:
        return "1"  # Slurm 未配置 RealMemory 时为 1
    return str(values[0]) if len(values) == 1 else f"{values[0]}+"


def _sinfo_cell(letter: str, g: _Group | None, width: int) -> tuple[str, bool]:
    """字段在表头（g 为 None）或数据行上的文字，以及是否按宽度截断。"""
    headers = {
        "P": "PARTITION",
        "a": "AVAIL",
        "l": "TIMELIMIT",
        "L": "DEFAULTTIME",
        "D": "NODES",
        "t": "STATE",
        "T": "STATE",
        "N": "NODELIST",
        "C": "CPUS(A/I/O/T)",
        "c": "CPUS",
        "G": "GRES",
        "f": "AVAIL_FEATURES",
        "F": "NODES(A/I/O/T)",
        "A": "NODES(A/I)",
        "m": "MEMORY",
        "s": "JOB_SIZE",
        "r": "ROOT",
        "h": "OVERSUBS",
        "g": "GROUPS",
        "R": "PARTITION",
        "z": "S:C:T",
        "d": "TMP_DISK",
        "w": "WEIGHT",
        "E": "REASON",
        "u": "USER",
        "H": "TIMESTAMP",
    }
    if g is None:
        return headers[letter], letter != "N"
    p = g.partition
    match letter:
        case "P":
            return _partition_cell(g, width), True
        case "R":
            return (p.name if p else "n/a"), True
        case "a":
            return ("up" if p else "n/a"), True
        case "l":
            if p is None:
                return "n/a", True
            return ("infinite" if p.max_time is None else sinfo_secs(p.max_time)), True
        case "L":
            if p is None:
                return "n/a", True
            if p.default_time is None:
                return "n/a", True
            return sinfo_secs(p.default_time), True
        case "D":
            return str(len(g.nodes)), True
        case "t":
            return (g.state if g.nodes else "n/a"), True
        case "T":
            return (_STATE_LONG.get(g.state, g.state) if g.nodes else "n/a"), True
        case "N":
            return hostlist.compress(n.name for n in g.nodes) if g.nodes else "", True
        case "C":
            return "/".join(str(x) for x in g.cpus()), True
        case "c":
            return _cpus_range(g), True
        case "G":
            gres = sorted({n.gres_str for n in g.nodes})
            return (",".join(gres) if gres else "(null)"), True
        case "f":
            feats = sorted({",".join(n.features) or "(null)" for n in g.nodes})
            return (",".join(feats) if feats else "(null)"), True
        case "F":
            return _nodes_aiot(g), True
        case "A":
            a, i, _, _ = _nodes_aiot(g).split("/")
            return f"{a}/{i}", True
        case "m":
            return _memory(g), True
        case "s":
            return "1-infinite", True
        case "r":
            return "no", True
        case "h":
            return "NO", True
        case "g":
            return "all", True
        case "z":
            # 与 scontrol show node 一致：每个 CPU 记作一个插槽（Ray 不报告拓扑）
            return _cpus_range(g) + ":1:1", True
        case "d":
            return "0", True
        case "w":
            return "1", True
        case "E":
            return (g.nodes[0].reason or "none") if g.nodes else "none", True
        case "u":
            return (g.nodes[0].reason_user or "Unknown") if g.nodes else "Unknown", True
        case "H":
            when = g.nodes[0].reason_time if g.nodes else None
            return (_time(when, when.tzinfo) if when and when.tzinfo else "Unknown"), True
    raise AssertionError(letter)


SINFO_LETTERS = frozenset("PRalLDtTNCcGfFAmsrhgzdwEuH")
# sinfo 的全部字段字母（src/sinfo/opts.c 的 fmt_data）：区分“Slurm 没有”与“尚未支持”
_SLURM_SINFO_LETTERS = frozenset("aABcCdDeEfFgGhHiIlLmMnNoOpPrRsStTuUvVwXYzZ")

DEFAULT_SINFO_FORMAT = "%9P %.5a %.10l %.6D %.6t %N"
LONG_SINFO_FORMAT = "%9P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N"
NODE_SINFO_FORMAT = "%N %.6D %.9P %6t"
NODE_LONG_SINFO_FORMAT = "%N %.6D %.9P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E"
# sinfo -R（opts.c：list_reasons）：排空的节点按原因、操作者、时刻成组
REASON_SINFO_FORMAT = "%20E %9u %19H %N"
# -l 时 Slurm 的 %12U 为“用户名(uid)”；Conductor 只记用户名，印 %12u
REASON_LONG_SINFO_FORMAT = "%20E %12u %19H %6t %N"


def parse_sinfo_format(fmt: str) -> tuple[str, list[FormatSpec]]:
    """src/sinfo/opts.c 的 _parse_format：%[.][宽度]字母[后缀]，开头的非 % 文字为前缀。"""
    return parse_percent_format(fmt, "sinfo", SINFO_LETTERS, _SLURM_SINFO_LETTERS)


def _groups(
    partitions: Sequence[PartitionView], nodes: Sequence[NodeView], per_node: bool
) -> list[_Group]:
    groups: list[_Group] = []
    for order, p in enumerate(partitions):
        members = [n for n in nodes if p.name in n.partitions]
        if per_node:
            groups.extend(_Group(p, (n,), n.state) for n in members)
            continue
        if not members:
            groups.append(_Group(p, (), "n/a"))
            continue
        states = sorted({n.state for n in members}, key=lambda s: -_STATE_ORDER.get(s, 0))
        for state in states:
            groups.append(_Group(p, tuple(n for n in members if n.state == state), state))
        del order
    if per_node:
        # -N 默认按节点名排序（sort.c 的 "N"）
        groups.sort(key=lambda g: g.nodes[0].name)
    return groups


def format_sinfo(
    partitions: Sequence[PartitionView],
    nodes: Sequence[NodeView],
    fmt: str | None = None,
    header: bool = True,
    per_node: bool = False,
    long: bool = False,
    partition_filter: Sequence[str] = (),
    state_filter: Sequence[str] = (),
) -> str:
    """按 sinfo [-N] [-l] [-o FMT] [-h] [-p P] [-t S] 的样子输出；每行以换行结尾。

    默认视图每个分区×状态一行（没有节点的分区一行，STATE 为 n/a），分区按配置顺序、
    同一分区内按状态 mix、alloc、idle、down 排；-N 每个节点×分区一行，按节点名排。
    默认格式下分区列与（-N 时）节点列的宽度取最长的名字（至少 9），同 Slurm。
    """
    default = fmt is None
    if fmt is None:
        if per_node:
            fmt = NODE_LONG_SINFO_FORMAT if long else NODE_SINFO_FORMAT
        else:
            fmt = LONG_SINFO_FORMAT if long else DEFAULT_SINFO_FORMAT
    prefix, specs = parse_sinfo_format(fmt)
    if partition_filter:
        partitions = [p for p in partitions if p.name in partition_filter]
    groups = _groups(partitions, nodes, per_node)
    if state_filter:
        wanted = {s.lower().rstrip("*") for s in state_filter}
        groups = [g for g in groups if g.nodes and _state_matches(g.state, wanted)]
    part_width = node_width = None
    if default:
        part_width = max(
            [MIN_PART_FIELD_SIZE]
            + [len(g.partition.name) + g.partition.is_default for g in groups if g.partition]
        )
        if per_node:
            node_width = max(
                [MIN_NODE_FIELD_SIZE]
                + [len(hostlist.compress(n.name for n in g.nodes)) for g in groups if g.nodes]
            )
    return _render(prefix, specs, groups, header, part_width, node_width)


def format_sinfo_reasons(
    nodes: Sequence[NodeView], long: bool = False, header: bool = True, fmt: str | None = None
) -> str:
    """sinfo -R：排空的节点，同一原因、操作者、时刻（-l 时还有状态）的成一行，每个节点只出现一次。"""
    prefix, specs = parse_sinfo_format(
        fmt or (REASON_LONG_SINFO_FORMAT if long else REASON_SINFO_FORMAT)
    )
    keyed: dict[tuple, list[NodeView]] = {}
    for n in sorted(nodes, key=lambda n: n.name):
        if n.reason is not None:
            key = (n.reason, n.reason_user, n.reason_time, n.state if long else "")
            keyed.setdefault(key, []).append(n)
    groups = [_Group(None, tuple(members), members[0].state) for members in keyed.values()]
    return _render(prefix, specs, groups, header, None, None)


def _render(
    prefix: str,
    specs: Sequence[FormatSpec],
    groups: Sequence[_Group],
    header: bool,
    part_width: int | None,
    node_width: int | None,
) -> str:
    lines = []
    rows: list[_Group | None] = ([None] if header else []) + list(groups)
    for g in rows:
        parts = [prefix]
        for s in specs:
            width = s.width
            if s.letter == "P" and part_width is not None:
                width = part_width
            if s.letter == "N" and node_width is not None:
                width = node_width
            text, cut = _sinfo_cell(s.letter, g, width)
            parts.append(_print_str(text, width, s.right, cut) + s.suffix)
        lines.append("".join(parts))
    return "".join(line + "\n" for line in lines)


_STATE_ALIASES = {
    "idle": {"idle"},
    "mix": {"mix"},
    "mixed": {"mix"},
    "alloc": {"alloc"},
    "allocated": {"alloc"},
    "down": {"down", "down*"},
    "drain": {"drain", "drng"},
    "drained": {"drain"},
    "draining": {"drng"},
    "drng": {"drng"},
    "resv": set(),
    "reserved": set(),
}


def sinfo_state_known(name: str) -> bool:
    return name.lower().rstrip("*") in _STATE_ALIASES


def _state_matches(state: str, wanted: set[str]) -> bool:
    return any(state in _STATE_ALIASES.get(w, set()) or state.rstrip("*") == w for w in wanted)


# ---------------------------------------------------------------------------
# scontrol show
# ---------------------------------------------------------------------------


def _join(lines: Sequence[str], one_liner: bool) -> str:
    # 记录末尾：多行时 "\n\n"（记录之间空一行），-o 单行时 "\n"
    if one_liner:
        return " ".join(lines) + "\n"
    return "\n   ".join(lines) + "\n\n"


def _time(dt: datetime | None, tz: tzinfo) -> str:
    # slurm_make_time_str：0 为 Unknown，否则 %FT%T（本地时区）
    return dt.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S") if dt is not None else "Unknown"


def secs2time_str(seconds: int | None) -> str:
    """src/common/parse_time.c 的 secs2time_str（mins2time_str 同写法）：HH:MM:SS、D-HH:MM:SS；None 为 UNLIMITED。"""
    if seconds is None:
        return "UNLIMITED"
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _mem_mb(mb: int | None) -> str:
    """convert_num_unit(…, UNIT_MEGA, CONVERT_NUM_UNIT_EXACT)：能整除时换成 G/T，否则 M。"""
    if mb is None:
        return "0"
    for suffix, factor in (("T", 1024 * 1024), ("G", 1024)):
        if mb >= factor and mb % factor == 0:
            return f"{mb // factor}{suffix}"
    return f"{mb}M"


@dataclass(frozen=True)
class JobShow:
    """scontrol show job 需要的作业字段（取自 REST 的查询与列表项，见 scontrol 命令）。"""

    job_id: int
    name: str
    user: str
    uid: int
    group: str
    gid: int
    account: str
    priority: int
    state: str
    reason: str
    dependency: str | None
    requeue: bool
    restarts: int
    exit_code: str
    run_seconds: int
    time_limit: int | None
    submit_time: datetime | None
    eligible_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    partition: str
    node_list: str
    required_nodes: str | None
    excluded_nodes: str | None
    batch_host: str | None
    num_nodes: int
    num_cpus: int
    num_tasks: int | None
    cpus_per_task: int | None
    tres: str | None
    min_memory_mb: int | None
    features: str | None
    work_dir: str | None
    stdout: str | None
    stderr: str | None
    array_job_id: int | None = None
    array_task_id: int | None = None


def format_show_job(jobs: Sequence[JobShow], tz: tzinfo, one_liner: bool = False) -> str:
    """scontrol show job 的 Key=Value 版式（src/api/job_info.c 的 slurm_sprint_job_info，22.05）。"""
    out = []
    for j in jobs:
        first = f"JobId={j.job_id} "
        if j.array_job_id is not None and j.array_task_id is not None:
            first += f"ArrayJobId={j.array_job_id} ArrayTaskId={j.array_task_id} "
        first += f"JobName={j.name}"
        pending = j.state == "PENDING"
        lines = [
            first,
            f"UserId={j.user}({j.uid}) GroupId={j.group}({j.gid}) MCS_label=N/A",
            f"Priority={j.priority} Nice=0 Account={j.account} QOS=normal",
            f"JobState={j.state} Reason={j.reason.replace(' ', '_')} Dependency={j.dependency or '(null)'}",
            f"Requeue={int(j.requeue)} Restarts={j.restarts} BatchFlag=1 Reboot=0 ExitCode={j.exit_code}",
            f"RunTime={secs2time_str(0 if pending else j.run_seconds)} "
            f"TimeLimit={secs2time_str(j.time_limit)} TimeMin=N/A",
            f"SubmitTime={_time(j.submit_time, tz)} EligibleTime={_time(j.eligible_time, tz)}",
            f"AccrueTime={_time(j.eligible_time if pending or j.start_time else None, tz)}",
            f"StartTime={_time(j.start_time, tz)} EndTime={_time(j.end_time, tz)} Deadline=N/A",
            "SuspendTime=None SecsPreSuspend=0 LastSchedEval=Unknown Scheduler=Main",
            f"Partition={j.partition} AllocNode:Sid=(null):0",
            f"ReqNodeList={j.required_nodes or '(null)'} ExcNodeList={j.excluded_nodes or '(null)'}",
            f"NodeList={j.node_list or '(null)'}",
        ]
        if j.batch_host:
            lines.append(f"BatchHost={j.batch_host}")
        tasks = "N/A" if j.num_tasks is None else str(j.num_tasks)
        cpt = "N/A" if j.cpus_per_task is None else str(j.cpus_per_task)
        lines += [
            f"NumNodes={j.num_nodes} NumCPUs={j.num_cpus} NumTasks={tasks} CPUs/Task={cpt} "
            "ReqB:S:C:T=0:0:*:*",
            f"TRES={j.tres or '(null)'}",
            "Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*",
            f"MinCPUsNode={j.cpus_per_task or 1} MinMemoryNode={_mem_mb(j.min_memory_mb)} "
            "MinTmpDiskNode=0",
            f"Features={j.features or '(null)'} DelayBoot=00:00:00",
            "OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)",
            "Command=(null)",
            f"WorkDir={j.work_dir or '(null)'}",
        ]
        if j.stderr:
            lines.append(f"StdErr={j.stderr}")
        lines.append("StdIn=/dev/null")
        if j.stdout:
            lines.append(f"StdOut={j.stdout}")
        lines.append("Power=")
        out.append(_join(lines, one_liner))
    return "".join(out)


def format_show_node(nodes: Sequence[NodeView], one_liner: bool = False) -> str:
    """scontrol show node（src/api/node_info.c 的 slurm_sprint_node_table，22.05）：Conductor 有的键。"""
    out = []
    for n in nodes:
        state = _STATE_UPPER.get(n.base_state, n.base_state.upper())
        if state == "DOWN*":
            state = "DOWN+NOT_RESPONDING"
        if n.reason is not None:
            state += "+DRAIN"  # node_state_string_complete：基本状态加标志位
        tres = f"cpu={n.cpus_total}"
        if n.memory_mb is not None:
            tres += f",mem={_mem_mb(n.memory_mb)}"
        if n.gpus_total:
            tres += f",gres/gpu={n.gpus_total}"
        alloc_tres = f"cpu={n.cpus_alloc}" if n.cpus_alloc else ""
        if n.gpus_alloc:
            alloc_tres += f",gres/gpu={n.gpus_alloc}"
        lines = [
            f"NodeName={n.name} CoresPerSocket=1 ",
            f"CPUAlloc={n.cpus_alloc} CPUEfctv={n.cpus_total} CPUTot={n.cpus_total} CPULoad=N/A",
            f"AvailableFeatures={','.join(n.features) or '(null)'}",
            f"ActiveFeatures={','.join(n.features) or '(null)'}",
            f"Gres={n.gres_str}",
            f"NodeAddr={n.name} NodeHostName={n.name} ",
            f"RealMemory={n.memory_mb if n.memory_mb is not None else 1} AllocMem=0 FreeMem=N/A "
            f"Sockets={n.cpus_total} Boards=1",
            f"State={state} ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A",
            f"Partitions={','.join(n.partitions)} ",
            "BootTime=None SlurmdStartTime=None",
            "LastBusyTime=Unknown",
            f"CfgTRES={tres}",
            f"AllocTRES={alloc_tres}",
            "CapWatts=n/a",
            "CurrentWatts=0 AveWatts=0",
            "ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s",
        ]
        if n.reason is not None:
            # Reason=原因 [用户@时刻]（空格不替换，同 Slurm）
            when = n.reason_time
            stamp = _time(when, when.tzinfo) if when and when.tzinfo else "Unknown"
            lines.append(f"Reason={n.reason} [{n.reason_user or 'Unknown'}@{stamp}]")
        out.append(_join(lines, one_liner))
    return "".join(out)


def format_show_partition(
    partitions: Sequence[PartitionView], nodes: Sequence[NodeView], one_liner: bool = False
) -> str:
    """scontrol show partition（src/api/partition_info.c 的 slurm_sprint_partition_info，22.05）。"""
    out = []
    for p in partitions:
        members = [n for n in nodes if p.name in n.partitions]
        names = hostlist.compress(n.name for n in members) if members else "(null)"
        cpus = sum(n.cpus_total for n in members)
        default_time = "NONE" if p.default_time is None else secs2time_str(p.default_time)
        lines = [
            f"PartitionName={p.name}",
            "AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL",
            f"AllocNodes=ALL Default={'YES' if p.is_default else 'NO'} QoS=N/A",
            f"DefaultTime={default_time} DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO",
            f"MaxNodes=UNLIMITED MaxTime={secs2time_str(p.max_time)} MinNodes=0 LLN=NO "
            "MaxCPUsPerNode=UNLIMITED",
            f"Nodes={names}",
            "PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO",
            "OverTimeLimit=NONE PreemptMode=OFF",
            f"State=UP TotalCPUs={cpus} TotalNodes={len(members)} SelectTypeParameters=NONE",
            "JobDefaults=(null)",
            "DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED",
        ]
        out.append(_join(lines, one_liner))
    return "".join(out)
