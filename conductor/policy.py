"""调度策略：纯函数。输入是快照（排好序的待运行作业、运行中的作业及其预计结束、节点、当前时刻），
输出是放置决定与每个未放置作业的等待原因。不碰数据库也不碰 Ray。

规则（docs/scheduling.md 有例子）：
- 队列已按有效优先级排好序（priority.py）；依次尝试，能放下就放（最佳适配：空闲 CPU 最少的节点）。
- 账户上限、数组 %N、分区时限挡住的作业跳过，不影响后面的作业。
- EASY 回填：每个分区第一个放不下的作业（队首）按运行中作业的时限算出最早开始时间并预留；
  之后的作业只有不推迟该预留时才能先启动（在预留时刻前结束，或只用预留之外的余量）。
  算不出开始时间（有不限时的作业挡着）时，该分区的节点对后面的作业关闭：宁可不回填，也不饿死大作业。
- exclusive 作业独占整个节点：只放到空节点，运行时该节点不再接其他作业。
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conductor.account_limits import NO_LIMIT, AccountLimit, blocking_reason, limit_for
from conductor.reasons import DEPENDENCY, Usage, blocked


@dataclass(frozen=True)
class Placement:
    """调度决定：作业放到哪个节点。"""

    job_id: int
    node_id: str
    node_name: str


@dataclass(frozen=True)
class NodeView:
    """一个可用节点：总容量与所属分区。空闲量由运行中的作业推导。"""

    node_id: str
    node_name: str
    total_cpus: float
    total_memory: float
    partitions: frozenset[str] = frozenset({"default"})


@dataclass(frozen=True)
class RunningJob:
    """仍占用资源的作业。expected_end 为预计结束时刻（秒）；None 表示不限时、无法预计。"""

    job_id: int
    node_id: str
    cpus: int
    memory_bytes: int
    expected_end: float | None
    exclusive: bool = False
    account: str = ""
    array_job_id: int | None = None


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


@dataclass(frozen=True)
class Reservation:
    """为某分区队首预留的节点与开始时刻。"""

    job_id: int
    node_id: str
    start: float


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    reservations: list[Reservation] = field(default_factory=list)


@dataclass
class _Node:
    """规划过程中一个节点的可变账本。"""

    view: NodeView
    free_cpus: float
    free_memory: float
    jobs: int = 0
    exclusive_busy: bool = False
    # 预计释放：(时刻或 None, CPU, 内存, 是否独占)
    releases: list[tuple[float | None, int, int, bool]] = field(default_factory=list)
    # 预留：(开始时刻, 预留之外的余量 CPU, 余量内存)；回填作业若越过开始时刻只能用余量
    reserved: list[list[float]] = field(default_factory=list)
    frozen: bool = False  # 有分区队首的开始时间算不出：不再回填


def fits(job: PendingJob, cpus: float, memory: float) -> bool:
    return job.cpus <= cpus and job.memory_bytes <= memory


def can_ever_run(cpus: int, memory_bytes: int, nodes: Iterable[NodeView]) -> bool:
    """是否存在某个节点，其总容量能容纳该请求（作业不跨节点）。"""
    return any(cpus <= n.total_cpus and memory_bytes <= n.total_memory for n in nodes)


def free_cpus(
    nodes: Sequence[NodeView], running: Sequence[RunningJob], partitions: Iterable[str]
) -> tuple[int, dict[str, int]]:
    """空闲 CPU：全集群合计，及每个分区的（属于多个分区的节点计入每一个；没有节点的分区为 0）。

    调度器据此决定每个分区读多深的队首：一个分区最多放得下“该分区空闲 CPU”个作业。
    """
    used: dict[str, float] = defaultdict(float)
    for r in running:
        used[r.node_id] += r.cpus
    idle = {n.node_id: max(0.0, n.total_cpus - used[n.node_id]) for n in nodes}
    by_partition = dict.fromkeys(partitions, 0.0)
    for n in nodes:
        for name in n.partitions:
            by_partition[name] = by_partition.get(name, 0.0) + idle[n.node_id]
    return int(sum(idle.values())), {name: int(cpus) for name, cpus in by_partition.items()}


def saturated(
    running: Sequence[RunningJob],
    limits: Mapping[str, AccountLimit],
    array_limits: Mapping[int, int],
) -> tuple[list[str], list[int]]:
    """此刻已到上限、本轮不可能再启动任何作业的账户与数组（读队首时整体跳过）。"""
    usage = Usage()
    for r in running:
        usage.add(r.account, r.cpus, r.array_job_id)
    accounts = [
        a
        for a in usage.jobs
        if blocking_reason(limit_for(limits, a), usage.jobs[a], usage.cpus[a], 1) is not None
    ]
    arrays = [a for a, n in usage.arrays.items() if a in array_limits and n >= array_limits[a]]
    return accounts, arrays


@dataclass(frozen=True)
class Snapshot:
    nodes: Sequence[NodeView]
    running: Sequence[RunningJob]
    pending: Sequence[PendingJob]  # 已按有效优先级排序
    now: float
    account_limits: Callable[[str], AccountLimit] = lambda _account: NO_LIMIT
    exceeds_partition_max: Callable[[str, int | None], bool] = lambda _p, _t: False


def plan(snap: Snapshot) -> Plan:
    """按优先级依次放置，EASY 回填；返回放置与等待原因（Slurm 的 Reason 名称）。"""
    nodes = {n.node_id: _Node(n, n.total_cpus, n.total_memory) for n in snap.nodes}
    usage = Usage()
    for r in snap.running:
        usage.add(r.account, r.cpus, r.array_job_id)
        node = nodes.get(r.node_id)
        if node is not None:
            _take(node, r.cpus, r.memory_bytes, r.exclusive, r.expected_end)
    result = Plan()
    reserved_partitions: set[str] = set()
    for job in snap.pending:
        reason = blocked(
            None if job.runnable else DEPENDENCY,
            snap.exceeds_partition_max(job.partition, job.time_limit),
            snap.account_limits(job.account),
            usage,
            job.account,
            job.cpus,
            job.array_job_id,
            job.array_max_running,
        )
        if reason is not None:
            result.reasons[job.job_id] = reason
            continue
        eligible = [
            n
            for n in nodes.values()
            if job.partition in n.view.partitions
            and fits(job, n.view.total_cpus, n.view.total_memory)
        ]
        if not eligible:
            # 分区里暂无能容纳它的节点：不预留、不阻塞队列（节点加入后自然可放）
            result.reasons[job.job_id] = "Resources"
            continue
        end = snap.now + job.time_limit if job.time_limit is not None else None
        candidates = [
            n for n in eligible if _fits_now(job, n) and _respects_reservations(job, n, end)
        ]
        if candidates:
            best = min(candidates, key=lambda n: _best_fit_key(job, n))
            _take(best, job.cpus, job.memory_bytes, job.exclusive, end)
            _charge_reservations(best, job, end)
            usage.add(job.account, job.cpus, job.array_job_id)
            result.placements.append(Placement(job.job_id, best.view.node_id, best.view.node_name))
            continue
        if job.partition in reserved_partitions:
            result.reasons[job.job_id] = "Priority"
            continue
        reserved_partitions.add(job.partition)
        result.reasons[job.job_id] = "Resources"
        reservation = _earliest_start(job, eligible, snap.now)
        if reservation is None:
            for n in eligible:
                n.frozen = True
            continue
        node, start, spare_cpus, spare_memory = reservation
        node.reserved.append([start, spare_cpus, spare_memory])
        result.reservations.append(Reservation(job.job_id, node.view.node_id, start))
    return result


def _take(node: _Node, cpus: int, memory: int, exclusive: bool, end: float | None) -> None:
    node.free_cpus -= cpus
    node.free_memory -= memory
    node.jobs += 1
    node.exclusive_busy = node.exclusive_busy or exclusive
    node.releases.append((end, cpus, memory, exclusive))


def _fits_now(job: PendingJob, node: _Node) -> bool:
    if node.exclusive_busy:
        return False
    if job.exclusive:
        return node.jobs == 0
    return fits(job, node.free_cpus, node.free_memory)


def _respects_reservations(job: PendingJob, node: _Node, end: float | None) -> bool:
    """放在这里不会推迟任何预留：在预留开始前结束，或只用预留之外的余量。"""
    if node.frozen:
        return False
    for start, spare_cpus, spare_memory in node.reserved:
        if end is not None and end <= start:
            continue
        if job.exclusive or not fits(job, spare_cpus, spare_memory):
            return False
    return True


def _charge_reservations(node: _Node, job: PendingJob, end: float | None) -> None:
    """越过预留开始时刻的回填作业占用余量。"""
    for slot in node.reserved:
        if end is None or end > slot[0]:
            slot[1] -= job.cpus
            slot[2] -= job.memory_bytes


def _best_fit_key(job: PendingJob, node: _Node) -> tuple[float, str, str]:
    # 独占作业挑总容量最小的空节点；其余挑空闲 CPU 最少的节点，给大作业留出整块空间
    size = node.view.total_cpus if job.exclusive else node.free_cpus
    return (size, node.view.node_name, node.view.node_id)


def _earliest_start(
    job: PendingJob, eligible: Sequence[_Node], now: float
) -> tuple[_Node, float, float, float] | None:
    """按运行中作业的预计结束推算队首最早能开始的节点与时刻，及届时预留之外的余量。"""
    best: tuple[_Node, float, float, float] | None = None
    for node in eligible:
        found = _node_start(job, node, now)
        if found is None:
            continue
        start, spare_cpus, spare_memory = found
        if best is None or (start, node.view.node_name) < (best[1], best[0].view.node_name):
            best = (node, start, spare_cpus, spare_memory)
    return best


def _node_start(job: PendingJob, node: _Node, now: float) -> tuple[float, float, float] | None:
    """在该节点上逐个应用预计释放，找到第一个放得下的时刻；有不限时的作业挡着则可能算不出。"""
    cpus, memory, jobs = node.free_cpus, node.free_memory, node.jobs
    exclusive_left = sum(1 for r in node.releases if r[3])
    known = sorted((r for r in node.releases if r[0] is not None), key=lambda r: r[0] or 0.0)
    moment = now
    for step in range(len(known) + 1):
        if step:
            end, c, m, excl = known[step - 1]
            cpus, memory, jobs = cpus + c, memory + m, jobs - 1
            exclusive_left -= int(excl)
            moment = max(end or now, now)
        if exclusive_left:
            continue
        if job.exclusive:
            if jobs == 0:
                return moment, 0.0, 0.0
        elif fits(job, cpus, memory):
            return moment, cpus - job.cpus, memory - job.memory_bytes
    return None
