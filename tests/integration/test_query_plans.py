"""热路径语句在统计信息过期时的执行计划（真实 PostgreSQL）。

一次提交大量作业（大数组、批量提交）之后，到自动 ANALYZE 之前，统计信息仍说“排队作业很少”。
认领若按部分索引 ix_jobs_queue 找行，就要把整个队列扫一遍（10 万排队时每次认领约 0.25 秒，
调度器因此每秒只能派发几十个作业）；它必须按主键逐个找。
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor import transitions
from conductor.db import make_engine
from tests.helpers import insert_pending

QUEUED = 20_000


@pytest.fixture(scope="module")
def stale_engine(database_url: str) -> Iterator[Engine]:
    """空表时 ANALYZE，再插入大量排队作业：统计信息停留在“几乎没有排队作业”。"""
    eng = make_engine(database_url)
    with eng.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
        insert_pending(conn, QUEUED)
    yield eng
    eng.dispose()


def _plan(engine: Engine, statement: str, params: dict) -> str:
    with engine.connect() as conn:
        rows = conn.execute(text("EXPLAIN " + statement), params)
        return "\n".join(r[0] for r in rows)


def test_claim_finds_rows_by_primary_key_even_with_stale_statistics(
    stale_engine: Engine,
) -> None:
    with stale_engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM jobs ORDER BY id DESC LIMIT 8")).scalars())
    n = len(ids)
    plan = _plan(
        stale_engine,
        transitions._CLAIM.text,
        {
            "ids": ids,
            "nodes": ["n"] * n,
            "names": ["n"] * n,
            "tokens": ["t"] * n,
            "agents": ["a"] * n,
            "hosts": ["h"] * n,
            "epoch": 1,
        },
    )
    assert "jobs_pkey" in plan, plan
    assert "ix_jobs_queue" not in plan, plan
