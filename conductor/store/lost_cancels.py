"""节点代理的兜底检查：取消消息丢失时，从数据库找出手中已被取消、却仍在运行的作业。"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlmodel import Session

_CANCELLED_AMONG = text("SELECT id FROM jobs WHERE id = ANY(:ids) AND state = 'CANCELLED'")


def cancelled_among(session: Session, job_ids: Sequence[int]) -> list[int]:
    """job_ids 中已记为 CANCELLED 的作业。"""
    rows = session.execute(_CANCELLED_AMONG, {"ids": list(job_ids)})
    return [r[0] for r in rows]


# 代理手中的执行已不该存在：作业已取消、已重新排队（PENDING），或已被另一次执行认领（令牌变了）
_STALE_AMONG = text(
    "SELECT jobs.id FROM jobs "
    "JOIN unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[])) AS v(id, token) "
    "ON jobs.id = v.id "
    "WHERE jobs.state IN ('CANCELLED', 'PENDING') OR jobs.token IS DISTINCT FROM v.token"
)


def stale_among(session: Session, runs: Sequence[tuple[int, str]]) -> list[int]:
    """runs 为 (作业 id, 该次执行的令牌)：返回其中应当终止的（已取消、已重新排队或已换了令牌）。

    重新排队的停止消息丢失时，代理据此终止旧执行，新执行才能在资源归还后开始。"""
    if not runs:
        return []
    rows = session.execute(
        _STALE_AMONG, {"ids": [r[0] for r in runs], "tokens": [r[1] for r in runs]}
    )
    return [r[0] for r in rows]
