"""调度策略：纯函数。输入是快照（待运行作业、各节点空闲资源），输出是放置决定。

不碰数据库也不碰 Ray，便于单元测试和后续扩展（优先级、回填）。
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """调度决定：作业放到哪个节点。"""

    job_id: int
    node_id: str
    node_name: str


@dataclass(frozen=True)
class NodeView:
    """一个存活节点的容量与当前空闲量。"""

    node_id: str
    node_name: str
    total_cpus: float
    total_memory: float
    free_cpus: float
    free_memory: float


@dataclass(frozen=True)
class PendingJob:
    """排队作业的资源需求。"""

    job_id: int
    cpus: int
    memory_bytes: int


def fits(job: PendingJob, cpus: float, memory: float) -> bool:
    return job.cpus <= cpus and job.memory_bytes <= memory


def can_ever_run(cpus: int, memory_bytes: int, nodes: Iterable[NodeView]) -> bool:
    """是否存在某个节点，其总容量能容纳该请求（作业不跨节点）。"""
    probe = PendingJob(0, cpus, memory_bytes)
    return any(fits(probe, n.total_cpus, n.total_memory) for n in nodes)


def plan_fifo(pending: Sequence[PendingJob], nodes: Sequence[NodeView]) -> list[Placement]:
    """严格按提交顺序放置：队首放不下时后面的都等待（回填在后续策略中）。

    节点选择为最佳适配：能放下且空闲 CPU 最少的节点，给大作业留出整块空间。
    永远放不下的作业（超过任何存活节点的总容量）跳过，不阻塞队列。
    """
    free = {n.node_id: [n.free_cpus, n.free_memory] for n in nodes}
    placements: list[Placement] = []
    for job in pending:
        if not can_ever_run(job.cpus, job.memory_bytes, nodes):
            continue
        candidates = [n for n in nodes if fits(job, *free[n.node_id])]
        if not candidates:
            break
        best = min(candidates, key=lambda n: (free[n.node_id][0], n.node_name, n.node_id))
        free[best.node_id][0] -= job.cpus
        free[best.node_id][1] -= job.memory_bytes
        placements.append(Placement(job.job_id, best.node_id, best.node_name))
    return placements
