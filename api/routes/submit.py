"""提交作业：POST /jobs/submit 与 /jobs/submit/batch。

校验请求、展开数组、检查依赖引用的作业存在，一个事务写入全部作业，提交后才唤醒调度器。
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlmodel import Session

from api.deps import PrincipalDep, RuntimeDep
from api.runtime import Runtime
from api.schemas import BatchSubmitRequest, BatchSubmitResponse, SubmitRequest, SubmitResponse
from conductor.admission import (
    check_can_ever_run,
    check_limits,
    check_request_total,
    confine,
    resolve_run_as,
    stored_bytes,
)
from conductor.arrays import (
    MAX_SHORT_NAME,
    check_filename,
    defer_node,
    expand_filename,
    expand_node,
    needs_node,
    parse_array,
)
from conductor.auth import Principal
from conductor.db import session_scope
from conductor.dependencies import DepState
from conductor.errors import Forbidden, InvalidJobRequest
from conductor.models import Job
from conductor.policy import NodeView
from conductor.priority import queue_rank
from conductor.request import ResourceFields, normalize
from conductor.resolver import checked_dependency
from conductor.signalspec import parse_signal_spec
from conductor.timefmt import parse_time_limit

router = APIRouter()
# 日志路径列的长度（jobs.stdout_path / stderr_path）：展开 %x 等之后超过它的路径在提交时 422
PATH_COLUMN = 2048


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
    r = normalize(
        ResourceFields(
            ntasks_per_node=p.ntasks_per_node,
            cpus_per_task=p.cpus_per_task,
            tasks=p.tasks,
            nodes=p.nodes,
            memory_per_node=p.memory_per_node,
            memory_per_cpu=p.memory_per_cpu,
            tres_per_node=p.tres_per_node,
            tres_per_job=p.tres_per_job,
            tres_per_task=p.tres_per_task,
            cpus_per_tres=p.cpus_per_tres,
            memory_per_tres=p.memory_per_tres,
            constraints=p.constraints,
            required_nodes=p.required_nodes,
            excluded_nodes=p.excluded_nodes,
            given=frozenset(p.model_fields_set),
        )
    )
    signal = None if p.signal is None else parse_signal_spec(p.signal)
    now = datetime.now(UTC)
    return Job(
        name=p.name,
        account=p.account,
        partition=partition.name,
        script=req.script,
        environment=p.environment,
        script_args=p.argv,
        work_dir=work_dir,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        run_as_user=run_as_user,
        ntasks_per_node=r.ntasks_per_node,
        cpus_per_task=r.cpus_per_task,
        cpus=r.cpus,
        memory_bytes=r.memory_bytes,
        ntasks=r.ntasks,
        nodes=r.nodes,
        gpus=r.gpus,
        gpu_type=r.gpu_type,
        gres=r.gres,
        whole_node_memory=r.whole_node_memory,
        constraints=r.constraints,
        required_nodes=r.required_nodes,
        excluded_nodes=r.excluded_nodes,
        slurm_request=r.slurm_request,
        time_limit_seconds=time_limit,
        exclusive=p.exclusive,
        submit_time=now,
        eligible_time=now,
        priority=p.priority,
        queue_rank=queue_rank(p.priority, now),
        held=p.hold,
        requeue=p.requeue,
        open_mode=p.open_mode,
        signal_number=None if signal is None else signal.number,
        signal_seconds=None if signal is None else signal.seconds,
        signal_batch=False if signal is None else signal.batch,
    )


def _check_runnable(job: Job, rt: Runtime) -> None:
    """永远无法运行的请求在提交时拒绝（422 点名字段与缺的资源），而不是永远 PENDING。

    每一项资源（CPU、内存、GPU、通用资源）与 -w/-x/-C、GPU 型号都由 admission 按存活节点判断，
    自动扩缩容的集群还加上各节点类型能扩出的节点（rt.potential）。"""
    partitions = rt.partitions
    nodes = [
        NodeView(
            n.node_id,
            n.node_name,
            n.total_cpus,
            n.total_memory,
            partitions.node_partitions(n.labels, n.resources),
            gpus=n.total_gpus,
            custom=n.gres,
            features=n.features,
        )
        for n in rt.cluster.nodes()
        if n.alive
    ]
    check_can_ever_run(job, nodes + rt.potential)


def _expand(req: SubmitRequest, rt: Runtime, principal: Principal, session: Session) -> list[Job]:
    """一个提交请求 → 一个作业，或数组的每个任务一个作业（依赖在这里查被依赖作业是否存在）。"""
    job = _job_from_request(req, rt, principal)
    _check_runnable(job, rt)
    if req.job.dependency is not None:
        try:
            dep = checked_dependency(
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
        size += tasks * stored_bytes(req.script, p.environment, *texts, p.standard_error, *p.argv)
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


def _output_path(
    pattern: str, names: dict[str, Any], field: str, rt: Runtime
) -> tuple[str, str | None]:
    """展开输出文件名模式，返回 (路径, 含 %N 时留待认领时展开的模式)。

    展开后过长（%x 可重复多次）时 422，不让数据库报错；%N 按最长的短主机名估算。"""
    node_pattern = None
    if needs_node(pattern):
        node_pattern = defer_node(pattern, **names)
        if len(node_pattern) > PATH_COLUMN:
            raise InvalidJobRequest(
                field, f"{field}：展开后的模式有 {len(node_pattern)} 个字符，超过上限 {PATH_COLUMN}"
            )
        # 节点名要到认领时才知道：先按最长的短主机名检查长度与目录限定，入库的路径暂留 %N
        longest = expand_node(node_pattern, "n" * MAX_SHORT_NAME)
        if len(longest) > PATH_COLUMN:
            raise InvalidJobRequest(
                field,
                f"{field}：%N 展开后的路径可能有 {len(longest)} 个字符，超过上限 {PATH_COLUMN}",
            )
        if rt.settings.work_root is not None:
            confine(longest, rt.settings.work_root, field)
        return expand_node(node_pattern, "%N"), node_pattern
    path = expand_filename(pattern, **names)
    if len(path) > PATH_COLUMN:
        raise InvalidJobRequest(
            field, f"{field}：展开后的路径有 {len(path)} 个字符，超过上限 {PATH_COLUMN}"
        )
    if rt.settings.work_root is not None:
        # %x、%u 展开后可能带出 “/..”：展开后再限定一次
        path = confine(path, rt.settings.work_root, field)
    return path, None


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
        j.stdout_path, j.stdout_pattern = _output_path(
            j.stdout_path, names, "job.standard_output", rt
        )
        j.stderr_path, j.stderr_pattern = _output_path(
            j.stderr_path, names, "job.standard_error", rt
        )


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
def submit(req: SubmitRequest, principal: PrincipalDep, rt: RuntimeDep) -> SubmitResponse:
    """提交作业：校验、写入 PostgreSQL 并提交事务后才返回 201，然后唤醒调度器。

    令牌只能以自己的账户提交（403）。数组作业返回主作业号（第一个任务的作业号）。
    """
    return SubmitResponse(job_id=_persist(rt, principal, [req])[0])


@router.post("/jobs/submit/batch", status_code=201, response_model=BatchSubmitResponse)
def submit_batch(
    req: BatchSubmitRequest, principal: PrincipalDep, rt: RuntimeDep
) -> BatchSubmitResponse:
    """批量提交（新增接口）：任何一个作业无效则整批 422、什么也不保存。"""
    return BatchSubmitResponse(job_ids=_persist(rt, principal, list(req.jobs)))
