"""REST 路由：与 CONTRACT.md 一致。路由只做转换，状态变化交给 conductor.transitions。"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlmodel import Session, select

from api.auth import CurrentPrincipal
from api.lookup import array_tasks, load_job, load_targets, whole_array
from api.runtime import Runtime, get_runtime
from api.schemas import (
    ArrayTask,
    BatchSubmitRequest,
    BatchSubmitResponse,
    DashboardResponse,
    JobDetail,
    JobListItem,
    JobListResponse,
    JobLog,
    JobQueryResponse,
    JobStats,
    JobSummary,
    JobTimes,
    MessageResponse,
    NodeInfo,
    ResourceStats,
    SubmitRequest,
    SubmitResponse,
)
from conductor import queue, transitions
from conductor.admission import (
    check_limits,
    check_request_total,
    confine,
    resolve_run_as,
    stored_bytes,
)
from conductor.arrays import check_filename, expand_filename, parse_array
from conductor.auth import Principal
from conductor.db import ping, retry_conflicts, session_scope
from conductor.dependencies import DepState
from conductor.errors import ConductorError, Forbidden, InvalidJobRequest
from conductor.memory import parse_memory
from conductor.models import Job
from conductor.policy import NodeView, can_ever_run
from conductor.priority import queue_rank
from conductor.states import JobState
from conductor.stats import job_figures
from conductor.timefmt import format_elapsed, format_limit, iso_utc, parse_time_limit

router = APIRouter()
RECENT = 20
# 日志路径列的长度（jobs.stdout_path / stderr_path）：展开 %x 等之后超过它的路径在提交时 422
PATH_COLUMN = 2048
JobId = Annotated[
    str, Path(description="作业 ID；数组任务写作 主作业号_下标（如 12_3），数组主作业号指整个数组")
]


def _resolve(work_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(work_dir, path))


def _job_from_request(req: SubmitRequest, rt: Runtime, principal: Principal) -> Job:
    p = req.job
    if not principal.can_access(p.account):
        raise Forbidden(f"令牌属于账户 {principal.account}，不能以账户 {p.account} 提交作业")
    check_limits(req.script, p.environment, rt.settings)
    for field, pattern in (
        ("job.standard_output", p.standard_output),
        ("job.standard_error", p.standard_error),
    ):
        try:
            check_filename(pattern)
        except ValueError as exc:
            raise InvalidJobRequest(field, f"{field}：{exc}") from exc
    partitions = rt.partitions
    partition = partitions.get(p.partition)
    requested = None if p.time_limit is None else parse_time_limit(p.time_limit)
    time_limit = partitions.time_limit(partition, requested, given=p.time_limit is not None)
    work_dir = os.path.normpath(p.current_working_directory)
    stdout_path = _resolve(work_dir, p.standard_output)
    stderr_path = _resolve(work_dir, p.standard_error)
    root = rt.settings.work_root
    if root is not None:
        confine(work_dir, root, "job.current_working_directory")
        stdout_path = confine(stdout_path, root, "job.standard_output")
        stderr_path = confine(stderr_path, root, "job.standard_error")
    run_as_user = resolve_run_as(p.account, rt.settings)
    now = datetime.now(UTC)
    return Job(
        name=p.name,
        account=p.account,
        partition=partition.name,
        script=req.script,
        environment=p.environment,
        work_dir=work_dir,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        run_as_user=run_as_user,
        ntasks_per_node=p.ntasks_per_node,
        cpus_per_task=p.cpus_per_task,
        cpus=p.ntasks_per_node * p.cpus_per_task,
        memory_bytes=parse_memory(p.memory_per_node),
        time_limit_seconds=time_limit,
        exclusive=p.exclusive,
        submit_time=now,
        eligible_time=now,
        priority=p.priority,
        queue_rank=queue_rank(p.priority, now),
        held=p.hold,
    )


def _check_runnable(job: Job, rt: Runtime) -> None:
    """永远无法运行的请求在提交时拒绝，而不是永远 PENDING（只看该分区的存活节点）。"""
    partitions = rt.partitions
    nodes = [
        NodeView(n.node_id, n.node_name, n.total_cpus, n.total_memory)
        for n in rt.cluster.nodes()
        if n.alive and job.partition in partitions.node_partitions(n.labels, n.resources)
    ]
    if not nodes or can_ever_run(job.cpus, job.memory_bytes, nodes):
        return  # 分区暂无存活节点时接受：节点加入后即可运行
    max_cpus = max((n.total_cpus for n in nodes), default=0)
    if not can_ever_run(job.cpus, 0, nodes):
        raise InvalidJobRequest(
            "job.cpus_per_task",
            f"请求 {job.cpus} 个 CPU（ntasks_per_node × cpus_per_task），"
            f"超过分区 {job.partition} 中任何节点的容量（最大 {max_cpus:g} 个）",
        )
    max_mem = max((n.total_memory for n in nodes if n.total_cpus >= job.cpus), default=0)
    raise InvalidJobRequest(
        "job.memory_per_node",
        f"请求内存 {job.memory_bytes // 2**20} MB，超过分区 {job.partition} 中任何 CPU 足够的节点的"
        f"可用内存（最大 {int(max_mem) // 2**20} MB）",
    )


def _expand(req: SubmitRequest, rt: Runtime, principal: Principal, session: Session) -> list[Job]:
    """一个提交请求 → 一个作业，或数组的每个任务一个作业（依赖在这里查被依赖作业是否存在）。"""
    job = _job_from_request(req, rt, principal)
    _check_runnable(job, rt)
    if req.job.dependency is not None:
        try:
            dep = queue.checked_dependency(
                session, req.job.dependency, None if principal.admin else principal.account
            )
        except ValueError as exc:
            raise InvalidJobRequest("job.dependency", str(exc)) from exc
        # 作业号单列一份：被依赖作业结束时调度器按它（GIN 索引）找到等待者
        job.dependency, job.dependency_ids = str(dep), sorted(dep.job_ids)
        job.dependency_state = DepState.WAITING.value
    if req.job.array is None:
        return [job]
    try:
        spec = parse_array(req.job.array, rt.settings.max_array_size)
    except ValueError as exc:
        raise InvalidJobRequest("job.array", str(exc)) from exc
    template = job.model_dump(exclude={"id", "array_task_id", "array_spec", "array_max_running"})
    return [
        Job(
            **template,
            array_task_id=index,
            array_spec=req.job.array.strip(),
            array_max_running=spec.max_running,
        )
        for index in spec.indices
    ]


def _check_request_size(requests: list[SubmitRequest], rt: Runtime) -> None:
    """构造任何作业之前，算出这个请求展开后的总行数与总字节数，超限即拒绝（逐个累计，超限即停）。"""
    single = len(requests) == 1
    rows = size = 0
    for req in requests:
        p = req.job
        tasks = 1
        if p.array is not None:
            with suppress(ValueError):  # 写法错误由 _expand 指明字段报告
                tasks = parse_array(p.array, rt.settings.max_array_size).count
        rows += tasks
        texts = (p.name, p.account, p.current_working_directory, p.standard_output)
        size += tasks * stored_bytes(req.script, p.environment, *texts, p.standard_error)
        field = "jobs" if not single else "job.array" if p.array is not None else "script"
        check_request_total(rows, size, rt.settings, field)


@contextmanager
def _numbered(index: int, count: int) -> Iterator[None]:
    """批量提交时，错误的字段与消息带上是第几个作业（单个提交原样抛出）。"""
    try:
        yield
    except InvalidJobRequest as exc:
        if count == 1:
            raise
        raise type(exc)(f"jobs.{index}.{exc.field}", f"第 {index} 个作业：{exc}") from exc
    except Forbidden as exc:
        if count == 1:
            raise
        raise Forbidden(f"第 {index} 个作业：{exc}") from exc


def _output_path(pattern: str, names: dict[str, Any], field: str, rt: Runtime) -> str:
    """展开输出文件名模式；展开后过长（%x 可重复多次）时 422，不让数据库报错。"""
    path = expand_filename(pattern, **names)
    if len(path) > PATH_COLUMN:
        raise InvalidJobRequest(
            field, f"{field}：展开后的路径有 {len(path)} 个字符，超过上限 {PATH_COLUMN}"
        )
    if rt.settings.work_root is not None:
        # %x、%u 展开后可能带出 “/..”：展开后再限定一次
        path = confine(path, rt.settings.work_root, field)
    return path


def _name_outputs(jobs: list[Job], rt: Runtime) -> None:
    """入库后才有作业号：数组主作业号与输出文件名中的 %j %A %a 在这里补上。"""
    master = min(j.id for j in jobs if j.id is not None)
    for j in jobs:
        assert j.id is not None
        if j.array_task_id is not None:
            j.array_job_id = master
        names = {
            "job_id": j.id,
            "name": j.name,
            "account": j.account,
            "array_job_id": j.array_job_id,
            "array_task_id": j.array_task_id,
        }
        j.stdout_path = _output_path(j.stdout_path, names, "job.standard_output", rt)
        j.stderr_path = _output_path(j.stderr_path, names, "job.standard_error", rt)


def _persist(rt: Runtime, principal: Principal, requests: list[SubmitRequest]) -> list[str]:
    """一个事务写入全部作业，提交后才唤醒调度器。返回每个请求的作业号（数组为主作业号）。

    任何一个作业无效都抛出异常、事务回滚，什么也不保存。
    """
    _check_request_size(requests, rt)
    with session_scope(rt.engine) as session:
        groups = []
        for index, req in enumerate(requests):
            with _numbered(index, len(requests)):
                groups.append(_expand(req, rt, principal, session))
            session.add_all(groups[-1])
        session.flush()
        for index, jobs in enumerate(groups):
            with _numbered(index, len(requests)):
                _name_outputs(jobs, rt)
        session.flush()
        ids = [str(min(j.id for j in jobs if j.id is not None)) for jobs in groups]
    rt.cluster.wake()
    return ids


@router.post("/jobs/submit", status_code=201, response_model=SubmitResponse)
def submit(
    req: SubmitRequest, principal: CurrentPrincipal, rt: Runtime = Depends(get_runtime)
) -> SubmitResponse:
    """提交作业：校验、写入 PostgreSQL 并提交事务后才返回 201，然后唤醒调度器。

    令牌只能以自己的账户提交（403）。数组作业返回主作业号（第一个任务的作业号）。
    """
    return SubmitResponse(job_id=_persist(rt, principal, [req])[0])


@router.post("/jobs/submit/batch", status_code=201, response_model=BatchSubmitResponse)
def submit_batch(
    req: BatchSubmitRequest, principal: CurrentPrincipal, rt: Runtime = Depends(get_runtime)
) -> BatchSubmitResponse:
    """批量提交（新增接口）：任何一个作业无效则整批 422、什么也不保存。"""
    return BatchSubmitResponse(job_ids=_persist(rt, principal, list(req.jobs)))


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
    return queue.reasons_for(session, jobs, rt.partitions, rt.settings.account_limits)


@router.get("/jobs/query/{job_id}", response_model=JobQueryResponse)
def query(
    job_id: JobId, principal: CurrentPrincipal, rt: Runtime = Depends(get_runtime)
) -> JobQueryResponse:
    """查询作业状态、时间、退出码与日志；排队中的作业给出等待原因。别的账户的作业视同不存在（404）。

    job_id 可写作数组任务 12_3；查询数组主作业号时另列出全部任务的概况。
    """
    with session_scope(rt.engine) as session:
        job = load_job(session, job_id, principal)
        tasks = (
            array_tasks(session, job.array_job_id)
            if job.array_job_id is not None and whole_array(job, job_id)
            else None
        )
        reasons = _reasons(session, [job, *(tasks or [])], rt)
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
            allocated_cpus=job.cpus,
            allocated_nodes=1 if job.node_id else 0,
            node_list=job.node_name or "",
            exit_code=job.exit_code,
            work_dir=job.work_dir,
            data_source=job.data_source,
            account=job.account,
            priority=job.priority,
            dependency=job.dependency,
            array_job_id=job.array_job_id,
            array_task_id=job.array_task_id,
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
                node_list=t.node_name or "",
            )
            for t in tasks
        ],
    )


@router.post("/jobs/cancel/{job_id}", response_model=MessageResponse)
def cancel(
    job_id: JobId, principal: CurrentPrincipal, rt: Runtime = Depends(get_runtime)
) -> MessageResponse:
    """取消作业（幂等）。排队中的作业不再启动；运行中的作业整棵进程树被终止。

    数组主作业号取消整个数组，12_3 只取消一个任务。别的账户的作业视同不存在（404）。
    """

    def cancel_all() -> tuple[list[int], dict[int, transitions.CancelResult | None]]:
        with session_scope(rt.engine) as session:
            ids = [(j.id or 0) for j in load_targets(session, job_id, principal)]
            return ids, {t: transitions.cancel(session, t) for t in ids}

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


def _summary(job: Job) -> JobSummary:
    return JobSummary(
        job_id=job.id or 0,
        name=job.name,
        account=job.account,
        state=job.state,
        allocated_cpus=job.cpus,
        submit_time=iso_utc(job.submit_time),
        start_time=iso_utc(job.start_time),
    )


@router.get("/jobs", response_model=JobListResponse)
def list_jobs(
    principal: CurrentPrincipal,
    rt: Runtime = Depends(get_runtime),
    state: Annotated[list[JobState] | None, Query(description="按状态过滤，可重复")] = None,
    account: Annotated[str | None, Query(max_length=255, description="只看该账户")] = None,
    partition: Annotated[str | None, Query(max_length=100, description="只看该分区")] = None,
    name: Annotated[str | None, Query(max_length=255, description="只看该作业名")] = None,
    array_job_id: Annotated[int | None, Query(ge=1, description="只列某个作业数组的任务")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="每页最多多少个")] = 100,
    cursor: Annotated[int | None, Query(ge=1, description="上一页返回的 next_cursor")] = None,
) -> JobListResponse:
    """作业列表（新增接口）：按过滤条件、最新在前；以作业 id 为游标分页，翻页期间新提交的作业不会打乱顺序。"""
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)  # type: ignore[union-attr]
    if state:
        query = query.where(Job.state.in_([s.value for s in state]))  # type: ignore[attr-defined]
    filters = ((Job.account, account), (Job.partition, partition), (Job.name, name))
    for column, value in (*filters, (Job.array_job_id, array_job_id)):
        if value is not None:
            query = query.where(column == value)
    if cursor is not None:
        query = query.where(Job.id < cursor)  # type: ignore[operator]
    if not principal.admin:
        query = query.where(Job.account == principal.account)  # 账户令牌只看到自己的作业
    with session_scope(rt.engine) as session:
        jobs = list(session.exec(query))
        reasons = _reasons(session, jobs[:limit], rt)
    page = jobs[:limit]
    next_cursor = str(page[-1].id) if len(jobs) > limit else None
    return JobListResponse(
        jobs=[
            JobListItem(
                **_summary(j).model_dump(),
                partition=j.partition,
                node_list=j.node_name or "",
                end_time=iso_utc(j.end_time),
                elapsed_time=_elapsed(j),
                exit_code=j.exit_code,
                state_reason=reasons.get(j.id or 0),
                priority=j.priority,
                array_job_id=j.array_job_id,
                array_task_id=j.array_task_id,
            )
            for j in page
        ],
        next_cursor=next_cursor,
    )


@router.get("/dashboard", response_model=DashboardResponse)
def dashboard(principal: CurrentPrincipal, rt: Runtime = Depends(get_runtime)) -> DashboardResponse:
    """作业统计、资源使用与节点信息：数字来自 PostgreSQL 与存活的 Ray 集群。

    账户令牌看到的作业统计与作业列表只含自己的作业；资源与节点是整个集群的（同 sinfo）。"""
    mine = None if principal.admin else principal.account
    with session_scope(rt.engine) as session:
        if mine is None:  # 整个集群：触发器维护的计数，不扫描 jobs
            counts = job_figures(session).counts
        else:
            counts = {
                r.state: r.n
                for r in session.execute(
                    text("SELECT state, COUNT(*) AS n FROM jobs WHERE account = :a GROUP BY state"),
                    {"a": mine},
                )
            }
        used = {node: int(cpus) for node, (cpus, _) in transitions.held_by_node(session).items()}
        recent = {
            state: list(
                session.exec(
                    select(Job)
                    .where(Job.state == state, *([Job.account == mine] if mine else []))
                    .order_by(Job.id.desc())  # type: ignore[union-attr]
                    .limit(RECENT)
                )
            )
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
        running_jobs=[_summary(j) for j in recent[JobState.RUNNING]],
        pending_jobs=[_summary(j) for j in recent[JobState.PENDING]],
    )


@router.get("/health")
def health(rt: Runtime = Depends(get_runtime)) -> JSONResponse:
    """检查 PostgreSQL、Ray 与调度器；任何一项不可用（调度器能应答但报告不健康也算）即 503 并指明哪一项。"""
    components: dict[str, dict] = {}
    checks = {
        "postgres": lambda: ping(rt.engine),
        "ray": lambda: {"alive_nodes": sum(1 for n in rt.cluster.nodes() if n.alive)},
        "scheduler": lambda: rt.cluster.scheduler_status(),
    }
    for name, check in checks.items():
        try:
            info = check()
            components[name] = {"status": "up", **(info or {})}
        except Exception as exc:  # noqa: BLE001 - 健康检查要报告任何故障
            components[name] = {"status": "down", "error": str(exc) or type(exc).__name__}
    scheduler = components["scheduler"]
    if scheduler["status"] == "up" and scheduler.get("healthy") is False:
        # 调度器能应答却不在干活（主循环已退出、停滞、节点列表读不到）：同样算不可用
        scheduler["status"] = "down"
        scheduler["error"] = "；".join(scheduler.get("problems") or ["调度器报告不健康"])
    agents = _agents_component(components["scheduler"].pop("agents_health", None))
    if agents is not None:
        components["agents"] = agents
    down = [name for name, c in components.items() if c["status"] != "up"]
    body = {
        "status": "healthy" if not down else "unhealthy",
        "components": components,
        "dashboard_url": rt.cluster.dashboard_url(),
    }
    if down:
        body["detail"] = "不可用的组件：" + "、".join(down)
    return JSONResponse(status_code=503 if down else 200, content=body)


def _agents_component(health: dict | None) -> dict | None:
    """各节点代理的结局上报器：有结局写不进数据库即 down（那些作业会一直 RUNNING、占着 CPU）。

    代理暂时无响应只报告、不算 down（新节点的代理可能正在启动）。调度器不可用时无从得知，省略。
    /health 不需认证：只给错误的类名，不给消息（可能含数据库地址与用户名），细节见 conductor doctor。"""
    if health is None:
        return None
    nodes: dict[str, dict] = {}
    failing = []
    for node_id, h in health.items():
        reporter = h.get("reporter") if h.get("reachable", True) else None
        if reporter is None:
            nodes[node_id] = {"reachable": False}
            continue
        keys = ("ok", "pending", "failures", "error_kind", "since")
        nodes[node_id] = {k: reporter.get(k) for k in keys}
        if reporter.get("ok") is False:
            failing.append(
                f"节点 {node_id[:8]} 的代理有 {reporter.get('pending')} 个作业结局写不进数据库"
                f"（{reporter.get('error_kind')}）"
            )
    component: dict = {"status": "down" if failing else "up", "nodes": nodes}
    if failing:
        component["error"] = "；".join(failing)
    return component
