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
