"""按作业引用（“12” 或数组任务 “12_3”）取作业；数组主作业号指整个数组。

别的账户的作业与不存在的作业一样是 404，不泄露是否存在。
"""

from __future__ import annotations

from sqlmodel import Session

from conductor.arrays import parse_job_ref
from conductor.auth import Principal
from conductor.errors import InvalidJobRequest, JobNotFound
from conductor.models import Job
from conductor.store import jobs as store


def job_ref(value: str) -> tuple[int, int | None]:
    try:
        return parse_job_ref(value)
    except ValueError as exc:
        raise InvalidJobRequest("job_id", str(exc)) from exc


def load_job(session: Session, value: str, principal: Principal) -> Job:
    """引用所指的那一个作业（数组主作业号即第一个任务）；不存在或看不到 404。"""
    job_id, task = job_ref(value)
    job = store.job(session, job_id) if task is None else store.array_task(session, job_id, task)
    if job is None or not principal.can_access(job.account):
        raise JobNotFound(f"作业 {value} 不存在")
    return job


def whole_array(session: Session, job: Job, value: str) -> list[Job] | None:
    """引用的是整个数组（写的是主作业号，不是 12_3 这样的单个任务）时为它的全部任务，否则 None。

    数组的任务属于同一账户，看得到主作业就看得到全部任务。"""
    if job.array_job_id is None or job.id != job.array_job_id or "_" in value:
        return None
    return store.array_tasks(session, job.array_job_id)


def load_targets(session: Session, value: str, principal: Principal) -> list[Job]:
    """操作（取消、挂起、放行、修改）的对象：数组主作业号为全部任务，否则为那一个作业。"""
    job = load_job(session, value, principal)
    return whole_array(session, job, value) or [job]
