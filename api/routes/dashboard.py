"""总览：GET /dashboard——作业统计、资源使用与节点信息。

数字来自 PostgreSQL（作业计数、仍占用资源的作业）与存活的 Ray 集群（节点与容量）。
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PrincipalDep, RuntimeDep
from api.routes.jobs import job_summary
from api.schemas import DashboardResponse, JobStats, NodeInfo, ResourceStats
from conductor.db import session_scope
from conductor.states import JobState
from conductor.stats import job_figures
from conductor.store import jobs as store

router = APIRouter()
# running_jobs / pending_jobs 各列出最新的这么多个
RECENT = 20


@router.get("/dashboard", response_model=DashboardResponse)
def dashboard(principal: PrincipalDep, rt: RuntimeDep) -> DashboardResponse:
    """作业统计、资源使用与节点信息：数字来自 PostgreSQL 与存活的 Ray 集群。

    账户令牌看到的作业统计与作业列表只含自己的作业；资源与节点是整个集群的（同 sinfo）。"""
    mine = None if principal.admin else principal.account
    with session_scope(rt.engine) as session:
        if mine is None:  # 整个集群：触发器维护的计数，不扫描 jobs
            counts = job_figures(session).counts
        else:
            counts = store.account_counts(session, mine)
        used = {node: int(cpus) for node, (cpus, _) in store.held_by_node(session).items()}
        recent = {
            state: store.recent(session, state, mine, RECENT)
            for state in (JobState.RUNNING, JobState.PENDING)
        }
    stats = JobStats(total=sum(counts.values()), **{s.lower(): n for s, n in counts.items()})
    nodes = []
    partitions = rt.partitions
    for n in rt.cluster.nodes():
        allocated = used.get(n.node_id, 0) if n.alive else 0
        total = int(n.total_cpus)
        nodes.append(
            NodeInfo(
                node_name=n.node_name,
                node_id=n.node_id,
                partition=",".join(sorted(partitions.node_partitions(n.labels, n.resources))),
                total_cpus=total,
                allocated_cpus=allocated,
                available_cpus=max(0, total - allocated) if n.alive else 0,
                available=n.alive,
                utilization_rate=round(allocated / total, 4) if total else 0.0,
            )
        )
    total_cpus = sum(n.total_cpus for n in nodes if n.available)
    allocated_cpus = sum(n.allocated_cpus for n in nodes if n.available)
    return DashboardResponse(
        job_stats=stats,
        resource_stats=ResourceStats(
            total_cpus=total_cpus,
            allocated_cpus=allocated_cpus,
            available_cpus=max(0, total_cpus - allocated_cpus),
            utilization_rate=round(allocated_cpus / total_cpus, 4) if total_cpus else 0.0,
        ),
        node_info=nodes,
        running_jobs=[job_summary(j) for j in recent[JobState.RUNNING]],
        pending_jobs=[job_summary(j) for j in recent[JobState.PENDING]],
    )
