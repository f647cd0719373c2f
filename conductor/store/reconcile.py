"""对账的读取：数据库中仍占用资源的全部作业（调度器对账、conductor doctor 与 retire-actors 共用）。"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlmodel import Session

from conductor.store.transitions import HOLDING

# claimed_for：认领至今的秒数（数据库时钟），运行期对账据此只处理认领已久的作业
_HELD = text(
    "SELECT id, state, node_id, node_name, agent_id, token, node_host, "
    "EXTRACT(EPOCH FROM clock_timestamp() - COALESCE(start_time, submit_time)) "
    f"AS claimed_for FROM jobs WHERE {HOLDING}"
)


def held_jobs(session: Session) -> Sequence[Row[Any]]:
    """仍占用资源的作业（RUNNING，或已取消但执行尚未结束）。"""
    return session.execute(_HELD).all()
