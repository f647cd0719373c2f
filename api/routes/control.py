"""作业的控制（新增接口）：挂起、放行、修改优先级与时限（排队中的作业），重新排队与发信号。

数组主作业号作用于全部任务。"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import JobId, PrincipalDep, RuntimeDep
from api.lookup import load_targets
from api.runtime import Runtime
from api.schemas import JobSignalRequest, JobUpdateRequest, MessageResponse
from conductor.auth import Principal
from conductor.db import retry_conflicts, session_scope
from conductor.errors import JobNotPending, JobStateConflict
from conductor.models import Job
from conductor.priority import queue_rank
from conductor.signalspec import signal_name, signal_number
from conductor.states import JobState
from conductor.store import jobs as store
from conductor.store import transitions
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


# Slurm 的原文（src/common/slurm_errno.c），scontrol / scancel 的使用者认得它们
JOB_PENDING = "Job is pending execution"
ALREADY_DONE = "Job/step already completing or completed"


@router.post("/jobs/{job_id}/requeue", response_model=MessageResponse)
def requeue(job_id: JobId, principal: PrincipalDep, rt: RuntimeDep) -> MessageResponse:
    """重新排队（scontrol requeue）：运行中的作业停止执行（每个节点上），已结束的作业也回到 PENDING，
    同一作业号从头再运行，重启次数加一。上一次执行确认结束、资源归还之前，新执行不会开始。
    排队中的作业 409（Job is pending execution）。"""

    def apply() -> dict[int, transitions.RequeueResult | None]:
        with session_scope(rt.engine) as session:
            jobs = load_targets(session, job_id, principal)
            return {j.id or 0: transitions.requeue_job(session, j.id or 0) for j in jobs}

    results = retry_conflicts(apply, what=f"重新排队作业 {job_id}")
    changed = {j: r for j, r in results.items() if r is not None and r.changed}
    for j, r in changed.items():
        if r.node_id is not None:
            rt.cluster.cancel(
                r.node_id, j
            )  # 停止旧执行；消息丢失时代理从数据库发现（lost_cancels）
    rt.cluster.wake()
    if not changed:
        states = "、".join(sorted({str(r.previous) for r in results.values() if r is not None}))
        raise JobStateConflict(
            f"作业 {job_id} 处于 {states} 状态，不能重新排队（{JOB_PENDING}）"
            if states == "PENDING"
            else f"作业 {job_id} 处于 {states} 状态，不能重新排队"
        )
    if len(results) > 1:
        return MessageResponse(
            msg=f"作业数组 {job_id}：重新排队了 {len(changed)} / {len(results)} 个任务"
        )
    (result,) = changed.values()
    return MessageResponse(
        msg=f"作业 {job_id} 已重新排队（原状态 {result.previous}，第 {result.restart_count} 次重启）"
    )


@router.post("/jobs/{job_id}/signal", response_model=MessageResponse)
def send_signal(
    job_id: JobId, req: JobSignalRequest, principal: PrincipalDep, rt: RuntimeDep
) -> MessageResponse:
    """给运行中的作业发信号而不取消它（scancel --signal）：默认发给全部作业步的任务（不发给批处理
    shell），batch（scancel -b）只发给批处理 shell，full（scancel -f）发给批处理 shell 及其全部子孙。
    不在运行的作业 409。"""
    sig = signal_number(str(req.signal))
    with session_scope(rt.engine) as session:
        jobs = load_targets(session, job_id, principal)
    running = [j for j in jobs if j.state == JobState.RUNNING and j.node_id]
    if not running:
        states = {str(j.state) for j in jobs}
        why = JOB_PENDING if states == {"PENDING"} else ALREADY_DONE
        raise JobStateConflict(
            f"作业 {job_id} 处于 {'、'.join(sorted(states))} 状态，不能发送信号（{why}）"
        )
    delivered = []
    for job in running:
        sent = rt.cluster.signal(job.node_id or "", job.id or 0, sig, req.batch, req.full)
        if sent is not None:
            delivered.append(sent)
    if not delivered:
        raise JobStateConflict(f"作业 {job_id} 已不在运行，不能发送信号（{ALREADY_DONE}）")
    scope = (
        "批处理 shell 及其全部子孙" if req.full else "批处理 shell" if req.batch else "作业步的任务"
    )
    return MessageResponse(
        msg=f"作业 {job_id}：信号 {signal_name(sig)} 已发给{scope}（{sum(delivered)} 个进程）"
    )
