"""探活语句：健康检查与 conductor doctor 用它确认 PostgreSQL 能执行语句。"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session


def select_one(session: Session) -> None:
    """SELECT 1。"""
    session.execute(text("SELECT 1"))


def select_one_raw(dbapi_conn: Any) -> None:
    """在驱动（DBAPI）连接上 SELECT 1：连接池取出连接时探活用，此时还没有 SQLAlchemy 会话。"""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()
