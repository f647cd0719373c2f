"""依赖复查的读取与写回：刚开始或结束的作业、它们的等待者、轮转复查的一批、被依赖作业的状态。

判定本身（conductor/dependencies.py 的纯函数）与游标的推进在 conductor/resolver.py；
这里只有语句，每条写明它走哪个索引、为什么这样写。
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlmodel import Session

from conductor.models import CHANGED, CHANGED_AT, DEPENDENT, SINGLETON_DEPENDENT, WAITING
from conductor.states import TERMINAL_STATES

_TERMINAL = [s.value for s in TERMINAL_STATES]

_WAITING_COLUMNS = "SELECT id, name, account, dependency FROM jobs WHERE "
# 自游标以来开始或结束的作业（ix_jobs_changed）
_CHANGED = text(
    f"SELECT id, array_job_id, name, account, {CHANGED_AT} AS at, now() AS now FROM jobs "
    f"WHERE {CHANGED} AND {CHANGED_AT} >= COALESCE(:since, now() - :lookback) "
    f"ORDER BY {CHANGED_AT} LIMIT :n"
)
# 这些作业的等待者：依赖里写了它们的作业号（ix_jobs_dependency_targets），或同名同账户的 singleton。
# 逐个作业号查（LATERAL）：合成一个大数组做 && 时，规划器对 GIN 的估价偏高，几百个作业号起就改为
# 顺序扫描整个表（10 万行时 100 ms 以上）；逐个查每个只是一次索引查找，2,000 个约 3 ms
_DEPENDENTS = text(
    "(SELECT d.* FROM unnest(CAST(:ids AS bigint[])) AS k(id) CROSS JOIN LATERAL "
    f"({_WAITING_COLUMNS}{DEPENDENT} AND dependency_ids @> ARRAY[k.id] LIMIT :n) AS d LIMIT :n) "
    "UNION ALL "
    "(SELECT d.* FROM unnest(CAST(:accounts AS text[]), CAST(:names AS text[])) AS k(account, name) "
    f"CROSS JOIN LATERAL ({_WAITING_COLUMNS}{SINGLETON_DEPENDENT} "
    "AND account = k.account AND name = k.name LIMIT :n) AS d LIMIT :n) LIMIT :n"
)
# 轮转复查：按 id 从游标往后读一批，读到末尾再从头接上（ix_jobs_dependency_waiting）
_SWEEP = text(f"{_WAITING_COLUMNS}{WAITING} AND id > :after ORDER BY id LIMIT :n")
_SWEEP_WRAP = text(f"{_WAITING_COLUMNS}{WAITING} AND id <= :upto ORDER BY id LIMIT :n")


def changed_since(
    session: Session, since: datetime | None, lookback: timedelta, batch: int
) -> Sequence[Row[Any]]:
    """自 since（None 为回看 lookback）以来开始或结束的作业，按时刻排序，至多 batch 行。"""
    return session.execute(_CHANGED, {"since": since, "lookback": lookback, "n": batch}).all()


def dependents(
    session: Session, ids: Sequence[int], pairs: Sequence[tuple[str, str]], batch: int
) -> Sequence[Row[Any]]:
    """依赖写了 ids 中作业号的等待者，以及 (账户, 作业名) 相同的 singleton 等待者。"""
    return session.execute(
        _DEPENDENTS,
        {
            "ids": list(ids),
            "accounts": [a for a, _ in pairs],
            "names": [n for _, n in pairs],
            "n": batch,
        },
    ).all()


def waiting_after(session: Session, after: int, batch: int) -> list[Row[Any]]:
    """轮转复查：id 大于 after 的一批等待者。"""
    return list(session.execute(_SWEEP, {"after": after, "n": batch}).all())


def waiting_upto(session: Session, upto: int, batch: int) -> Sequence[Row[Any]]:
    """轮转复查读到末尾后从头接上：id 不大于 upto 的一批等待者。"""
    return session.execute(_SWEEP_WRAP, {"upto": upto, "n": batch}).all()


def target_states(
    session: Session, job_ids: Sequence[int], account: str | None
) -> Sequence[Row[Any]]:
    """被依赖的作业（或以其为主作业号的数组任务）的 id、数组主作业号与状态；account 非空时只看该账户。"""
    where = "(id = ANY(:ids) OR array_job_id = ANY(:ids))"
    params: dict[str, object] = {"ids": list(job_ids)}
    if account is not None:
        where += " AND account = :account"
        params["account"] = account
    return session.execute(
        text(f"SELECT id, array_job_id, state FROM jobs WHERE {where}"), params
    ).all()


def earlier_unfinished(session: Session, name: str, account: str, job_id: int) -> bool:
    """同名同账户、比 job_id 更早提交的作业还有没结束的（singleton 据此继续等待）。"""
    row = session.execute(
        text(
            "SELECT 1 FROM jobs WHERE name = :name AND account = :account AND id < :id "
            "AND NOT (state = ANY(:terminal)) LIMIT 1"
        ),
        {"name": name, "account": account, "id": job_id, "terminal": _TERMINAL},
    ).first()
    return row is not None


def set_dependency_states(session: Session, states: dict[int, str]) -> None:
    """记录依赖的判定结果（只改仍在等待依赖的排队作业）。"""
    if not states:
        return
    session.execute(
        text(
            """
            UPDATE jobs SET dependency_state = v.dep,
                   eligible_time = CASE WHEN v.dep = 'SATISFIED' THEN clock_timestamp()
                                        ELSE eligible_time END
            FROM unnest(CAST(:ids AS bigint[]), CAST(:deps AS text[])) AS v(id, dep)
            WHERE jobs.id = v.id AND jobs.state = 'PENDING' AND jobs.dependency_state = 'WAITING'
            """
        ),
        {"ids": list(states), "deps": list(states.values())},
    )
