"""调度策略：纯函数。输入是快照（排好序的待运行作业、运行中的作业及其预计结束、节点、当前时刻），
输出是放置决定与每个未放置作业的等待原因。不碰数据库也不碰 Ray。

规则（docs/scheduling.md 有例子）：
- 需求与容量都是资源向量（CPU、内存、GPU、通用资源，placement.py）：每一项都放得下才算放得下；
  节点空闲 = 总容量 − 运行中作业的向量之和。
- 节点筛选：分区、-w/-x、-C 特性约束、GPU 型号；-w/-x/-C 筛得凑不齐节点（单节点作业即筛掉了分区的全部节点）
  或 -w 列出的节点在排空时原因为 ReqNodeNotAvail。
- 排空的节点（NodeView.drain）不接新作业、不为队首预留，运行中的作业照常占着它的资源。
- 队列已按有效优先级排好序（priority.py）；依次尝试，能放下就放（最佳适配，见 placement.best_fit_key：
  不要 GPU 的作业先挑没有 GPU 的节点，再挑空闲 CPU 最少的）。
- 账户上限、数组 %N、分区时限挡住的作业跳过，不影响后面的作业。
- EASY 回填：每个分区第一个放不下的作业（队首）按运行中作业的时限算出最早开始时间并预留；
  之后的作业只有不推迟该预留时才能先启动（在预留时刻前结束，或只用预留之外每一项的余量）。
  算不出开始时间（有不限时的作业挡着）时，该分区的节点对后面的作业关闭：宁可不回填，也不饿死大作业。
- exclusive 作业独占整个节点：只放到空节点，运行时该节点不再接其他作业。
- 多节点作业（gang，nodes > 1）：每节点的向量要在 nodes 个不同的节点上同时放得下才放，全有或全无
  （选节点见 gang.py）；-w 列出的节点都在分配里，-x/-C/GPU 型号对每个节点都适用；放不下的队首照样
  预留（那组节点各自的开始时刻中最晚的一个），回填对每个预留节点分别遵守。账户上限按每节点 × 节点数计。
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from conductor.account_limits import NO_LIMIT, AccountLimit, blocking_reason, limit_for
from conductor.backfill import Ledger
from conductor.gang import earliest_start, lacks_required, pick_now
from conductor.placement import (
    NodeView,
    PendingJob,
    Placement,
    RunningJob,
    can_hold,
    demand_on,
    selected,
)
from conductor.reasons import DEPENDENCY, PRIORITY, REQ_NODE_NOT_AVAIL, RESOURCES, Usage, blocked

__all__ = [
    "NodeView",
    "PendingJob",
    "Placement",
    "Plan",
    "Reservation",
    "RunningJob",
    "Snapshot",
    "free_cpus",
    "plan",
    "saturated",
]


@dataclass(frozen=True)
class Reservation:
    """为某分区队首预留的节点与开始时刻；多节点作业的 node_ids 列出预留的全部节点（第一个即 node_id）。"""

    job_id: int
    node_id: str
    start: float
    node_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_ids", tuple(self.node_ids) or (self.node_id,))


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    reservations: list[Reservation] = field(default_factory=list)


def free_cpus(
    nodes: Sequence[NodeView], running: Sequence[RunningJob], partitions: Iterable[str]
) -> tuple[int, dict[str, int]]:
    """空闲 CPU：全集群合计，及每个分区的（属于多个分区的节点计入每一个；没有节点的分区为 0）。

    调度器据此决定每个分区读多深的队首：一个分区最多放得下“该分区空闲 CPU”个作业。
    """
    used: dict[str, float] = defaultdict(float)
    for r in running:
        for node_id in r.node_ids:
            used[node_id] += r.cpus
    # 排空的节点不接新作业：它的空闲不算
    idle = {n.node_id: 0.0 if n.drain else max(0.0, n.total_cpus - used[n.node_id]) for n in nodes}
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
        usage.add(r.account, r.cpus * r.nodes, r.array_job_id, r.gpus * r.nodes)
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
    nodes = {n.node_id: Ledger(n) for n in snap.nodes}
    usage = Usage()
    for r in snap.running:
        usage.add(r.account, r.cpus * r.nodes, r.array_job_id, r.gpus * r.nodes)
        for node_id in r.node_ids:
            node = nodes.get(node_id)
            if node is not None:
                node.take(demand_on(r, node.view), r.exclusive, r.expected_end)
    result = Plan()
    reserved_partitions: set[str] = set()
    # 分区的节点（按快照顺序）：每个分区只筛一次，不为每个作业扫一遍全部节点
    by_partition: dict[str, list[Ledger]] = {}
    for job in snap.pending:
        reason = blocked(
            None if job.runnable else DEPENDENCY,
            snap.exceeds_partition_max(job.partition, job.time_limit),
            snap.account_limits(job.account),
            usage,
            job.account,
            job.cpus * job.nodes,
            job.array_job_id,
            job.array_max_running,
            gpus=job.gpus * job.nodes,
        )
        if reason is not None:
            result.reasons[job.job_id] = reason
            continue
        members = by_partition.get(job.partition)
        if members is None:
            members = [n for n in nodes.values() if job.partition in n.view.partitions]
            by_partition[job.partition] = members
        chosen = [n for n in members if selected(job, n.view)]
        if members and (
            len(chosen) < min(job.nodes, len(members))
            or lacks_required(job, chosen)
            or any(n.view.drain and n.view.node_name in job.required_nodes for n in chosen)
        ):
            # -w/-x/-C 筛得凑不齐节点（单节点作业：全筛掉了），或 -w 要的节点在排空：等的是节点而不是资源，
            # 同样不预留、不阻塞队列
            result.reasons[job.job_id] = REQ_NODE_NOT_AVAIL
            continue
        eligible = [n for n in chosen if not n.view.drain and can_hold(job, n.view)]
        if len(eligible) < job.nodes or lacks_required(job, eligible):
            # 分区里暂无足够的节点能容纳它：不预留、不阻塞队列（节点加入后自然可放）
            result.reasons[job.job_id] = RESOURCES
            continue
        end = snap.now + job.time_limit if job.time_limit is not None else None
        candidates = [n for n in eligible if n.fits_now(job) and n.respects_reservations(job, end)]
        group = pick_now(job, candidates)
        if group is not None:
            for n in group:
                n.take(demand_on(job, n.view), job.exclusive, end)
                n.charge_reservations(job, end)
            usage.add(job.account, job.cpus * job.nodes, job.array_job_id, job.gpus * job.nodes)
            first = group[0].view
            result.placements.append(
                Placement(
                    job.job_id,
                    first.node_id,
                    first.node_name,
                    tuple(n.view.node_id for n in group),
                    tuple(n.view.node_name for n in group),
                )
            )
            continue
        if job.partition in reserved_partitions:
            result.reasons[job.job_id] = PRIORITY
            continue
        reserved_partitions.add(job.partition)
        result.reasons[job.job_id] = RESOURCES
        reservation = earliest_start(job, eligible, snap.now)
        if reservation is None:
            for n in eligible:
                n.frozen = True
            continue
        for n, slot in reservation:
            n.reserved.append(slot)
        result.reservations.append(
            Reservation(
                job.job_id,
                reservation[0][0].view.node_id,
                reservation[0][1].start,
                tuple(n.view.node_id for n, _ in reservation),
            )
        )
    return result
