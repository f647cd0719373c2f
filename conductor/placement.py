"""放置的基本单元（纯数据与纯函数）：节点、作业的资源向量，节点筛选，最佳适配的排序键。

需求与容量都是 Resources 向量（CPU、memory、GPU 与通用资源）：作业只有每一项都放得下时才放得下一个节点，
任何一项都不为 CPU 另写一套。policy.plan 与提交时的准入（admission.check_can_ever_run）共用这里的判定。
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from conductor.features import satisfies
from conductor.resources import CPU, GPU, MEMORY, Resources


@dataclass(frozen=True)
class Placement:
    """调度决定：作业放到哪个（哪些）节点。

    多节点作业（gang）的 node_ids/node_names 列出分配的全部节点，第一个是运行批处理脚本的节点，
    也就是 node_id/node_name；单节点作业缺省为 ()，构造后补成 (node_id,)，调用方一律读元组即可。"""

    job_id: int
    node_id: str
    node_name: str
    node_ids: tuple[str, ...] = ()
    node_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ids = _first_is(tuple(self.node_ids) or (self.node_id,), self.node_id, "node_ids")
        names = _first_is(tuple(self.node_names) or (self.node_name,), self.node_name, "node_names")
        if len(ids) != len(names):
            raise ValueError("node_ids 与 node_names 的个数不同")
        object.__setattr__(self, "node_ids", ids)
        object.__setattr__(self, "node_names", names)


def _first_is(items: tuple[str, ...], first: str, what: str) -> tuple[str, ...]:
    """第一个节点就是 node_id（批处理节点），且不重复：否则快照自相矛盾，尽早报错。"""
    if items[0] != first or len(set(items)) != len(items):
        raise ValueError(f"{what} 须以 {first} 开头且不重复：{items}")
    return items


@dataclass(frozen=True)
class NodeView:
    """一个可用节点：总容量、所属分区与特性。空闲量由运行中的作业推导。

    custom 为节点声明的其余 Ray 资源（通用资源，如 nvme）；features 为小写的特性标签（含 GPU 型号）。
    drain：节点在排空（管理员排空或 Ray 报告排空，conductor/drains.py）：不再接新作业，已有的照常占着资源。"""

    node_id: str
    node_name: str
    total_cpus: float
    total_memory: float
    partitions: frozenset[str] = frozenset({"default"})
    gpus: float = 0
    custom: Mapping[str, float] = field(default_factory=Resources)
    features: frozenset[str] = frozenset()
    drain: bool = False

    def __post_init__(self) -> None:
        # 转成不可变的向量：节点视图可以哈希，调用方传入的 dict 之后被改也不影响
        object.__setattr__(self, "custom", Resources(self.custom))
        object.__setattr__(self, "features", frozenset(f.lower() for f in self.features))

    @cached_property
    def total(self) -> Resources:
        """总容量向量；只算一次（视图不可变，策略每轮对每个作业、每个节点都要读它）。"""
        return Resources(
            {**self.custom, CPU: self.total_cpus, MEMORY: self.total_memory, GPU: self.gpus}
        )


@dataclass(frozen=True)
class RunningJob:
    """仍占用资源的作业。expected_end 为预计结束时刻（秒）；None 表示不限时、无法预计。

    多节点作业占 nodes 个节点（node_ids，第一个即 node_id），每个节点上各占一份向量（cpus、内存、GPU、gres
    都是每节点的量）；node_ids 缺省为 ()，即只有 node_id，构造后补成 (node_id,)。"""

    job_id: int
    node_id: str
    cpus: int
    memory_bytes: int
    expected_end: float | None
    exclusive: bool = False
    account: str = ""
    array_job_id: int | None = None
    gpus: float = 0
    gres: Mapping[str, float] = field(default_factory=Resources)
    gpu_type: str | None = None
    whole_node_memory: bool = False
    constraints: str | None = None
    required_nodes: Sequence[str] = ()
    excluded_nodes: Sequence[str] = ()
    nodes: int = 1
    node_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _freeze(self)
        ids = _first_is(tuple(self.node_ids) or (self.node_id,), self.node_id, "node_ids")
        if len(ids) != self.nodes:
            raise ValueError(
                f"作业 {self.job_id} 占 {self.nodes} 个节点，node_ids 却有 {len(ids)} 个"
            )
        object.__setattr__(self, "node_ids", ids)

    @cached_property
    def used(self) -> Resources:
        """占用的向量（整节点内存的作业在这里内存为 0，按节点计见 demand_on）。"""
        return _vector(self.cpus, self.memory_bytes, self.gpus, self.gres)


@dataclass(frozen=True)
class PendingJob:
    """排队作业的需求。队列中依赖未满足或被挂起的作业不应出现；出现也不会被放置。"""

    job_id: int
    cpus: int
    memory_bytes: int
    partition: str = "default"
    time_limit: int | None = None  # 秒；None 为不限
    exclusive: bool = False
    account: str = ""
    array_job_id: int | None = None
    array_max_running: int | None = None
    runnable: bool = True  # 未被挂起且依赖已满足
    gpus: float = 0  # 节点上的 GPU 数
    gres: Mapping[str, float] = field(default_factory=Resources)  # 其余通用资源：名称 → 数量
    gpu_type: str | None = None  # 小写型号，如 a100；节点特性里须有它
    whole_node_memory: bool = False
    constraints: str | None = None  # -C 表达式
    required_nodes: Sequence[str] = ()  # -w：分配须包含列出的每个节点（故至多 nodes 个）
    excluded_nodes: Sequence[str] = ()  # -x
    nodes: int = 1  # 节点数（-N）；上面的 CPU、内存、GPU、gres 都是每个节点的量

    def __post_init__(self) -> None:
        _freeze(self)
        if self.nodes < 1:
            raise ValueError(f"作业 {self.job_id} 的节点数须至少为 1：{self.nodes}")

    @cached_property
    def request(self) -> Resources:
        """需求向量（整节点内存的作业在这里内存为 0，按节点计见 demand_on）。"""
        return _vector(self.cpus, self.memory_bytes, self.gpus, self.gres)


def _freeze(job: PendingJob | RunningJob) -> None:
    # 转成不可变的值：数据库行给的是 dict 与 list，快照要能哈希、不被调用方事后改动
    object.__setattr__(job, "gres", Resources(job.gres))
    object.__setattr__(job, "required_nodes", tuple(job.required_nodes))
    object.__setattr__(job, "excluded_nodes", tuple(job.excluded_nodes))


def _vector(cpus: float, memory: float, gpus: float, gres: Mapping[str, float]) -> Resources:
    return Resources({**gres, CPU: cpus, MEMORY: memory, GPU: gpus})


def demand_on(job: PendingJob | RunningJob, node: NodeView) -> Resources:
    """作业在这个节点上占用的向量：--mem=0 的作业占用该节点的全部内存，于是别的要内存的作业放不进来。"""
    vector = job.request if isinstance(job, PendingJob) else job.used
    if job.whole_node_memory:
        return Resources({**vector, MEMORY: node.total_memory})
    return vector


def selected(job: PendingJob, node: NodeView) -> bool:
    """-w / -x / -C 是否允许这个节点（与负载、容量无关）。

    -w 要求分配包含列出的每个节点（同 Slurm）：列出的多于 nodes 个就没有节点可选（提交时已拒绝）；
    恰好 nodes 个时只能用它们；少于 nodes 个时其余节点也可选，列出的都在分配里由 policy 保证。"""
    wanted = set(job.required_nodes)
    if len(wanted) > job.nodes or (len(wanted) == job.nodes and node.node_name not in wanted):
        return False
    if node.node_name in job.excluded_nodes:
        return False
    try:
        return satisfies(job.constraints, node.features)
    except ValueError:
        return False  # 库里的坏表达式（提交时本应拒绝）：没有节点满足，不拖垮整轮调度


def can_hold(job: PendingJob, node: NodeView) -> bool:
    """节点的总容量放得下作业（每一项），且有作业要的 GPU 型号：空闲时能运行它。"""
    if job.gpu_type is not None and job.gpu_type.lower() not in node.features:
        return False
    return demand_on(job, node).fits_in(node.total)


def best_fit_key(
    job: PendingJob, node: NodeView, used: Resources
) -> tuple[bool, float, float, str, str]:
    """候选节点的排序键（小者优先）。

    1. 不要 GPU 的作业先挑没有 GPU 的节点：GPU 节点留给 GPU 作业，别让 CPU 作业占满它的 CPU；
    2. 要 GPU 的作业挑空闲 GPU 最少的节点（整块的 GPU 留给要得多的作业）；
    3. 再挑空闲 CPU 最少的（独占作业挑总 CPU 最少的空节点）；最后按节点名、节点号，结果可复现。"""
    total = node.total
    spoils_gpus = job.gpus <= 0 and total.gpu > 0
    free_gpus = total.gpu - used.gpu if job.gpus > 0 else 0.0
    cpus = total.cpu if job.exclusive else total.cpu - used.cpu
    return (spoils_gpus, free_gpus, cpus, node.node_name, node.node_id)
