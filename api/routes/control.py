"""排队作业的控制（新增接口）：挂起、放行、修改优先级与时限。数组主作业号作用于全部排队任务。"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import JobId, PrincipalDep, RuntimeDep
from api.lookup import load_targets
from api.runtime import Runtime
from api.schemas import JobUpdateRequest, MessageResponse
from conductor.auth import Principal
from conductor.db import retry_conflicts, session_scope
from conductor.errors import JobNotPending
from conductor.models import Job
from conductor.priority import queue_rank
from conductor.states import JobState
from conductor.store import jobs as store
from conductor.timefmt import format_limit, parse_time_limit

router = APIRouter()


def _pending(jobs: list[Job], ref: str, action: str) -> list[Job]:
    pending = [j for j in jobs if j.state == JobState.PENDING]
    if not pending:
        states = "、".join(sorted({str(j.state) for j in jobs}))
        raise JobNotPending(f"作业 {ref} 处于 {states} 状态，已不在排队，不能{action}")
    return pending


def _set_held(ref: str, held: bool, principal: Principal, rt: Runtime) -> MessageResponse:
    action = "挂起" if held else "放行"

    def apply() -> list[int]:
        with session_scope(rt.engine) as session:
            jobs = _pending(load_targets(session, ref, principal), ref, action)
            return store.set_held(session, [j.id or 0 for j in jobs], held)

    changed = retry_conflicts(apply, what=f"{action}作业 {ref}")
    rt.cluster.wake()
    return MessageResponse(msg=f"作业 {ref}：{action}了 {len(changed)} 个排队中的作业")


@router.post("/jobs/{job_id}/hold", response_model=MessageResponse)
def hold(job_id: JobId, principal: PrincipalDep, rt: RuntimeDep) -> MessageResponse:
    """挂起排队中的作业（scontrol hold）：放行前不会启动，等待原因 JobHeldUser。"""
    return _set_held(job_id, True, principal, rt)


@router.post("/jobs/{job_id}/release", response_model=MessageResponse)
def release(job_id: JobId, principal: PrincipalDep, rt: RuntimeDep) -> MessageResponse:
    """放行被挂起的作业（scontrol release），按原来的优先级与提交时间排队。"""
    return _set_held(job_id, False, principal, rt)


@router.patch("/jobs/{job_id}", response_model=MessageResponse)
def update(
    job_id: JobId,
    req: JobUpdateRequest,
    principal: PrincipalDep,
    rt: RuntimeDep,
) -> MessageResponse:
    """修改排队中作业的优先级或时限（scontrol update）；时限不能超过分区上限。"""
    partitions = rt.partitions
    limit = store.KEEP if req.time_limit is None else parse_time_limit(req.time_limit)

    def apply() -> list[Job]:
        with session_scope(rt.engine) as session:
            jobs = _pending(load_targets(session, job_id, principal), job_id, "修改")
            for job in jobs:
                if limit is not store.KEEP:
                    partitions.time_limit(partitions.get(job.partition), limit, given=True)
                rank = None if req.priority is None else queue_rank(req.priority, job.submit_time)
                store.update_pending(session, job.id or 0, req.priority, rank, limit)
            return jobs

    jobs = retry_conflicts(apply, what=f"修改作业 {job_id}")
    rt.cluster.wake()
    changes = []
    if req.priority is not None:
        changes.append(f"优先级 {req.priority}")
    if limit is not store.KEEP:
        changes.append(f"时限 {format_limit(limit)}")
    return MessageResponse(
        msg=f"作业 {job_id}：已修改 {len(jobs)} 个排队中的作业（{'，'.join(changes) or '无改动'}）"
    )
