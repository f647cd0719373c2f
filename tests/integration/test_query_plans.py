"""热路径语句在统计信息过期时的执行计划（真实 PostgreSQL）。

一次提交大量作业（大数组、批量提交）之后，到自动 ANALYZE 之前，统计信息仍说“排队作业很少”。
认领若按部分索引 ix_jobs_queue 找行，就要把整个队列扫一遍（10 万排队时每次认领约 0.25 秒，
调度器因此每秒只能派发几十个作业）；它必须按主键逐个找。依赖复查的几条读取各走自己的部分索引。
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.db import make_engine
from conductor.resolver import DEPENDENCY_LOOKBACK
from conductor.store import dependencies, queue, transitions
from harness.rows import insert_pending

QUEUED = 20_000


@pytest.fixture(scope="module")
def stale_engine(database_url: str) -> Iterator[Engine]:
    """空表时 ANALYZE，再插入大量排队作业：统计信息停留在“几乎没有排队作业”。"""
    eng = make_engine(database_url)
    with eng.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
        insert_pending(conn, QUEUED)
        # 一半已结束，另一半中的一半等待依赖（各依赖一个已结束的作业），也都在 ANALYZE 之后
        conn.execute(
            text(
                "UPDATE jobs SET state = 'COMPLETED', start_time = now(), end_time = now() "
                "WHERE id <= :half"
            ),
            {"half": QUEUED // 2},
        )
        conn.execute(
            text(
                "UPDATE jobs SET dependency = 'afterok:' || (id - :half), "
                "dependency_ids = ARRAY[id - :half], dependency_state = 'WAITING' "
                "WHERE id > :half AND id % 2 = 0"
            ),
            {"half": QUEUED // 2},
        )
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
            "memories": [2**33] * n,
            "all_ids": ['["n"]'] * n,
            "all_names": ['["n"]'] * n,
            "epoch": 1,
        },
    )
    assert "jobs_pkey" in plan, plan
    assert "ix_jobs_queue" not in plan, plan


def test_dependency_checks_use_their_partial_indexes_even_with_stale_statistics(
    stale_engine: Engine,
) -> None:
    changed = _plan(
        stale_engine,
        dependencies._CHANGED.text,
        {"since": None, "lookback": DEPENDENCY_LOOKBACK, "n": 1000},
    )
    assert "ix_jobs_changed" in changed, changed
    dependents = _plan(
        stale_engine,
        dependencies._DEPENDENTS.text,
        {"ids": list(range(1, 1001)), "accounts": ["bench"], "names": ["queued"], "n": 1000},
    )
    assert "ix_jobs_dependency_targets" in dependents, dependents
    assert "ix_jobs_singleton_waiting" in dependents, dependents
    assert "Seq Scan" not in dependents, dependents
    with stale_engine.connect() as conn:  # 迁移对比不看存储参数：这里查
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'ix_jobs_dependency_targets'")
        ).scalar_one()
    assert options == ["fastupdate=off"]
    for sweep in (dependencies._SWEEP, dependencies._SWEEP_WRAP):
        plan = _plan(stale_engine, sweep.text, {"after": 0, "upto": QUEUED, "n": 1000})
        assert "ix_jobs_dependency_waiting" in plan, plan


def test_window_reads_each_partition_along_the_queue_index_even_with_stale_statistics(
    stale_engine: Engine,
) -> None:
    plan = _plan(
        stale_engine,
        queue._PENDING.text,
        {"partitions": ["default", "gpu"], "limits": [108, 108], "accounts": [], "arrays": []},
    )
    assert "ix_jobs_queue" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
