"""多节点作业（议题 17）在真实 PostgreSQL 上：认领写下整个分配、调度读取、重新排队、作业步的记录。"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.cycle import ReadyNode, SchedulingCycle
from conductor.db import make_engine, session_scope
from conductor.models import Job
from conductor.policy import NodeView, Placement
from conductor.settings import Settings
from conductor.states import JobState
from conductor.store import jobs as job_store
from conductor.store import queue, steps, transitions
from conductor.store.transitions import Outcome

GIB = 1024**3


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))


def add_job(engine: Engine, **fields: Any) -> int:
    job = Job(
        name="mn",
        account="acct",
        partition="default",
        script="#!/bin/bash\ntrue\n",
        work_dir="/tmp",
        stdout_path="/tmp/o.log",
        stderr_path="/tmp/e.log",
        memory_bytes=fields.pop("memory_bytes", GIB),
        **fields,
    )
    with session_scope(engine) as s:
        s.add(job)
        s.flush()
        assert job.id is not None
        return job.id


def row(engine: Engine, job_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
        )


def claim_gang(engine: Engine, job_id: int, token: str = "tok") -> list[dict]:
    placement = Placement(job_id, "id-a", "a", ("id-a", "id-b"), ("a", "b"))
    with session_scope(engine) as s:
        return transitions.claim(s, [placement], [token], ["agent-a"], 3, ["10.0.0.1"], [GIB])


def test_claim_writes_the_whole_allocation_and_the_batch_node(engine: Engine) -> None:
    gang = add_job(engine, nodes=2, cpus=2)
    single = add_job(engine)
    (got,) = claim_gang(engine, gang)
    assert (got["node_id"], got["node_name"], got["agent_id"], got["node_host"]) == (
        "id-a",
        "a",
        "agent-a",
        "10.0.0.1",
    )
    assert (got["node_ids"], got["node_names"]) == (["id-a", "id-b"], ["a", "b"])
    assert row(engine, gang)["node_ids"] == ["id-a", "id-b"]
    # 单节点作业：一个元素的列表
    with session_scope(engine) as s:
        transitions.claim(s, [Placement(single, "id-c", "c")], ["t2"], ["agent-c"], 3)
    assert (row(engine, single)["node_ids"], row(engine, single)["node_names"]) == (["id-c"], ["c"])


def test_load_running_and_pending_carry_the_node_count(engine: Engine) -> None:
    gang = add_job(engine, nodes=2, cpus=2)
    waiting = add_job(engine, nodes=3, cpus=1)
    claim_gang(engine, gang)
    # 迁移前认领的旧行没有分配列表：只占 node_id
    old = add_job(engine, state=JobState.RUNNING, node_id="id-c", node_name="c")
    with session_scope(engine) as s:
        running = {r.job_id: r for r in queue.load_running(s)}
        pending = queue.load_pending(s, {"default": 10}, [], [])
    assert (running[gang].nodes, running[gang].node_ids) == (2, ("id-a", "id-b"))
    assert (running[old].nodes, running[old].node_ids) == (1, ("id-c",))
    assert [(p.job_id, p.nodes) for p in pending] == [(waiting, 3)]


def test_cycle_claims_a_gang_on_two_nodes_with_the_smallest_memory(
    engine: Engine, database_url: str
) -> None:
    job = add_job(engine, nodes=2, cpus=2, memory_bytes=0, whole_node_memory=True)
    nodes = [
        ReadyNode(NodeView("id-b", "b", 2, 8 * GIB), "agent-b", "10.0.0.2"),
        ReadyNode(NodeView("id-a", "a", 2, 4 * GIB), "agent-a", "10.0.0.1"),
        ReadyNode(NodeView("id-c", "c", 1, 16 * GIB), "agent-c", "10.0.0.3"),
    ]
    result = SchedulingCycle(engine, Settings(database_url=database_url), 5).run(nodes)
    assert [r["id"] for r in result.claimed] == [job]
    got = row(engine, job)
    # 按节点名排序，第一个是批处理节点；c 只有 1 个 CPU，放不下
    assert (got["node_ids"], got["node_names"], got["node_id"]) == (
        ["id-a", "id-b"],
        ["a", "b"],
        "id-a",
    )
    assert (got["agent_id"], got["node_host"]) == ("agent-a", "10.0.0.1")
    assert got["memory_bytes"] == 4 * GIB
    # 两个节点都被占着：再来一个要 2 个节点的作业放不下
    other = add_job(engine, nodes=2, cpus=1)
    again = SchedulingCycle(engine, Settings(database_url=database_url), 5).run(nodes)
    assert again.claimed == [] and row(engine, other)["state"] == "PENDING"


def test_requeue_clears_the_allocation_and_the_steps(engine: Engine) -> None:
    job = add_job(engine, nodes=2)
    claim_gang(engine, job, "t-1")
    with session_scope(engine) as s:
        assert steps.start_step(s, job, "t-1", 0, "hostname", 2, "a,b")
        assert transitions.requeue(s, [(job, "t-1")]) == [job]
    got = row(engine, job)
    assert (got["state"], got["node_ids"], got["node_names"], got["node_id"]) == (
        "PENDING",
        None,
        None,
        None,
    )
    with session_scope(engine) as s:
        assert steps.steps_of(s, [job]) == {job: []}


def test_steps_are_fenced_by_the_claim_token(engine: Engine) -> None:
    job = add_job(engine, nodes=2)
    pending = add_job(engine)
    claim_gang(engine, job, "t-live")
    with session_scope(engine) as s:
        assert steps.start_step(s, job, "t-live", 0, "hostname", 4, "a,b")
        assert steps.start_step(s, job, "t-live", 0, "hostname", 4, "a,b")  # 重试：仍记着
        assert not steps.start_step(s, job, "t-stale", 1, "x", 1, "a")  # 令牌不符
        assert not steps.start_step(s, pending, "t-live", 0, "x", 1, "a")  # 作业不在运行
        assert not steps.finish_step(s, job, "t-stale", 0, "COMPLETED", "0:0")
        assert steps.finish_step(s, job, "t-live", 0, "FAILED", "1:0")
        assert not steps.finish_step(s, job, "t-live", 0, "COMPLETED", "0:0")  # 已结束
        assert steps.start_step(s, job, "t-live", 1, "sleep", 2, "b")
        found = steps.steps_of(s, [job, pending])
    assert found[pending] == []
    first, second = found[job]
    assert (first["step_id"], first["name"], first["state"], first["exit_code"]) == (
        0,
        "hostname",
        "FAILED",
        "1:0",
    )
    assert (first["ntasks"], first["node_list"]) == (4, "a,b")
    assert first["start_time"] is not None and first["end_time"] >= first["start_time"]
    assert (second["step_id"], second["state"], second["end_time"]) == (1, "RUNNING", None)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (JobState.COMPLETED, "CANCELLED"),
        (JobState.TIMEOUT, "CANCELLED"),
        (JobState.NODE_FAIL, "NODE_FAIL"),
    ],
)
def test_steps_still_running_end_with_the_job(
    engine: Engine, state: JobState, expected: str
) -> None:
    job = add_job(engine, nodes=2)
    claim_gang(engine, job, "t-end")
    with session_scope(engine) as s:
        steps.start_step(s, job, "t-end", 0, "done", 2, "a,b")
        steps.finish_step(s, job, "t-end", 0, "COMPLETED", "0:0")
        steps.start_step(s, job, "t-end", 1, "busy", 2, "a,b")
    with session_scope(engine) as s:
        # 迟到的旧执行不动本次的作业步
        transitions.finish(s, [Outcome(job, state, "0:0", None, "t-other")])
        assert steps.steps_of(s, [job])[job][1]["state"] == "RUNNING"
        transitions.finish(s, [Outcome(job, state, "0:0", None, "t-end")])
    with session_scope(engine) as s:
        done, busy = steps.steps_of(s, [job])[job]
    assert done["state"] == "COMPLETED"
    assert busy["state"] == expected and busy["end_time"] == row(engine, job)["end_time"]


def test_a_cancelled_job_closes_its_steps_when_the_execution_ends(engine: Engine) -> None:
    job = add_job(engine, nodes=2)
    claim_gang(engine, job, "t-c")
    with session_scope(engine) as s:
        steps.start_step(s, job, "t-c", 0, "busy", 2, "a,b")
        transitions.cancel(s, job)
    with session_scope(engine) as s:
        # 宽限期内：作业步仍在运行，代理照样能记下它的结束
        assert steps.steps_of(s, [job])[job][0]["state"] == "RUNNING"
        transitions.finish(s, [Outcome(job, JobState.FAILED, "0:15", None, "t-c")])
        assert steps.steps_of(s, [job])[job][0]["state"] == "CANCELLED"


def test_finish_step_refuses_bad_values(engine: Engine) -> None:
    with session_scope(engine) as s:
        with pytest.raises(ValueError, match="不能以 RUNNING 结束"):
            steps.finish_step(s, 1, "t", 0, "RUNNING", "0:0")
        with pytest.raises(ValueError, match="code:signal"):
            steps.finish_step(s, 1, "t", 0, "FAILED", "1")
        with pytest.raises(ValueError, match="非负"):
            steps.start_step(s, 1, "t", -1, "x", 1, "a")


def test_deleting_a_job_deletes_its_steps(engine: Engine) -> None:
    job = add_job(engine, nodes=2)
    claim_gang(engine, job, "t-d")
    with session_scope(engine) as s:
        steps.start_step(s, job, "t-d", 0, "x", 2, "a,b")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job})
        assert conn.execute(text("SELECT count(*) FROM job_steps")).scalar_one() == 0


def test_usage_counts_every_node_of_a_gang(engine: Engine) -> None:
    gang = add_job(engine, nodes=2, cpus=3, gpus=1)
    claim_gang(engine, gang)
    with session_scope(engine) as s:
        held = job_store.held_by_node(s)
        usage = job_store.account_usage(s, ["acct"])
    assert held["id-a"].cpu == 3 and held["id-b"].cpu == 3
    assert held["id-b"].gpu == 1
    assert usage["acct"] == (1, 6, 2.0)
