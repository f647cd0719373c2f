"""作业：查询（GET /jobs/query/{id}）、取消（POST /jobs/cancel/{id}）与列表（GET /jobs）。

别的账户的作业视同不存在（404）；排队中的作业附上等待原因（conductor/reasons.py 推导）。
"""

from __future__ import annotations

import functools
import os
import pwd
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import Session

from api.deps import JobId, PrincipalDep, RuntimeDep
from api.lookup import job_ref, load_job, load_targets, whole_array
from api.runtime import Runtime
from api.schemas import (
    ArrayTask,
    JobDetail,
    JobListItem,
    JobListResponse,
    JobLog,
    JobQueryResponse,
    JobStep,
    JobSummary,
    JobTimes,
    MessageResponse,
)
from conductor import allocation
from conductor.account_limits import limit_for
from conductor.auth import Principal
from conductor.db import retry_conflicts, session_scope
from conductor.errors import ClusterUnavailable, ConductorError
from conductor.models import Job
from conductor.reasons import Usage, blocked, gate
from conductor.resources import Resources
from conductor.settings import Settings
from conductor.signalspec import signal_name
from conductor.states import JobState
from conductor.store import jobs as store
from conductor.store import steps as step_store
from conductor.store import transitions
from conductor.timefmt import format_elapsed, format_limit, iso_utc

router = APIRouter()


def _logs(job: Job, rt: Runtime) -> JobLog:
    if job.node_id is None:
        return JobLog(stdout="", stderr="")
    try:
        logs = rt.cluster.read_logs(
            job.node_id, job.stdout_path, job.stderr_path, owner=job.run_as_user
        )
    except ConductorError as exc:
        note = f"[无法读取日志：{exc.message}]"
        return JobLog(stdout=note, stderr=note)

    def show(content: str | None, path: str) -> str:
        return content if content is not None else f"[日志文件不存在：{path}]"

    return JobLog(
        stdout=show(logs["stdout"], job.stdout_path), stderr=show(logs["stderr"], job.stderr_path)
    )


def _elapsed(job: Job) -> str:
    if job.start_time is None:
        return format_elapsed(0)
    end = job.end_time or datetime.now(UTC)
    return format_elapsed((end - job.start_time).total_seconds())


def _reasons(session: Session, jobs: list[Job], rt: Runtime) -> dict[int, str]:
    """一批作业中排队者的等待原因（按账户与数组聚合一次，不逐行查询）。"""
    pending = [j for j in jobs if j.state == JobState.PENDING and j.id is not None]
    if not pending:
        return {}
    used = store.account_usage(session, sorted({j.account for j in pending}))
    arrays = sorted({j.array_job_id for j in pending if j.array_job_id is not None})
    usage = Usage(
        jobs={a: n for a, (n, _, _) in used.items()},
        cpus={a: cpus for a, (_, cpus, _) in used.items()},
        arrays=store.array_running(session, arrays),
        gpus={a: gpus for a, (_, _, gpus) in used.items()},
    )
    limits = rt.settings.account_limits
    return {
        j.id: blocked(  # type: ignore[misc]
            gate(j.held, j.dependency_state),
            rt.partitions.exceeds_max(j.partition, j.time_limit_seconds),
            limit_for(limits, j.account),
            usage,
            j.account,
            j.cpus * (j.nodes or 1),  # 账户上限按每节点的量 × 节点数计，同 policy.plan
            j.array_job_id,
            j.array_max_running,
            j.gpus * (j.nodes or 1),
        )
        or j.state_reason
        or "None"
        for j in pending
    }


@router.get("/jobs/query/{job_id}", response_model=JobQueryResponse)
def query(job_id: JobId, principal: PrincipalDep, rt: RuntimeDep) -> JobQueryResponse:
    """查询作业状态、时间、退出码与日志；排队中的作业给出等待原因。别的账户的作业视同不存在（404）。

    job_id 可写作数组任务 12_3；查询数组主作业号时另列出全部任务的概况。
    """
    with session_scope(rt.engine) as session:
        job = load_job(session, job_id, principal)
        tasks = whole_array(session, job, job_id)
        reasons = _reasons(session, [job, *(tasks or [])], rt)
        recorded = step_store.steps_of(session, [job.id or 0])
    return JobQueryResponse(
        job_id=str(job.id),
        state=job.state,
        error_msg=job.error_msg,
        time=JobTimes(
            submit_time=iso_utc(job.submit_time),
            start_time=iso_utc(job.start_time),
            end_time=iso_utc(job.end_time),
            eligible_time=iso_utc(job.eligible_time),
            elapsed_time=_elapsed(job),
            limit_time=format_limit(job.time_limit_seconds),
        ),
        job_log=_logs(job, rt),
        detail=JobDetail(
            job_name=job.name,
            user=job.account,
            partition=job.partition,
            allocated_cpus=allocation.total_cpus(job),
            allocated_nodes=len(allocation.node_names(job)),
            node_list=allocation.node_list(job),
            exit_code=job.exit_code,
            work_dir=job.work_dir,
            data_source=job.data_source,
            account=job.account,
            priority=job.priority,
            dependency=job.dependency,
            array_job_id=job.array_job_id,
            array_task_id=job.array_task_id,
            unix_user=unix_user(job),
            **slurm_fields(job),
            **job_resources(job, node_capacities([job], rt)),
        ),
        state_reason=reasons.get(job.id or 0),
        array_tasks=None
        if tasks is None
        else [
            ArrayTask(
                job_id=t.id or 0,
                array_task_id=t.array_task_id or 0,
                state=t.state,
                state_reason=reasons.get(t.id or 0),
                exit_code=t.exit_code,
                node_list=allocation.node_list(t),
            )
            for t in tasks
        ],
        steps=_steps(job, recorded),
    )


def _steps(job: Job, recorded: Mapping[int, list[dict[str, Any]]]) -> list[JobStep]:
    return [JobStep(**s) for s in allocation.steps(job, recorded.get(job.id or 0, []))]


@router.post("/jobs/cancel/{job_id}", response_model=MessageResponse)
def cancel(job_id: JobId, principal: PrincipalDep, rt: RuntimeDep) -> MessageResponse:
    """取消作业（幂等）。排队中的作业不再启动；运行中的作业整棵进程树被终止。

    数组主作业号取消整个数组，12_3 只取消一个任务。别的账户的作业视同不存在（404）。
    """

    def cancel_all() -> tuple[list[int], dict[int, transitions.CancelResult | None]]:
        with session_scope(rt.engine) as session:
            ids = [(j.id or 0) for j in load_targets(session, job_id, principal)]
            return ids, {t: transitions.cancel(session, t, by_uid) for t in ids}

    by_uid = canceller_uid(principal, rt.settings)

    targets, results = retry_conflicts(cancel_all, what=f"取消作业 {job_id}")
    changed = {t: r for t, r in results.items() if r is not None and r.changed}
    for t, r in changed.items():
        if r.previous is JobState.RUNNING and r.node_id:
            rt.cluster.cancel(r.node_id, t)
    rt.cluster.wake()
    if len(targets) > 1:
        return MessageResponse(
            msg=f"作业数组 {job_id}：取消了 {len(changed)} / {len(targets)} 个任务"
        )
    result = results[targets[0]]
    assert result is not None
    if not result.changed:
        return MessageResponse(msg=f"作业 {job_id} 已处于 {result.previous} 状态，无需取消")
    return MessageResponse(msg=f"作业 {job_id} 已取消（原状态 {result.previous}）")


def node_capacities(jobs: list[Job], rt: Runtime) -> dict[str, Resources]:
    """独占的运行中作业分到节点的全部 CPU：读这些节点的容量（别的作业不必问 Ray）。"""
    if not any(j.node_id and j.exclusive for j in jobs):
        return {}
    try:
        return {n.node_id: n.capacity for n in rt.cluster.nodes()}
    except ClusterUnavailable:
        return {}  # Ray 暂不可用：查询照常回答，分配栏退回所请求的


def job_resources(job: Job, capacities: Mapping[str, Resources]) -> dict[str, Any]:
    """请求与分配到的资源（JobResources 的字段），开始运行才有分配；TRES 串是整个作业的总量。

    独占作业分到节点的全部 CPU（同 Slurm 的 AllocTRES），节点已不在时只能给出所请求的；
    --mem=0 的作业认领时已记下节点的内存（transitions.claim）。"""
    tres, alloc = allocation.tres(job, capacities)
    return {
        "tres_req_str": tres,
        "tres_alloc_str": alloc,
        "ntasks": job.ntasks,
        "gpus": job.gpus,
        "gpu_type": job.gpu_type,
        "gres": dict(job.gres or {}),
        "constraints": job.constraints,
        "required_nodes": list(job.required_nodes or []),
        "excluded_nodes": list(job.excluded_nodes or []),
    }


@functools.cache
def service_user() -> str:
    """服务自身的 Unix 用户：没有映射到 Unix 用户的账户的作业以它运行。"""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def canceller_uid(principal: Principal, settings: Settings) -> int | None:
    """取消者的 uid（sacct 的 CANCELLED by <uid>）：账户映射到的 Unix 用户；管理员与未映射的账户
    为服务自身的用户（它们的作业也以服务的用户运行）。映射的用户在本机不存在时不明（None）。"""
    mapped = None if principal.account is None else settings.account_users.get(principal.account)
    if principal.admin or mapped is None:
        return os.getuid()
    try:
        return pwd.getpwnam(mapped).pw_uid
    except KeyError:
        return None


def unix_user(job: Job) -> str:
    return job.run_as_user or service_user()


def signal_text(job: Job) -> str | None:
    """--signal 的规范写法（B:USR1@60）；没给为 None。"""
    if job.signal_number is None:
        return None
    prefix = "B:" if job.signal_batch else ""
    return f"{prefix}{signal_name(job.signal_number)}@{job.signal_seconds or 0}"


def slurm_fields(job: Job) -> dict[str, Any]:
    """Slurm 命令（squeue、scontrol show job）要的字段，列表与查询共用（议题 18）。"""
    return {
        "time_limit_seconds": job.time_limit_seconds,
        "restarts": job.restart_count,
        "requeue": job.requeue,
        "held": job.held,
        "stdout_path": job.stdout_path,
        "stderr_path": job.stderr_path,
        "batch_host": job.node_name if job.state != JobState.PENDING else None,
        "cpus_per_task": job.cpus_per_task,
        "ntasks_per_node": job.ntasks_per_node,
        "memory_bytes": job.memory_bytes,
        "exclusive": job.exclusive,
        "open_mode": job.open_mode,
        "signal": signal_text(job),
        "eligible_time": iso_utc(job.eligible_time),
        "cancelled_by_uid": job.cancelled_by_uid,
    }


def job_summary(job: Job) -> JobSummary:
    """作业的概况（列表与 /dashboard 共用）。"""
    return JobSummary(
        job_id=job.id or 0,
        name=job.name,
        account=job.account,
        state=job.state,
        allocated_cpus=allocation.total_cpus(job),
        submit_time=iso_utc(job.submit_time),
        start_time=iso_utc(job.start_time),
    )


@router.get("/jobs", response_model=JobListResponse)
def list_jobs(
    principal: PrincipalDep,
    rt: RuntimeDep,
    state: Annotated[list[JobState] | None, Query(description="按状态过滤，可重复")] = None,
    account: Annotated[str | None, Query(max_length=255, description="只看该账户")] = None,
    partition: Annotated[str | None, Query(max_length=100, description="只看该分区")] = None,
    name: Annotated[str | None, Query(max_length=255, description="只看该作业名")] = None,
    array_job_id: Annotated[int | None, Query(ge=1, description="只列某个作业数组的任务")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="每页最多多少个")] = 100,
    cursor: Annotated[int | None, Query(ge=1, description="上一页返回的 next_cursor")] = None,
    job_id: Annotated[
        list[str] | None,
        Query(
            max_length=1000,
            description="只列这些作业，可重复（同 squeue -j）：数组主作业号列出全部任务，12_3 只列那一个",
        ),
    ] = None,
    user: Annotated[
        list[str] | None,
        Query(
            max_length=1000, description="只列以这些 Unix 用户运行的作业，可重复（同 squeue -u）"
        ),
    ] = None,
) -> JobListResponse:
    """作业列表（新增接口）：按过滤条件、最新在前；以作业 id 为游标分页，翻页期间新提交的作业不会打乱顺序。"""
    filters = [
        (Job.account, account),
        (Job.partition, partition),
        (Job.name, name),
        (Job.array_job_id, array_job_id),
    ]
    if not principal.admin:
        filters.append((Job.account, principal.account))  # 账户令牌只看到自己的作业
    with session_scope(rt.engine) as session:
        jobs = store.page(
            session,
            states=state,
            filters=filters,
            before=cursor,
            limit=limit,
            refs=[job_ref(r) for r in job_id] if job_id else None,
            users=user or None,
            service_user=service_user(),
        )
        reasons = _reasons(session, jobs[:limit], rt)
        recorded = step_store.steps_of(session, [j.id or 0 for j in jobs[:limit]])
    page = jobs[:limit]
    capacities = node_capacities(page, rt)
    next_cursor = str(page[-1].id) if len(jobs) > limit else None
    return JobListResponse(
        jobs=[
            JobListItem(
                **job_summary(j).model_dump(),
                partition=j.partition,
                node_list=allocation.node_list(j),
                end_time=iso_utc(j.end_time),
                elapsed_time=_elapsed(j),
                exit_code=j.exit_code,
                state_reason=reasons.get(j.id or 0),
                priority=j.priority,
                array_job_id=j.array_job_id,
                array_task_id=j.array_task_id,
                nodes=allocation.node_count(j),
                steps=_steps(j, recorded),
                total_cpu_seconds=allocation.total_cpu_seconds(j, recorded.get(j.id or 0, [])),
                user=unix_user(j),
                work_dir=j.work_dir,
                dependency=j.dependency,
                **slurm_fields(j),
                **job_resources(j, capacities),
            )
            for j in page
        ],
        next_cursor=next_cursor,
    )
