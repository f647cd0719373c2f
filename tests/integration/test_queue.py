"""读窗口（真实 PostgreSQL）：每个分区各读自己的队首，合并后仍是队列顺序。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.db import make_engine, session_scope
from conductor.store import queue
from harness.rows import insert_pending


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def test_each_partition_reads_its_own_head_and_the_merge_keeps_queue_order(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        insert_pending(conn, 30)  # 默认分区的长队
        insert_pending(conn, 2)
        for statement in (
            "UPDATE jobs SET partition = 'gpu', queue_rank = -id WHERE id > 30",
            "UPDATE jobs SET queue_rank = id WHERE id <= 30",
            "UPDATE jobs SET account = 'capped' WHERE id IN (1, 2)",
        ):
            conn.execute(text(statement))
    with session_scope(engine) as s:
        window = queue.load_pending(s, {"default": 5, "gpu": 5, "idle": 5}, ["capped"], [])
    # gpu 的两个排在最前（优先级高）；默认分区跳过已到上限的账户，读 5 个
    assert [(j.job_id, j.partition) for j in window] == [
        (32, "gpu"),
        (31, "gpu"),
        (3, "default"),
        (4, "default"),
        (5, "default"),
        (6, "default"),
        (7, "default"),
    ]


def test_window_skips_a_saturated_account_along_the_index(engine: Engine) -> None:
    """一个已到上限的账户占了整个队列（统计信息是新的）：仍沿索引读各分区，不为每个分区各扫一遍整个表。"""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))
        insert_pending(conn, 20_000)
        conn.execute(text("ANALYZE jobs"))
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                text("EXPLAIN " + queue._PENDING.text),
                {"partitions": ["default", "gpu"], "limits": [108, 108], "accounts": ["bench"],
                 "arrays": []},
            )
        )  # fmt: skip
    assert "ix_jobs_queue" in plan, plan
    assert "Seq Scan on jobs" not in plan, plan
