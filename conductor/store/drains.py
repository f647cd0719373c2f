"""node_drains 表的读写（排空的节点，规则见 conductor/drains.py）。"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlmodel import Session

from conductor.drains import Drain

_DRAIN = text(
    "INSERT INTO node_drains (node_name, reason, drained_by) "
    "SELECT name, :reason, :by FROM unnest(CAST(:names AS text[])) AS name "
    # 已在排空的节点只更新原因（同 Slurm：再次 DRAIN 改写 Reason），开始时刻与操作者记最新一次
    "ON CONFLICT (node_name) DO UPDATE SET reason = EXCLUDED.reason, "
    "drained_by = EXCLUDED.drained_by, since = now()"
)
_RESUME = text(
    "DELETE FROM node_drains WHERE node_name = ANY(CAST(:names AS text[])) RETURNING node_name"
)
_ALL = text("SELECT node_name, reason, drained_by, since FROM node_drains ORDER BY node_name")
_NAMES = text("SELECT node_name FROM node_drains")


def drain(session: Session, names: Sequence[str], reason: str, by: str) -> None:
    """排空这些节点（已排空的改写原因）。"""
    session.execute(_DRAIN, {"names": list(names), "reason": reason, "by": by})


def resume(session: Session, names: Sequence[str]) -> list[str]:
    """解除排空；返回其中确实在排空的节点名。"""
    return sorted(r[0] for r in session.execute(_RESUME, {"names": list(names)}))


def all_drains(session: Session) -> dict[str, Drain]:
    """全部排空的节点：节点名 → 排空记录。"""
    return {r[0]: Drain(r[0], r[1], r[2], r[3]) for r in session.execute(_ALL)}


def drained_names(session: Session) -> frozenset[str]:
    """排空的节点名（调度轮每轮读一次：表很小）。"""
    return frozenset(r[0] for r in session.execute(_NAMES))
