"""把提交请求里的资源字段（Slurm REST 的写法）规范化成 jobs 表的列（纯函数）。

作业在 nodes 个节点上运行（-N，默认 1），CPU、内存、GPU 与通用资源都是每个节点的量（同 Slurm）：
任务按 block 分布摊到各节点，前面的节点多一个，所以每节点 CPU = ⌈任务数 / 节点数⌉ × 每任务 CPU
（给了 cpus_per_tres 时取它与每节点 GPU 数 × 每 GPU CPU 中较大的）；内存 = memory_per_node，
或 memory_per_cpu × 每节点 CPU，或 memory_per_tres × 每节点 GPU；整个作业的 GPU（tres_per_job）
须能平均分到各节点。互相冲突的字段（Slurm 同样拒绝）都以 422 拒绝，指明字段：绝不让作业带着
比所求更少的资源运行。
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conductor.errors import InvalidJobRequest
from conductor.features import parse_constraint
from conductor.memory import parse_memory
from conductor.tres import Tres, parse_nodes, parse_per_gpu, parse_tres

# 节点数的上限：防止荒谬的请求（与任务数的上限相同）
MAX_NODES = 100_000


@dataclass(frozen=True)
class ResourceFields:
    """请求里与资源有关的字段（值为用户所写）；given 为用户明确给出的字段名。"""

    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    tasks: int | None = None
    nodes: str | int | None = None
    memory_per_node: str | int = "1G"
    memory_per_cpu: str | int | None = None
    tres_per_node: str | None = None
    tres_per_job: str | None = None
    tres_per_task: str | None = None
    cpus_per_tres: str | None = None
    memory_per_tres: str | None = None
    constraints: str | None = None
    required_nodes: str | list[str] | None = None
    excluded_nodes: str | list[str] | None = None
    given: frozenset[str] = frozenset()


@dataclass(frozen=True)
class JobRequest:
    """规范化后的请求：直接对应 jobs 表的列（见 conductor/models.py）。"""

    ntasks: int
    ntasks_per_node: int
    cpus_per_task: int
    cpus: int
    memory_bytes: int
    whole_node_memory: bool = False
    gpus: int = 0
    gpu_type: str | None = None
    gres: dict[str, float] = field(default_factory=dict)
    constraints: str | None = None
    required_nodes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    # 只用于作业环境变量（SLURM_GPUS、SLURM_MEM_PER_CPU…）与展示，调度只看上面的列
    slurm_request: dict[str, Any] = field(default_factory=dict)
    # 节点数（-N）；上面的 cpus、memory_bytes、gpus、gres 都是每个节点的量
    nodes: int = 1


def _field(name: str) -> str:
    return f"job.{name}"


def _fail(name: str, message: str) -> InvalidJobRequest:
    return InvalidJobRequest(_field(name), f"{_field(name)}：{message}")


def _conflict(a: str, b: str, why: str) -> InvalidJobRequest:
    return InvalidJobRequest(_field(a), f"{_field(a)} 与 {_field(b)} 不能同时指定：{why}")


def _parsed(name: str, value: str | None) -> list[Tres]:
    if value is None:
        return []
    try:
        return parse_tres(value, _field(name))
    except ValueError as exc:
        raise InvalidJobRequest(_field(name), str(exc)) from exc


@dataclass(frozen=True)
class NodeCount:
    """请求的节点数：low 为分配用的节点数（sbatch 对 N-M 也按 N 分配），high 为上限（未给为 None）。"""

    low: int = 1
    high: int | None = None
    given: bool = False


def _node_count(nodes: str | int | None) -> NodeCount:
    """nodes：N 或 Slurm 的范围 N-M（按最小值 N 分配）；最大值小于最小值时拒绝。"""
    if nodes is None:
        return NodeCount()
    text = str(nodes).strip()
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise _fail("nodes", f"格式无效：{nodes!r}，应为节点数 N 或范围 N-M，如 2 或 2-4")
    if int(low) < 1:
        raise _fail("nodes", f"节点数至少为 1：{nodes!r}")
    if sep and int(high) < int(low):
        raise _fail("nodes", f"节点数范围 {text} 无效：最大值 {high} 小于最小值 {low}")
    if int(low) > MAX_NODES:
        raise _fail("nodes", f"节点数 {low} 超过上限 {MAX_NODES}")
    return NodeCount(int(low), int(high) if sep else int(low), given=True)


def _shape(f: ResourceFields, count: NodeCount, required: list[str]) -> tuple[int, int]:
    """(节点数, 任务总数)，同 sbatch：

    - 没给 tasks：每节点 ntasks_per_node 个任务，共 节点数 × ntasks_per_node 个；
    - 给了 tasks 与 ntasks_per_node 而没给 nodes：节点数 = ⌈tasks / ntasks_per_node⌉；
    - -w 列出的节点多于请求的节点数：节点数提高到列出的个数（作业要用到列出的每个节点）；
    - 任务数少于节点数、或多于 节点数 × ntasks_per_node 时拒绝（每个节点至少一个任务）。"""
    per_node_given = "ntasks_per_node" in f.given
    nodes = count.low
    if f.tasks is not None and per_node_given and not count.given:
        nodes = -(-f.tasks // f.ntasks_per_node)
    if len(required) > nodes:
        if count.high is not None and len(required) > count.high:
            raise _fail(
                "required_nodes",
                f"列出了 {len(required)} 个节点，多于 {_field('nodes')} 允许的最多 {count.high} 个"
                "（作业要用到列出的每一个节点）",
            )
        nodes = len(required)
    if f.tasks is None:
        return nodes, nodes * f.ntasks_per_node
    if f.tasks < nodes:
        raise InvalidJobRequest(
            _field("tasks"),
            f"{_field('tasks')}={f.tasks} 少于节点数 {_field('nodes')}={nodes}：每个节点至少要有一个任务"
            f"（Slurm：can't run {f.tasks} processes on {nodes} nodes）",
        )
    if per_node_given and f.tasks > nodes * f.ntasks_per_node:
        raise InvalidJobRequest(
            _field("tasks"),
            f"{_field('tasks')}={f.tasks} 大于 节点数 {nodes} × "
            f"{_field('ntasks_per_node')}={f.ntasks_per_node}：请增加 {_field('nodes')} 或 "
            f"{_field('ntasks_per_node')}",
        )
    return nodes, f.tasks


def _per_node(t: Tres, name: str, factor: int, nodes: int) -> int:
    """一项 TRES 在每个节点上的量：tres_per_job 是整个作业的，须能平均分到各节点。"""
    if name != "tres_per_job" or nodes == 1:
        return t.count * factor
    if t.count % nodes:
        raise _fail(
            name,
            f"整个作业的 {t.name}:{t.count} 不能平均分到 {nodes} 个节点（每个节点的量须相同），"
            f"请申请 {nodes} 的倍数，或改用 tres_per_node（每节点的量）",
        )
    return t.count // nodes


def _gpus_and_gres(
    f: ResourceFields, tasks_per_node: int, nodes: int
) -> tuple[int, str | None, dict[str, float], dict[str, str]]:
    """三种 TRES 字段合成每个节点上的 GPU 数、GPU 类型与其他通用资源。

    tres_per_task 乘以每节点的任务数（block 分布下最多的那个节点的）。"""
    per_name: dict[str, str] = {}  # 资源名 → 出现在哪个字段（冲突时点名）
    gpus, gpu_type, gres = 0, None, {}
    spelled: dict[str, str] = {}
    factors = (("tres_per_node", 1), ("tres_per_job", 1), ("tres_per_task", tasks_per_node))
    for name, factor in factors:
        for t in _parsed(name, getattr(f, name)):
            if t.name in per_name:
                raise _conflict(per_name[t.name], name, f"两处都申请了 {t.name}")
            per_name[t.name] = name
            amount = _per_node(t, name, factor, nodes)
            if t.is_gpu:
                gpus, gpu_type = amount, t.type if t.count else None
                spelled[name] = f"{t.type}:{t.count}" if t.type else str(t.count)
            elif t.count:
                gres[t.name] = float(amount)
    return gpus, gpu_type, gres, spelled


def _per_gpu(f: ResourceFields, name: str, gpus: int, memory: bool) -> int | None:
    value = getattr(f, name)
    if value is None:
        return None
    try:
        amount = parse_per_gpu(value, _field(name), memory)
    except ValueError as exc:
        raise InvalidJobRequest(_field(name), str(exc)) from exc
    if gpus == 0:
        raise _fail(
            name, "按 GPU 计的请求需要同时申请 GPU（tres_per_node、tres_per_job 或 tres_per_task）"
        )
    return amount


def _memory(
    f: ResourceFields, cpus: int, gpus: int, mem_per_gpu: int | None
) -> tuple[int, bool, int | None]:
    """(内存字节, 是否整个节点, 每 CPU 内存)。三种写法只能给一种，同 Slurm。"""
    node_given = "memory_per_node" in f.given
    if f.memory_per_cpu is not None and node_given:
        raise _conflict("memory_per_node", "memory_per_cpu", "Slurm 的 --mem 与 --mem-per-cpu 互斥")
    if mem_per_gpu is not None and node_given:
        raise _conflict(
            "memory_per_node", "memory_per_tres", "Slurm 的 --mem 与 --mem-per-gpu 互斥"
        )
    if mem_per_gpu is not None and f.memory_per_cpu is not None:
        raise _conflict(
            "memory_per_cpu", "memory_per_tres", "Slurm 的 --mem-per-cpu 与 --mem-per-gpu 互斥"
        )
    if f.memory_per_cpu is not None:
        try:
            per_cpu = parse_memory(f.memory_per_cpu, _field("memory_per_cpu"))
        except ValueError as exc:
            raise InvalidJobRequest(_field("memory_per_cpu"), str(exc)) from exc
        return per_cpu * cpus, False, per_cpu
    if mem_per_gpu is not None:
        return mem_per_gpu * gpus, False, None
    try:
        nbytes = parse_memory(f.memory_per_node, _field("memory_per_node"), allow_zero=True)
    except ValueError as exc:
        raise InvalidJobRequest(_field("memory_per_node"), str(exc)) from exc
    return nbytes, nbytes == 0, None


def _node_lists(f: ResourceFields) -> tuple[list[str], list[str]]:
    lists = []
    for name in ("required_nodes", "excluded_nodes"):
        value = getattr(f, name)
        try:
            lists.append([] if value is None else parse_nodes(value, _field(name)))
        except ValueError as exc:
            raise InvalidJobRequest(_field(name), str(exc)) from exc
    required, excluded = lists
    both = sorted(set(required) & set(excluded))
    if both:
        raise _conflict(
            "required_nodes", "excluded_nodes", f"节点 {','.join(both)} 既被要求又被排除"
        )
    return required, excluded


def normalize(f: ResourceFields) -> JobRequest:
    """由请求字段算出 jobs 表的资源列；无效或冲突时 InvalidJobRequest（422，指明字段）。"""
    count = _node_count(f.nodes)
    required, excluded = _node_lists(f)
    nodes, ntasks = _shape(f, count, required)
    # block 分布：前 ntasks % nodes 个节点各多一个任务，每节点的量按最多的那个节点算
    tasks_per_node = -(-ntasks // nodes)
    gpus, gpu_type, gres, gpu_forms = _gpus_and_gres(f, tasks_per_node, nodes)
    cpus_per_gpu = _per_gpu(f, "cpus_per_tres", gpus, memory=False)
    mem_per_gpu = _per_gpu(f, "memory_per_tres", gpus, memory=True)
    cpus = tasks_per_node * f.cpus_per_task
    if cpus_per_gpu is not None:
        if "cpus_per_task" in f.given:
            raise _conflict(
                "cpus_per_task", "cpus_per_tres", "Slurm 的 --cpus-per-task 与 --cpus-per-gpu 互斥"
            )
        cpus = max(tasks_per_node, gpus * cpus_per_gpu)  # 每个任务至少一个 CPU
    memory_bytes, whole, mem_per_cpu = _memory(f, cpus, gpus, mem_per_gpu)
    constraints = None
    if f.constraints is not None:
        try:
            # 语法由策略用的同一个解析器检查（features.py）；存去掉空白的写法
            constraints = parse_constraint("".join(f.constraints.split())).text
        except ValueError as exc:
            raise InvalidJobRequest(_field("constraints"), str(exc)) from exc
    extra: dict[str, Any] = {
        key: value
        for key, value in (
            ("gpus_per_job", gpu_forms.get("tres_per_job")),
            ("gpus_per_node", gpu_forms.get("tres_per_node")),
            ("gpus_per_task", gpu_forms.get("tres_per_task")),
            ("cpus_per_gpu", cpus_per_gpu),
            ("mem_per_gpu", mem_per_gpu),
            ("mem_per_cpu", mem_per_cpu),
        )
        if value is not None
    }
    return JobRequest(
        ntasks=ntasks,
        ntasks_per_node=tasks_per_node,
        cpus_per_task=f.cpus_per_task,
        cpus=cpus,
        memory_bytes=memory_bytes,
        whole_node_memory=whole,
        gpus=gpus,
        gpu_type=gpu_type,
        gres=gres,
        constraints=constraints,
        required_nodes=required,
        excluded_nodes=excluded,
        slurm_request=extra,
        nodes=nodes,
    )
