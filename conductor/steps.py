"""作业步（srun）：参数解析、任务在分配内的布局、任务环境、输出文件名与退出码（纯函数）。

批处理作业里的 `srun CMD` 创建一个作业步：N 个任务分布在作业分配到的节点上。这里只做
计算，不做 I/O：执行器一侧的服务用它们算布局、启动任务；srun 客户端用它们解析参数。
模仿 Slurm 的地方，错误与警告的原文照抄 Slurm（见各常量旁的出处）。
"""

from __future__ import annotations

import dataclasses
import math
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from conductor.arrays import _PATTERN, _substitute, _table, check_filename, short_node_name
from conductor.hostlist import compress, compress_counts

# Slurm 在 getopt 报错之后打印的提示（src/common/slurm_opt.c arg_set__unknown_srun）
TRY_HELP = 'Try "srun --help" for more information'
# 非数组作业的 %a：Slurm 的 NO_VAL
_NO_VAL = "4294967294"


class StepError(Exception):
    """作业步无法创建；消息即 srun 打印在 stderr 上的原文，exit_code 为 srun 的退出码。"""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class AllocNode:
    """作业分配中的一个节点（作业在该节点上分到的份额）。"""

    name: str
    cpus: int
    gpus: int = 0


@dataclass(frozen=True)
class StepRequest:
    """解析后的 srun 参数；None 表示用户没写（布局时按 Slurm 的规则取默认）。"""

    ntasks: int | None = None
    nodes: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    gpus_per_task: int | None = None
    label: bool = False
    output: str | None = None
    error: str | None = None
    # --open-mode：append 或 truncate；None 为没写（srun 取作业的 SLURM_OPEN_MODE，见 with_open_mode）
    open_mode: str | None = None
    unbuffered: bool = False
    kill_on_bad_exit: bool = False
    chdir: str | None = None
    export: str | None = None
    job_name: str | None = None
    command: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRequest:
        """由 asdict 的结果（经 JSON 往返后列表代替了元组）还原；未知字段忽略。"""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("command", "warnings"):
            if key in values:
                values[key] = tuple(str(x) for x in values[key])
        return cls(**values)


# ---------------------------------------------------------------- 参数解析

_Arg = Literal["none", "required", "optional"]

# 我们照做的选项：长名 → 是否带参数
_HONOURED: dict[str, _Arg] = {
    "ntasks": "required",
    "nodes": "required",
    "ntasks-per-node": "required",
    "cpus-per-task": "required",
    "gpus-per-task": "required",
    "label": "none",
    "output": "required",
    "error": "required",
    "open-mode": "required",
    "unbuffered": "none",
    "kill-on-bad-exit": "optional",
    "chdir": "required",
    "export": "required",
    "job-name": "required",
    "help": "none",
    "usage": "none",
}

# srun 有、但在 Ray 上无法照做的选项：接受并警告，不影响运行
_IGNORED: dict[str, _Arg] = {
    "mpi": "required",
    "cpu-bind": "required",
    "cpu_bind": "required",
    "mem-bind": "required",
    "distribution": "required",
    "overlap": "none",
    "exclusive": "optional",
    "exact": "none",
    "mem": "required",
    "mem-per-cpu": "required",
    "mem-per-gpu": "required",
    "gres": "required",
    "gpus": "required",
    "gpus-per-node": "required",
    "gpu-bind": "required",
    "propagate": "optional",
    "quit-on-interrupt": "none",
    "disable-status": "none",
    "wait": "required",
    "time": "required",
    "partition": "required",
    "account": "required",
    "export-file": "required",
    "cpu-freq": "required",
    "hint": "required",
    "threads-per-core": "required",
    "ntasks-per-core": "required",
    "ntasks-per-socket": "required",
    "nodelist": "required",
    "exclude": "required",
    "verbose": "none",
    "quiet": "none",
}

_LONG: dict[str, _Arg] = _HONOURED | _IGNORED

# 短选项 → 长名（同 Slurm 的 srun）
_SHORT = {
    "n": "ntasks",
    "N": "nodes",
    "c": "cpus-per-task",
    "l": "label",
    "o": "output",
    "e": "error",
    "u": "unbuffered",
    "K": "kill-on-bad-exit",
    "D": "chdir",
    "J": "job-name",
    "m": "distribution",
    "q": "quit-on-interrupt",
    "X": "disable-status",
    "W": "wait",
    "t": "time",
    "p": "partition",
    "A": "account",
    "G": "gpus",
    "w": "nodelist",
    "x": "exclude",
    "v": "verbose",
    "Q": "quiet",
    "h": "help",
}


def _getopt_error(text: str) -> StepError:
    # getopt_long 的原文（glibc），随后是 Slurm 的提示行
    return StepError(f"srun: {text}\n{TRY_HELP}")


def _lookup_long(name: str) -> str:
    """长选项名：完全匹配优先，否则接受唯一前缀（同 getopt_long）。"""
    if name in _LONG:
        return name
    matches = [n for n in _LONG if n.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        shown = " ".join(f"'--{m}'" for m in sorted(matches))
        raise _getopt_error(f"option '--{name}' is ambiguous; possibilities: {shown}")
    raise _getopt_error(f"unrecognized option '--{name}'")


def _positive(option: str, value: str) -> int:
    # Slurm parse_int(positive=true) 的原文（src/common/proc_args.c）
    if not value.isascii() or not value.isdigit() or int(value) <= 0:
        raise StepError(f'srun: error: Invalid numeric value "{value}" for {option}.')
    if int(value) >= 2**31 - 1:
        raise StepError(f"srun: error: Numeric argument ({value}) too large for {option}.")
    return int(value)


def _node_count(value: str) -> int:
    """-N 的 N 或 N-M（取最小值），同 Slurm verify_node_count 的报错原文。"""
    low, sep, high = value.partition("-")
    for part in (low, high) if sep else (low,):
        if not part.isascii() or not part.isdigit() or int(part) <= 0:
            raise StepError(f'srun: error: "{part or value}" is not a valid node count')
    if sep and int(high) < int(low):
        raise StepError(
            f"srun: error: Maximum node count {int(high)} is less than minimum node count {int(low)}"
        )
    return int(low)


def _gpu_count(value: str) -> int:
    """--gpus-per-task 的 N 或 类型:N（类型不影响分配，Ray 不区分 GPU 型号）。"""
    count = value.rpartition(":")[2]
    return _positive("--gpus-per-task", count)


def _check_pattern(option: str, value: str) -> str:
    try:
        check_filename(value)
    except ValueError as exc:
        raise StepError(f"srun: error: {option}: {exc}") from exc
    return value


def _output_name(option: str, value: str) -> str | None:
    # Slurm fname_create：“all”（前三个字母）与 “-” 表示照常送回 srun
    if value[:3].lower() == "all" or value.startswith("-"):
        return None
    return _check_pattern(option, value)


def _split_option(argv: list[str], i: int) -> tuple[str, str | None, int]:
    """取第 i 个参数所表示的选项：返回（长名，参数或 None，下一个下标）。

    一个参数里的多个短选项（-lu）逐个展开：把剩余部分改写回 argv[i]。"""
    arg = argv[i]
    if arg.startswith("--"):
        name, eq, value = arg[2:].partition("=")
        long = _lookup_long(name)
        kind = _LONG[long]
        if kind == "none":
            if eq:
                raise _getopt_error(f"option '--{long}' doesn't allow an argument")
            return long, None, i + 1
        if eq:
            return long, value, i + 1
        if kind == "optional":
            return long, None, i + 1
        if i + 1 >= len(argv):
            raise _getopt_error(f"option '--{long}' requires an argument")
        return long, argv[i + 1], i + 2
    letter, rest = arg[1], arg[2:]
    if letter not in _SHORT:
        raise _getopt_error(f"invalid option -- '{letter}'")
    long = _SHORT[letter]
    kind = _LONG[long]
    if kind == "none":
        if rest:
            argv[i] = "-" + rest  # 同一参数里的下一个短选项
            return long, None, i
        return long, None, i + 1
    if rest:
        return long, rest, i + 1
    if kind == "optional":
        return long, None, i + 1
    if i + 1 >= len(argv):
        raise _getopt_error(f"option requires an argument -- '{letter}'")
    return long, argv[i + 1], i + 2


class HelpRequested(Exception):
    """用户写了 --help / --usage：调用者打印用法后以 0 退出。"""


def parse_srun_args(argv: list[str]) -> StepRequest:
    """按 srun 的语法解析参数（不含程序名）。选项止于第一个非选项（即命令）或 “--”。

    无法照做的选项进入 warnings；不认识的选项、坏数字、没有命令时抛 StepError（Slurm 原文）；
    --help 抛 HelpRequested。"""
    args = list(argv)
    values: dict[str, Any] = {}
    warnings: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        long, value, i = _split_option(args, i)
        if long in ("help", "usage"):
            raise HelpRequested
        if long in _IGNORED:
            shown = f"--{long}" if value is None else f"--{long}={value}"
            warnings.append(f"srun: 警告：{shown} 不支持，已忽略")
            continue
        values[long] = value
    command = tuple(args[i:])
    if not command:
        raise StepError("srun: fatal: No command given to execute.")
    return _build_request(values, command, tuple(warnings))


def _open_mode(raw: str) -> str:
    """--open-mode：同 Slurm 只看首字母（a 追加、t 截断，不分大小写）。"""
    head = raw[:1].lower()
    if head == "a":
        return "append"
    if head == "t":
        return "truncate"
    raise StepError(f"srun: error: Invalid --open-mode argument: {raw}")


def with_open_mode(req: StepRequest, environ: Mapping[str, str]) -> StepRequest:
    """没写 --open-mode 时取作业环境的 SLURM_OPEN_MODE（a/t，sbatch --open-mode 设的），同 Slurm 的 srun：
    批处理脚本以 --open-mode=append 运行时，srun 的 --output 也追加，不截断脚本已写的内容。"""
    if req.open_mode is not None:
        return req
    mode = environ.get("SLURM_OPEN_MODE", "")[:1].lower()
    if mode == "a":
        return dataclasses.replace(req, open_mode="append")
    if mode == "t":
        return dataclasses.replace(req, open_mode="truncate")
    return req


def _build_request(
    values: dict[str, Any], command: tuple[str, ...], warnings: tuple[str, ...]
) -> StepRequest:
    def get(name: str) -> Any:
        return values.get(name)

    kill = False
    if "kill-on-bad-exit" in values:
        raw = values["kill-on-bad-exit"]
        if raw is None:
            kill = True
        elif raw.isascii() and raw.isdigit():
            kill = int(raw) != 0
        else:
            raise StepError(f'srun: error: Invalid numeric value "{raw}" for --kill-on-bad-exit.')
    return StepRequest(
        ntasks=_positive("--ntasks", get("ntasks")) if "ntasks" in values else None,
        nodes=_node_count(get("nodes")) if "nodes" in values else None,
        ntasks_per_node=(
            _positive("--ntasks-per-node", get("ntasks-per-node"))
            if "ntasks-per-node" in values
            else None
        ),
        cpus_per_task=(
            _positive("--cpus-per-task", get("cpus-per-task"))
            if "cpus-per-task" in values
            else None
        ),
        gpus_per_task=_gpu_count(get("gpus-per-task")) if "gpus-per-task" in values else None,
        label="label" in values,
        output=_output_name("--output", get("output")) if "output" in values else None,
        error=_output_name("--error", get("error")) if "error" in values else None,
        open_mode=_open_mode(get("open-mode")) if "open-mode" in values else None,
        unbuffered="unbuffered" in values,
        kill_on_bad_exit=kill,
        chdir=get("chdir"),
        export=get("export"),
        job_name=get("job-name"),
        command=command,
        warnings=warnings,
    )


def export_env(export: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """--export 的语义：None/ALL 为全部环境；NONE 只留 SLURM_*、CONDUCTOR_* 变量；
    列表（VAR1,VAR2=x，可含 ALL）为这些变量加上 SLURM_*、CONDUCTOR_* 变量（含 ALL 时为全部环境）。"""
    scheduler = {k: v for k, v in environ.items() if k.startswith(("SLURM_", "CONDUCTOR_"))}
    if export is None or export.strip().upper() == "ALL":
        return dict(environ)
    if export.strip().upper() == "NONE":
        return scheduler
    env = dict(scheduler)
    items = [item.strip() for item in export.split(",") if item.strip()]
    if any(item.upper() == "ALL" for item in items):
        env = dict(environ)
    for item in items:
        if item.upper() in ("ALL", "NONE"):
            continue
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env


# ---------------------------------------------------------------- 布局


@dataclass(frozen=True)
class TaskSlot:
    """一个任务：全局序号 rank，所在节点（分配中的下标），节点内序号。"""

    rank: int
    node_index: int
    local_id: int


@dataclass(frozen=True)
class StepLayout:
    """作业步的任务布局。node_indices 为所用节点在分配中的下标（升序）；
    warnings 为 Slurm 在调整参数时打印的警告（原文），由服务转给 srun。"""

    node_indices: tuple[int, ...]
    tasks: tuple[TaskSlot, ...]
    cpus_per_task: int
    gpus_per_task: int
    warnings: tuple[str, ...] = field(default=())

    @property
    def ntasks(self) -> int:
        return len(self.tasks)

    def tasks_on(self, node_index: int) -> list[TaskSlot]:
        return [t for t in self.tasks if t.node_index == node_index]

    def cpus_on(self, node_index: int) -> int:
        return len(self.tasks_on(node_index)) * self.cpus_per_task

    def gpus_on(self, node_index: int) -> int:
        return len(self.tasks_on(node_index)) * self.gpus_per_task

    def step_node_id(self, node_index: int) -> int:
        """节点在本作业步中的序号（SLURM_NODEID、文件名的 %n）。"""
        return self.node_indices.index(node_index)

    def tasks_per_node_str(self) -> str:
        """SLURM_STEP_TASKS_PER_NODE 的写法：2(x3),1。"""
        return compress_counts(len(self.tasks_on(i)) for i in self.node_indices)


def _create_error(job_id: int, reason: str) -> StepError:
    # src/srun/launch.c：error("Unable to create step for job %u: %m")
    return StepError(f"srun: error: Unable to create step for job {job_id}: {reason}")


# slurm_errno.c 中的原文
TOO_MANY_CPUS = "More processors requested than permitted"
INVALID_GRES = "Invalid generic resource (gres) specification"


def _pick(capacity: list[int], nodes: int) -> list[int] | None:
    """挑 nodes 个能放下至少一个任务的节点：容量大的优先（同容量取靠前的），返回升序下标。"""
    usable = [i for i, c in enumerate(capacity) if c >= 1]
    if len(usable) < nodes:
        return None
    chosen = sorted(usable, key=lambda i: (-capacity[i], i))[:nodes]
    return sorted(chosen)


def _block(counts_cap: list[int], ntasks: int) -> list[int]:
    """Slurm 默认的 block 分布（slurm_step_layout.c _task_layout_block，不 pack 时）：
    按轮次给每个还有空位的节点各一个任务来决定每个节点的任务数，再按节点顺序连续编号。"""
    counts = [0] * len(counts_cap)
    placed, round_ = 0, 0
    while placed < ntasks:
        for i, cap in enumerate(counts_cap):
            if placed < ntasks and round_ < cap:
                counts[i] += 1
                placed += 1
        round_ += 1
    return counts


def layout(
    req: StepRequest,
    alloc: Sequence[AllocNode],
    job_id: int,
    job_ntasks: int,
    job_cpus_per_task: int,
) -> StepLayout:
    """按 Slurm 在分配内创建作业步的规则算出布局；只与整个分配比较（此刻没空闲的由服务排队等待）。

    默认：-n、-N、--ntasks-per-node 都没写时任务数取作业的；只写 -N（或 --ntasks-per-node）时
    每节点一个（或 --ntasks-per-node 个）；没写 -N 时节点数为放下任务所需的数目（每节点一个任务，
    有 --ntasks-per-node 时每节点那么多），不超过分配的节点数。每节点最多放
    cpus // cpus_per_task 个任务（有 --gpus-per-task 时还受 GPU 数限制）。"""
    warnings: list[str] = []
    cpt = req.cpus_per_task or max(1, job_cpus_per_task)
    gpt = req.gpus_per_task or 0
    if req.nodes is not None and req.nodes > len(alloc):
        # src/srun/srun_job.c
        raise StepError(f"srun: error: Only allocated {len(alloc)} nodes asked for {req.nodes}")
    tpn = req.ntasks_per_node
    nodes = req.nodes
    ntasks = req.ntasks
    if ntasks is None:
        if nodes is None and tpn is None:
            ntasks = max(1, job_ntasks)
        else:
            ntasks = (nodes or len(alloc)) * (tpn or 1)
    if nodes is not None and ntasks < nodes:
        # src/srun/opt.c 的原文
        warnings.append(
            f"srun: warning: can't run {ntasks} processes on {nodes} nodes, setting nnodes to {ntasks}"
        )
        nodes = ntasks
    if nodes is None:
        needed = math.ceil(ntasks / tpn) if tpn else ntasks
        nodes = min(needed, len(alloc))
    if tpn is not None and ntasks > nodes * tpn:
        warnings.append(
            f"srun: warning: can't honor --ntasks-per-node set to {tpn} which doesn't match the "
            f"requested tasks {ntasks} with the maximum number of requested nodes {nodes}. "
            "Ignoring --ntasks-per-node."
        )
        tpn = None

    def cap(node: AllocNode, with_gpus: bool) -> int:
        c = node.cpus // cpt
        if with_gpus and gpt:
            c = min(c, node.gpus // gpt)
        return min(c, tpn) if tpn is not None else c

    cpu_cap = [cap(n, False) for n in alloc]
    cpu_pick = _pick(cpu_cap, nodes)
    if cpu_pick is None or sum(cpu_cap[i] for i in cpu_pick) < ntasks:
        raise _create_error(job_id, TOO_MANY_CPUS)
    full_cap = [cap(n, True) for n in alloc]
    chosen = _pick(full_cap, nodes)
    if chosen is None or sum(full_cap[i] for i in chosen) < ntasks:
        raise _create_error(job_id, INVALID_GRES)
    counts = _block([full_cap[i] for i in chosen], ntasks)
    tasks: list[TaskSlot] = []
    for node_index, count in zip(chosen, counts, strict=True):
        for local in range(count):
            tasks.append(TaskSlot(rank=len(tasks), node_index=node_index, local_id=local))
    return StepLayout(
        node_indices=tuple(chosen),
        tasks=tuple(tasks),
        cpus_per_task=cpt,
        gpus_per_task=gpt,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------- 任务环境


def split_gpus(gpu_ids: Sequence[Any], tasks: int, per_task: int) -> list[list[Any]]:
    """把节点上的 GPU 编号按顺序分给本节点的各任务（本地序号 0 拿最前面的 per_task 个）。"""
    if per_task <= 0:
        return [[] for _ in range(tasks)]
    if len(gpu_ids) < tasks * per_task:
        raise ValueError(f"节点上只有 {len(gpu_ids)} 个 GPU，不够 {tasks} 个任务每个 {per_task} 个")
    ids = list(gpu_ids)
    return [ids[k * per_task : (k + 1) * per_task] for k in range(tasks)]


def task_env(
    base: Mapping[str, str],
    *,
    job_id: int,
    step_id: int,
    layout: StepLayout,
    slot: TaskSlot,
    node_names: Sequence[str],
    gpu_ids: Sequence[str | int],
) -> dict[str, str]:
    """一个任务的环境：base 加上 Slurm 的作业步变量及其 CONDUCTOR_ 孪生变量（同 jobspec.build_env）。

    node_names 为分配中各节点的名字（按分配下标）；gpu_ids 为分给该任务的 GPU 编号，
    给出时设置 CUDA_VISIBLE_DEVICES、GPU_DEVICE_ORDINAL、SLURM_STEP_GPUS，否则保留 base 的值。
    SLURM_NNODES 等作业级变量保留 base（作业）的值。"""
    step_nodes = [node_names[i] for i in layout.node_indices]
    ntasks = str(layout.ntasks)
    scheduler = {
        "SLURM_PROCID": str(slot.rank),
        "SLURM_LOCALID": str(slot.local_id),
        "SLURM_NODEID": str(layout.step_node_id(slot.node_index)),
        "SLURM_STEP_ID": str(step_id),
        "SLURM_STEPID": str(step_id),
        "SLURM_STEP_NUM_TASKS": ntasks,
        "SLURM_STEP_NUM_NODES": str(len(layout.node_indices)),
        "SLURM_STEP_NODELIST": compress(step_nodes),
        "SLURM_STEP_TASKS_PER_NODE": layout.tasks_per_node_str(),
        "SLURM_NTASKS": ntasks,
        "SLURM_NPROCS": ntasks,
        "SLURM_CPUS_PER_TASK": str(layout.cpus_per_task),
        "SLURM_JOB_ID": base.get("SLURM_JOB_ID", str(job_id)),
        "SLURMD_NODENAME": node_names[slot.node_index],
    }
    if gpu_ids:
        ids = ",".join(str(g) for g in gpu_ids)
        scheduler |= {
            "CUDA_VISIBLE_DEVICES": ids,
            "GPU_DEVICE_ORDINAL": ids,
            "SLURM_STEP_GPUS": ids,
        }
    env = dict(base)
    env.update(scheduler)
    env.update(
        {
            "CONDUCTOR_" + k.removeprefix("SLURM_"): v
            for k, v in scheduler.items()
            if k.startswith("SLURM_")
        }
    )
    return env


# ---------------------------------------------------------------- 输出文件名

FileScope = Literal["task", "node", "step"]


def file_scope(pattern: str) -> FileScope:
    """-o/-e 的文件是每任务一个（含 %t）、每节点一个（含 %n 或 %N）还是全步共用一个。

    共用时所有任务写同一个文件：服务在每个节点上只打开（截断）一次。"""
    kinds = {m[2] for m in _PATTERN.finditer(pattern)}
    if "t" in kinds:
        return "task"
    if kinds & {"n", "N"}:
        return "node"
    return "step"


def expand_step_pattern(
    pattern: str,
    *,
    job_id: int,
    step_id: int,
    rank: int | None,
    node_name: str,
    node_index: int,
    array_job_id: int | None,
    array_task_id: int | None,
    job_name: str | None = None,
    user: str | None = None,
) -> str:
    """展开 srun -o/-e 的文件名模式：%j 作业号、%J 作业号.步号、%s 步号、%t 任务序号、
    %n 节点在步中的序号、%N 短节点名、%A 数组主作业号、%a 数组下标、%x 作业名、%u 用户、%% 百分号；
    数字可带补零宽度（%3t → 000，最大宽度同 sbatch，超出 ValueError）。rank 为 None 时 %t 原样保留，
    没给 job_name/user 时 %x/%u 原样保留。“none” 同 Slurm 即 /dev/null。"""
    if pattern.lower() == "none":
        return "/dev/null"
    if "%" not in pattern:
        return pattern
    check_filename(pattern)
    table = _table(job_id, job_name or "", user or "", array_job_id, array_task_id)
    table["a"] = str(array_task_id) if array_task_id is not None else _NO_VAL
    table |= {
        "J": f"{job_id}.{step_id}",
        "s": str(step_id),
        "n": str(node_index),
        "N": short_node_name(node_name),
    }
    if rank is None:
        table.pop("t")
    else:
        table["t"] = str(rank)
    if job_name is None:
        table.pop("x")
    if user is None:
        table.pop("u")
    return _substitute(pattern, table)


# ---------------------------------------------------------------- 退出码


def exit_status(codes: Sequence[int | None], signals: Sequence[int | None]) -> int:
    """srun 的退出码，同 Slurm（src/srun/launch.c 与 srun_job.c）：

    有任务被信号杀死时为 128 + 其中最大的信号号（信号优先于任何退出码，哪怕退出码更大）；
    否则为各任务退出码中的最大值。退出码与信号都为 None 的任务（未能得知结局）不计。"""
    sigs = [s for s in signals if s]
    if sigs:
        return 128 + max(sigs)
    return max((c for c in codes if c is not None), default=0)


def _ranks_str(ranks: Sequence[int]) -> str:
    """0,1,2,5 → 0-2,5（Slurm bit_fmt 的写法）。"""
    parts: list[str] = []
    ordered = sorted(ranks)
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def task_exit_messages(
    codes: Sequence[int | None],
    signals: Sequence[int | None],
    hosts: Sequence[str],
    cancelled: bool = False,
) -> list[str]:
    """srun 对异常结束的任务打印的行，同 Slurm（src/srun/launch.c）：
    “srun: error: node1: task 0: Exited with exit code 2”、“srun: error: node1: tasks 0-1: Killed”。
    同一节点、同一结局的任务合成一行；取消后被信号杀死的不报（Slurm 只在 -v 时报）。"""
    groups: dict[tuple[str, str], list[int]] = {}
    for rank, (code, sig) in enumerate(zip(codes, signals, strict=True)):
        host = hosts[rank] if rank < len(hosts) else "?"
        if sig:
            if cancelled:
                continue
            what = signal.strsignal(sig) or f"Signal {sig}"
        elif code:
            what = f"Exited with exit code {code}"
        else:
            continue
        groups.setdefault((host, what), []).append(rank)
    lines = []
    for (host, what), ranks in groups.items():
        word = "task" if len(ranks) == 1 else "tasks"
        lines.append(f"srun: error: {host}: {word} {_ranks_str(ranks)}: {what}")
    return lines


def label_width(ntasks: int) -> int:
    """srun -l 的序号宽度：最大序号（ntasks-1）的位数，右对齐补空格（Slurm step_io.c _wid）。"""
    return len(str(max(ntasks - 1, 0)))
