"""探活语句：健康检查与 conductor doctor 用它确认 PostgreSQL 能执行语句。"""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session


def select_one(session: Session) -> None:
    """SELECT 1。"""
    session.execute(text("SELECT 1"))
