"""API 请求对 jobs 表的读写：按引用取作业、作业列表与总览、等待原因所需的占用计数、挂起与修改。

状态的改变（取消）在 store/transitions.py；这里的写入只动排队中作业的属性（挂起、优先级、时限）。
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from sqlalchemy import and_, or_, text
from sqlmodel import Session, select

from conductor.models import Job
from conductor.resources import Resources
from conductor.states import JobState
from conductor.store.transitions import HOLDING


class Keep(Enum):
    """“不修改”的标记：与 None（不限时）区分开。"""

    KEEP = "keep"


KEEP = Keep.KEEP


def job(session: Session, job_id: int) -> Job | None:
    """按作业号取作业。"""
    return session.get(Job, job_id)


def array_task(session: Session, array_job_id: int, task: int) -> Job | None:
    """数组 array_job_id 的下标为 task 的任务。"""
    return session.exec(
        select(Job).where(Job.array_job_id == array_job_id, Job.array_task_id == task)
    ).first()


def array_tasks(session: Session, array_job_id: int) -> list[Job]:
    """数组的全部任务，按下标排序。"""
    return list(
        session.exec(
            select(Job).where(Job.array_job_id == array_job_id).order_by(Job.array_task_id)  # type: ignore[arg-type]
        )
    )


def page(
    session: Session,
    *,
    states: Sequence[JobState] | None,
    filters: Sequence[tuple[Any, object | None]],
    before: int | None,
    limit: int,
    refs: Sequence[tuple[int, int | None]] | None = None,
    users: Sequence[str] | None = None,
    service_user: str | None = None,
) -> list[Job]:
    """作业列表的一页（最新在前）：states 为空不按状态过滤；filters 为 (列, 值)，值为 None 的跳过；
    before 为游标（只要更早的作业号）。多读一行，调用者据此判断还有没有下一页。

    refs 为作业引用 (作业号, 数组下标)：只列这些（同 squeue -j：数组主作业号列出全部任务，12_3 只列
    那一个）；users 为 Unix 用户：只列以这些用户运行的作业，未映射用户的作业算作 service_user 的。"""
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)  # type: ignore[union-attr]
    if refs:
        wanted = []
        for job_id, task in refs:
            if task is None:
                wanted.append(or_(Job.id == job_id, Job.array_job_id == job_id))  # type: ignore[arg-type]
            else:
                wanted.append(and_(Job.array_job_id == job_id, Job.array_task_id == task))  # type: ignore[arg-type]
        query = query.where(or_(*wanted))
    if users:
        by_user = Job.run_as_user.in_(list(users))  # type: ignore[union-attr]
        if service_user is not None and service_user in users:
            by_user = or_(by_user, Job.run_as_user.is_(None))  # type: ignore[union-attr]
        query = query.where(by_user)
    if states:
        query = query.where(Job.state.in_([s.value for s in states]))  # type: ignore[attr-defined]
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(Job.id < before)  # type: ignore[operator]
    return list(session.exec(query))


def account_counts(session: Session, account: str) -> dict[str, int]:
    """一个账户各状态的作业数（扫描该账户的作业；整个集群的计数读 job_stats）。"""
    rows = session.execute(
        text("SELECT state, COUNT(*) AS n FROM jobs WHERE account = :a GROUP BY state"),
        {"a": account},
    )
    return {r.state: r.n for r in rows}


def recent(session: Session, state: JobState, account: str | None, n: int) -> list[Job]:
    """某状态最新的 n 个作业（account 非空时只看该账户）。"""
    return list(
        session.exec(
            select(Job)
            .where(Job.state == state, *([Job.account == account] if account else []))
            .order_by(Job.id.desc())  # type: ignore[union-attr]
            .limit(n)
        )
    )


def held_by_node(session: Session) -> dict[str, Resources]:
    """各节点仍被占用的资源向量（CPU、内存字节、GPU 与各通用资源）。

    /dashboard 与 /metrics 读同一本账，资源账只从数据库推导；每种资源一行，新增资源不改这里。"""
    rows = session.execute(
        text(
            "SELECT n.node, r.name, SUM(r.amount) AS amount FROM jobs "
            # 多节点作业在分配的每个节点上各占一份；没有分配列表的旧行只占 node_id
            "CROSS JOIN LATERAL jsonb_array_elements_text("
            "COALESCE(node_ids, jsonb_build_array(node_id))) AS n(node) "
            "CROSS JOIN LATERAL ("
            "VALUES ('CPU', cpus::float8), ('memory', memory_bytes::float8), ('GPU', gpus::float8) "
            "UNION ALL SELECT key, value::float8 FROM jsonb_each_text(gres)"
            f") AS r(name, amount) WHERE {HOLDING} GROUP BY n.node, r.name"
        )
    )
    amounts: dict[str, dict[str, float]] = {}
    for r in rows:
        amounts.setdefault(r.node, {})[r.name] = float(r.amount)
    return {node: Resources(held) for node, held in amounts.items()}


def account_usage(session: Session, accounts: Sequence[str]) -> dict[str, tuple[int, int, float]]:
    """这些账户仍占用资源的 (作业数, CPU 数, GPU 数)：多节点作业按每节点的量 × 节点数计。"""
    rows = session.execute(
        text(
            "SELECT account, COUNT(*) AS n, SUM(cpus * nodes) AS cpus, SUM(gpus * nodes) AS gpus "
            "FROM jobs "
            f"WHERE {HOLDING} AND account = ANY(:accounts) GROUP BY account"
        ),
        {"accounts": list(accounts)},
    )
    return {r.account: (r.n, int(r.cpus), float(r.gpus or 0)) for r in rows}


def array_running(session: Session, arrays: Sequence[int]) -> dict[int, int]:
    """这些数组仍占用资源的任务数。"""
    rows = session.execute(
        text(
            "SELECT array_job_id, COUNT(*) AS n FROM jobs "
            f"WHERE {HOLDING} AND array_job_id = ANY(:arrays) GROUP BY array_job_id"
        ),
        {"arrays": list(arrays)},
    )
    return {r.array_job_id: r.n for r in rows}


def set_held(session: Session, job_ids: Sequence[int], held: bool) -> list[int]:
    """挂起或放行排队中的作业；返回状态确实改变的作业 id（只有 PENDING 的作业能挂起）。"""
    rows = session.execute(
        text(
            "UPDATE jobs SET held = :held WHERE id = ANY(:ids) AND state = 'PENDING' "
            "AND held <> :held RETURNING id"
        ),
        {"ids": list(job_ids), "held": held},
    )
    return [r[0] for r in rows]


def update_pending(
    session: Session,
    job_id: int,
    priority: int | None,
    queue_rank: float | None,
    time_limit: int | None | Keep = KEEP,
) -> bool:
    """修改排队中作业的优先级（连同排序键）或时限；作业已不在排队返回 False。

    priority 为 None 不修改优先级；time_limit 为 KEEP 不修改时限，为 None 改为不限时。
    """
    sets = []
    params: dict[str, object] = {"id": job_id}
    if priority is not None:
        sets += ["priority = :priority", "queue_rank = :rank"]
        params |= {"priority": priority, "rank": queue_rank}
    if time_limit is not KEEP:
        sets.append("time_limit_seconds = :limit")
        params["limit"] = time_limit
    if not sets:
        return True
    row = session.execute(
        text(
            f"UPDATE jobs SET {', '.join(sets)} WHERE id = :id AND state = 'PENDING' RETURNING id"
        ),
        params,
    ).first()
    return row is not None
