"""节点代理上任时的读取：前任留下的执行的令牌（孤儿进程按令牌清理）与令牌对应的作业。"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlmodel import Session

# 新代理上任时要清理的令牌：本节点上不归它的、仍占用资源的执行（随前任死亡），以及本节点
# （或同一地址的旧节点）上最近以 FAILED/NODE_FAIL/CANCELLED 结束、不归它的执行（已被对账或
# doctor 判为丢失，孤儿进程可能还在）。两半分开查，各走各的索引
_ORPHANS = text(
    """
    SELECT token FROM jobs
    WHERE node_id = :node AND released_at IS NULL AND token IS NOT NULL
          AND agent_id IS DISTINCT FROM :agent
    UNION
    (SELECT token FROM jobs
     WHERE state IN ('FAILED', 'NODE_FAIL', 'CANCELLED') AND released_at IS NOT NULL
           AND token IS NOT NULL AND agent_id IS DISTINCT FROM :agent
           AND (node_id = :node OR node_host = :host)
           AND end_time > clock_timestamp() - make_interval(secs => :window)
     ORDER BY end_time DESC LIMIT :limit)
    """
)


def orphan_tokens(
    session: Session, node_id: str, host: str, agent_id: str, window: float, limit: int = 1000
) -> list[str]:
    """随本节点的前任代理丢失的执行的令牌（新代理据此按令牌清理孤儿进程）。

    window 为“最近结束”的秒数；limit 限制后一半的条数，免得繁忙节点上的一次启动扫描太多。"""
    rows = session.execute(
        _ORPHANS,
        {"node": node_id, "host": host, "agent": agent_id, "window": window, "limit": limit},
    )
    return [r[0] for r in rows]


def jobs_by_token(session: Session, tokens: Sequence[str]) -> dict[str, int]:
    """令牌 → 作业 id（只含本库认识的令牌；别的 Conductor 实例的令牌不在其中）。"""
    if not tokens:
        return {}
    rows = session.execute(
        text("SELECT token, id FROM jobs WHERE token = ANY(:tokens)"), {"tokens": list(tokens)}
    )
    return {r.token: r.id for r in rows}
