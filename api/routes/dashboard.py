"""总览：GET /dashboard——作业统计、资源使用（CPU、GPU、通用资源）与节点信息（含状态与排空）。

数字来自 PostgreSQL（作业计数、仍占用资源的作业）与存活的 Ray 集群（节点与容量）。
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep, RuntimeDep
from api.routes.jobs import job_summary
from api.schemas import DashboardResponse, GresStats, JobStats, NodeInfo, ResourceStats
from conductor.db import session_scope
from conductor.drains import RAY_REASON, RAY_USER, Drain, node_state
from conductor.resources import CPU, GPU, MEMORY, NONE, Resources
from conductor.states import JobState
from conductor.stats import job_figures
from conductor.store import drains
from conductor.store import jobs as store

router = APIRouter()
# running_jobs / pending_jobs 各列出最新的这么多个
RECENT = 20


def usage_fields(total: Resources, allocated: Resources, alive: bool) -> dict[str, Any]:
    """容量与占用 → NodeInfo / ResourceStats 的字段：CPU、GPU 与各通用资源同一种算法。

    不可用的节点没有占用也没有空闲（作业已无法在那里运行）。"""
    # 差只保留正值：超额时空闲为 0
    allocated, available = (allocated, total - allocated) if alive else (NONE, NONE)
    fields: dict[str, Any] = {}
    for suffix, name in (("cpus", CPU), ("gpus", GPU)):
        fields[f"total_{suffix}"] = int(total[name])
        fields[f"allocated_{suffix}"] = int(allocated[name])
        fields[f"available_{suffix}"] = int(available[name])
    cpus = fields["total_cpus"]
    fields["utilization_rate"] = round(fields["allocated_cpus"] / cpus, 4) if cpus else 0.0
    fields["gres"] = {
        name: GresStats(total=total[name], allocated=allocated[name], available=available[name])
        for name in sorted({*total, *allocated} - {CPU, GPU, MEMORY})
    }
    return fields


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
        held = store.held_by_node(session)
        drained = drains.all_drains(session)
        recent = {
            state: store.recent(session, state, mine, RECENT)
            for state in (JobState.RUNNING, JobState.PENDING)
        }
    stats = JobStats(total=sum(counts.values()), **{s.lower(): n for s, n in counts.items()})
    nodes = []
    now = datetime.now(UTC)
    cluster_total, cluster_used = NONE, NONE
    partitions = rt.partitions
    for n in rt.cluster.nodes():
        total, used = n.capacity, held.get(n.node_id, NONE)
        if n.alive:  # 合计只算存活节点
            cluster_total, cluster_used = cluster_total + total, cluster_used + used
        usage = usage_fields(total, used, n.alive)
        drain = drained.get(n.node_name)
        if drain is None and n.draining:  # Ray 自己在排空（缩容、实例回收）
            drain = Drain(n.node_name, RAY_REASON, RAY_USER, now)
        busy = any(v > 0 for k, v in used.items() if k != MEMORY)
        nodes.append(
            NodeInfo(
                node_name=n.node_name,
                node_id=n.node_id,
                partition=",".join(sorted(partitions.node_partitions(n.labels, n.resources))),
                available=n.alive,
                features=sorted(n.features),
                state=node_state(n.alive, drain is not None, busy, usage["available_cpus"] > 0),
                drain_reason=None if drain is None else drain.reason,
                drained_by=None if drain is None else drain.by,
                drain_since=None if drain is None else drain.since,
                **usage,
            )
        )
    return DashboardResponse(
        job_stats=stats,
        resource_stats=ResourceStats(**usage_fields(cluster_total, cluster_used, True)),
        node_info=nodes,
        running_jobs=[job_summary(j) for j in recent[JobState.RUNNING]],
        pending_jobs=[job_summary(j) for j in recent[JobState.PENDING]],
    )
