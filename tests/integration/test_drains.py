"""节点排空的存储与调度轮（真实 PostgreSQL，没有 Ray）：node_drains 的读写，调度轮按节点名跳过排空的节点。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.cycle import ReadyNode, SchedulingCycle
from conductor.db import make_engine, session_scope
from conductor.policy import NodeView
from conductor.settings import Settings
from conductor.store import drains
from harness.rows import insert_job

NODES = [
    ReadyNode(NodeView(f"id-{n}", n, 2, 4 << 30), agent_id=f"agent-{n}", host="10.0.0.1")
    for n in ("a", "b")
]


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def clean(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))
        conn.execute(text("DELETE FROM node_drains"))


def test_drain_records_reason_user_and_time_and_redrain_rewrites_the_reason(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        drains.drain(session, ["a"], "换内存", "root")
    with session_scope(engine) as session:
        first = drains.all_drains(session)["a"]
        drains.drain(session, ["a"], "换风扇", "alice")
    with session_scope(engine) as session:
        found = drains.all_drains(session)
        assert drains.drained_names(session) == {"a"}
    again = found["a"]
    assert (first.reason, first.by) == ("换内存", "root") and first.since.tzinfo is not None
    assert (again.reason, again.by) == ("换风扇", "alice") and again.since >= first.since


def test_resume_returns_only_nodes_that_were_drained(engine: Engine) -> None:
    with session_scope(engine) as session:
        drains.drain(session, ["a"], "x", "root")
    with session_scope(engine) as session:
        assert drains.resume(session, ["a", "b"]) == ["a"]
    with session_scope(engine) as session:
        assert drains.resume(session, ["a"]) == []
        assert drains.all_drains(session) == {}


def test_the_cycle_places_nothing_on_a_drained_node(database_url: str, engine: Engine) -> None:
    with session_scope(engine) as session:
        drains.drain(session, ["a"], "维护", "root")
    with engine.begin() as conn:
        jobs = [insert_job(conn) for _ in range(3)]
        pinned = insert_job(conn, required_nodes="ARRAY['a']")
    cycle = SchedulingCycle(engine, Settings(database_url=database_url), 1)
    result = cycle.run(NODES)
    placed = {r["id"]: r["node_id"] for r in result.claimed}
    assert set(placed.values()) == {"id-b"} and len(placed) == 2  # b 只有 2 个 CPU
    with engine.connect() as conn:
        reasons = dict(
            conn.execute(text("SELECT id, state_reason FROM jobs WHERE state = 'PENDING'")).all()
        )
    assert reasons[pinned] == "ReqNodeNotAvail"
    assert set(reasons) == {pinned, *(set(jobs) - set(placed))}
    with session_scope(engine) as session:
        drains.resume(session, ["a"])
    resumed = cycle.run(NODES)
    assert {r["node_id"] for r in resumed.claimed} == {"id-a"}
    assert pinned in {r["id"] for r in resumed.claimed}
