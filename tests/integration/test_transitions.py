"""transitions 的集成测试：真实 PostgreSQL 上的带条件 UPDATE，以及真实线程下的并发竞争。"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.db import make_engine, session_scope
from conductor.migrate import MIGRATIONS, upgrade
from conductor.models import Job
from conductor.policy import Placement
from conductor.states import JobState
from conductor.store import orphans, transitions
from conductor.store.transitions import CancelResult, Outcome

MIB = 1024**2
_tokens = itertools.count(1)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=10)
    yield eng
    eng.dispose()


def add_job(engine: Engine, **fields: Any) -> int:
    """直接插入一行作业（默认 PENDING），返回 id。"""
    job = Job(
        name="t",
        account="acct",
        partition="normal",
        script="#!/bin/bash\ntrue\n",
        work_dir="/tmp",
        stdout_path="/tmp/o.log",
        stderr_path="/tmp/e.log",
        memory_bytes=MIB,
        **fields,
    )
    with session_scope(engine) as s:
        s.add(job)
        s.flush()
        assert job.id is not None
        return job.id


def row(engine: Engine, job_id: int) -> dict[str, Any]:
    with session_scope(engine) as s:
        return dict(
            s.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
        )


def new_token() -> str:
    return f"tok-{next(_tokens)}"


def claim_one(
    engine: Engine, job_id: int, *, node: str = "node-a", epoch: int = 1, agent: str = "agent-1"
) -> tuple[list[dict], str]:
    token = new_token()
    with session_scope(engine) as s:
        rows = transitions.claim(
            s, [Placement(job_id, node, f"name-{node}")], [token], [agent], epoch
        )
    return rows, token


def running_job(engine: Engine, **kw: Any) -> tuple[int, str]:
    """插入并认领一个作业，返回 (id, 令牌)。"""
    job_id = add_job(engine)
    rows, token = claim_one(engine, job_id, **kw)
    assert [r["id"] for r in rows] == [job_id]
    return job_id, token


def do(engine: Engine, fn: Callable[..., Any], *args: Any) -> Any:
    """在独立事务中调用一个转换函数。"""
    with session_scope(engine) as s:
        return fn(s, *args)


# ---------- claim ----------


def test_claim_empty(engine: Engine) -> None:
    assert do(engine, transitions.claim, [], [], [], 1) == []


def test_claim_only_pending_and_sets_fields(engine: Engine) -> None:
    pending = add_job(engine)
    cancelled = add_job(engine, state=JobState.CANCELLED)
    already, old_token = running_job(engine, node="node-x", epoch=1, agent="agent-x")
    before_already = row(engine, already)
    missing = 10**12

    placements = [
        Placement(pending, "node-b", "host-b"),
        Placement(cancelled, "node-b", "host-b"),
        Placement(already, "node-b", "host-b"),
        Placement(missing, "node-b", "host-b"),
    ]
    tokens = ["t-pending", "t-cancelled", "t-already", "t-missing"]
    agents = ["agent-b"] * 4
    rows = do(engine, transitions.claim, placements, tokens, agents, 7)

    assert [r["id"] for r in rows] == [pending]
    got = rows[0]
    assert got["state"] == "RUNNING"
    assert (got["node_id"], got["node_name"], got["token"], got["agent_id"], got["epoch"]) == (
        "node-b",
        "host-b",
        "t-pending",
        "agent-b",
        7,
    )
    assert got["start_time"] is not None
    assert got["released_at"] is None
    # 返回的行与数据库一致
    assert row(engine, pending) == got

    c = row(engine, cancelled)
    assert (c["state"], c["node_id"], c["token"], c["start_time"]) == (
        "CANCELLED",
        None,
        None,
        None,
    )
    # 已在运行的作业不被重新认领：令牌、节点、纪元都不变
    assert row(engine, already) == before_already
    assert before_already["token"] == old_token


# ---------- finish / release ----------


@pytest.mark.parametrize(
    ("state", "code", "msg"),
    [
        (JobState.COMPLETED, "0:0", None),
        (JobState.FAILED, "3:0", "脚本以非零退出码 3 结束"),
        (JobState.TIMEOUT, "0:9", "超过时间限制（0:01:00），作业已被终止"),
        (JobState.NODE_FAIL, None, "节点失联"),
    ],
    ids=lambda v: v.value if isinstance(v, JobState) else None,
)
def test_finish_running_to_terminal_releases_once(
    engine: Engine, state: JobState, code: str | None, msg: str | None
) -> None:
    job_id, _ = running_job(engine)
    assert do(engine, transitions.finish, [Outcome(job_id, state, code, msg)]) == [job_id]
    r = row(engine, job_id)
    assert (r["state"], r["exit_code"], r["error_msg"]) == (state.value, code, msg)
    assert r["end_time"] is not None and r["released_at"] is not None
    assert r["node_id"] == "node-a"  # 节点记录保留，供查询显示

    # 再次上报（不同结局）：状态、退出码、释放时间都不变
    again = Outcome(job_id, JobState.FAILED, "9:0", "重复上报")
    assert do(engine, transitions.finish, [again]) == []
    assert row(engine, job_id) == r
    assert do(engine, transitions.release, [job_id]) == []


@pytest.mark.parametrize("bad", [JobState.CANCELLED, JobState.PENDING, JobState.RUNNING])
def test_finish_rejects_non_terminal_or_cancel(engine: Engine, bad: JobState) -> None:
    job_id, _ = running_job(engine)
    before = row(engine, job_id)
    with pytest.raises(ValueError):
        do(engine, transitions.finish, [Outcome(job_id, bad, "0:0", None)])
    assert row(engine, job_id) == before


def test_finish_empty(engine: Engine) -> None:
    assert do(engine, transitions.finish, []) == []


def test_finish_on_cancelled_keeps_state_releases_and_fills_exit_code(engine: Engine) -> None:
    job_id, _ = running_job(engine)
    res = do(engine, transitions.cancel, job_id)
    assert res == CancelResult(previous=JobState.RUNNING, changed=True, node_id="node-a")
    after_cancel = row(engine, job_id)
    assert after_cancel["released_at"] is None  # 宽限期内进程可能仍在运行，资源未归还

    changed = do(
        engine, transitions.finish, [Outcome(job_id, JobState.FAILED, "0:15", "被信号终止")]
    )
    assert changed == []
    r = row(engine, job_id)
    assert r["state"] == "CANCELLED"
    assert r["error_msg"] == "用户取消"
    assert r["exit_code"] == "0:15"
    assert r["end_time"] == after_cancel["end_time"]
    assert r["released_at"] is not None
    assert do(engine, transitions.release, [job_id]) == []


def test_finish_on_pending_changes_nothing(engine: Engine) -> None:
    job_id = add_job(engine)
    before = row(engine, job_id)
    assert do(engine, transitions.finish, [Outcome(job_id, JobState.COMPLETED, "0:0", None)]) == []
    assert row(engine, job_id) == before


def test_finish_batch_mixed(engine: Engine) -> None:
    """批量上报：只有 RUNNING 的改变状态；占用资源的都被释放。"""
    a, _ = running_job(engine)
    b, _ = running_job(engine)
    do(engine, transitions.cancel, b)
    c = add_job(engine)
    outcomes = [
        Outcome(a, JobState.COMPLETED, "0:0", None),
        Outcome(b, JobState.COMPLETED, "0:0", None),
        Outcome(c, JobState.COMPLETED, "0:0", None),
    ]
    assert do(engine, transitions.finish, outcomes) == [a]
    assert [row(engine, j)["state"] for j in (a, b, c)] == ["COMPLETED", "CANCELLED", "PENDING"]
    assert row(engine, a)["released_at"] is not None
    assert row(engine, b)["released_at"] is not None
    assert row(engine, c)["released_at"] is None


def test_release_twice_releases_once_and_keeps_first_exit_code(engine: Engine) -> None:
    job_id, _ = running_job(engine)
    assert do(engine, transitions.release, [job_id], ["1:0"]) == [job_id]
    first = row(engine, job_id)
    assert first["released_at"] is not None
    assert first["exit_code"] == "1:0"
    assert first["state"] == "RUNNING"  # 释放不改变状态
    assert do(engine, transitions.release, [job_id], ["2:0"]) == []
    assert row(engine, job_id) == first


def test_release_without_codes_and_unheld(engine: Engine) -> None:
    held, _ = running_job(engine)
    never_held = add_job(engine)
    assert do(engine, transitions.release, [held, never_held]) == [held]
    assert row(engine, held)["exit_code"] is None
    assert row(engine, never_held)["released_at"] is None
    assert do(engine, transitions.release, []) == []


def test_release_does_not_overwrite_existing_exit_code(engine: Engine) -> None:
    """已有退出码的占用行：释放只补缺，不覆盖（settle_lost 传入的退出码为空）。"""
    job_id = add_job(
        engine, state=JobState.CANCELLED, node_id="node-e", node_name="host-e", exit_code="3:0"
    )
    assert do(engine, transitions.release, [job_id], [None]) == [job_id]
    assert row(engine, job_id)["exit_code"] == "3:0"
    other = add_job(
        engine, state=JobState.CANCELLED, node_id="node-e", node_name="host-e", exit_code="3:0"
    )
    assert do(engine, transitions.release, [other], ["0:9"]) == [other]
    assert row(engine, other)["exit_code"] == "3:0"


# ---------- cancel ----------


def test_cancel_pending(engine: Engine) -> None:
    job_id = add_job(engine)
    res = do(engine, transitions.cancel, job_id)
    assert res == CancelResult(previous=JobState.PENDING, changed=True, node_id=None)
    r = row(engine, job_id)
    assert (r["state"], r["error_msg"], r["released_at"]) == ("CANCELLED", "用户取消", None)
    assert r["end_time"] is not None
    # 已取消的作业不能再被认领
    rows, _ = claim_one(engine, job_id)
    assert rows == []
    again = do(engine, transitions.cancel, job_id)
    assert again == CancelResult(previous=JobState.CANCELLED, changed=False, node_id=None)
    assert row(engine, job_id) == r


def test_cancel_running(engine: Engine) -> None:
    job_id, _ = running_job(engine, node="node-r")
    res = do(engine, transitions.cancel, job_id)
    assert res == CancelResult(previous=JobState.RUNNING, changed=True, node_id="node-r")
    r = row(engine, job_id)
    assert (r["state"], r["error_msg"]) == ("CANCELLED", "用户取消")
    assert r["end_time"] is not None
    assert r["released_at"] is None


@pytest.mark.parametrize(
    "terminal", [JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.NODE_FAIL]
)
def test_cancel_terminal_is_noop(engine: Engine, terminal: JobState) -> None:
    job_id, _ = running_job(engine, node="node-t")
    do(engine, transitions.finish, [Outcome(job_id, terminal, "1:0", "原因")])
    before = row(engine, job_id)
    res = do(engine, transitions.cancel, job_id)
    assert res == CancelResult(previous=terminal, changed=False, node_id="node-t")
    assert row(engine, job_id) == before


def test_cancel_unknown_id(engine: Engine) -> None:
    assert do(engine, transitions.cancel, 10**12) is None


# ---------- requeue ----------


def test_requeue_requires_matching_token_and_running(engine: Engine) -> None:
    job_id, token = running_job(engine)
    before = row(engine, job_id)
    assert do(engine, transitions.requeue, [(job_id, "not-the-token")]) == []
    assert row(engine, job_id) == before

    assert do(engine, transitions.requeue, [(job_id, token)]) == [job_id]
    r = row(engine, job_id)
    assert r["state"] == "PENDING"
    for col in ("start_time", "node_id", "node_name", "epoch", "token", "agent_id", "released_at"):
        assert r[col] is None, col

    # 已被重新认领（令牌已变）：旧令牌的重新排队不生效
    rows, new = claim_one(engine, job_id, epoch=2)
    assert [x["id"] for x in rows] == [job_id]
    assert do(engine, transitions.requeue, [(job_id, token)]) == []
    assert row(engine, job_id)["token"] == new
    assert row(engine, job_id)["state"] == "RUNNING"


def test_requeue_only_running(engine: Engine) -> None:
    cancelled, t1 = running_job(engine)
    do(engine, transitions.cancel, cancelled)
    done, t2 = running_job(engine)
    do(engine, transitions.finish, [Outcome(done, JobState.COMPLETED, "0:0", None)])
    before = [row(engine, cancelled), row(engine, done)]
    assert do(engine, transitions.requeue, [(cancelled, t1), (done, t2)]) == []
    assert [row(engine, cancelled), row(engine, done)] == before
    assert do(engine, transitions.requeue, []) == []


def test_requeue_batch_partial(engine: Engine) -> None:
    a, ta = running_job(engine)
    b, _ = running_job(engine)
    assert sorted(do(engine, transitions.requeue, [(a, ta), (b, "stale")])) == [a]
    assert row(engine, a)["state"] == "PENDING"
    assert row(engine, b)["state"] == "RUNNING"


def test_stale_outcome_of_an_earlier_claim_changes_nothing(engine: Engine) -> None:
    """重新排队并再次认领后，旧执行迟到的结局（旧令牌）既不改状态也不释放新占用。"""
    job_id, old = running_job(engine)
    assert do(engine, transitions.requeue, [(job_id, old)]) == [job_id]
    _, new = claim_one(engine, job_id)
    late = Outcome(job_id, JobState.FAILED, "1:0", "旧执行", old)
    assert do(engine, transitions.finish, [late]) == []
    r = row(engine, job_id)
    assert (r["state"], r["released_at"], r["exit_code"]) == ("RUNNING", None, None)
    assert do(
        engine, transitions.finish, [Outcome(job_id, JobState.COMPLETED, "0:0", None, new)]
    ) == [job_id]
    assert row(engine, job_id)["state"] == "COMPLETED"


# ---------- settle_lost ----------


def test_settle_lost(engine: Engine) -> None:
    running, _ = running_job(engine)
    cancelled, _ = running_job(engine)
    do(engine, transitions.cancel, cancelled)
    done, _ = running_job(engine)
    do(engine, transitions.finish, [Outcome(done, JobState.COMPLETED, "0:0", None)])
    done_before = row(engine, done)

    reason = "节点代理已退出"
    changed = do(
        engine,
        transitions.settle_lost,
        [(running, None), (cancelled, None), (done, None)],
        JobState.FAILED,
        reason,
    )
    assert changed == [running]
    r = row(engine, running)
    assert (r["state"], r["error_msg"], r["exit_code"]) == ("FAILED", reason, None)
    assert r["released_at"] is not None
    c = row(engine, cancelled)
    assert (c["state"], c["error_msg"]) == ("CANCELLED", "用户取消")
    assert c["released_at"] is not None
    assert row(engine, done) == done_before


def test_settle_lost_node_fail(engine: Engine) -> None:
    job_id, _ = running_job(engine)
    assert do(
        engine, transitions.settle_lost, [(job_id, None)], JobState.NODE_FAIL, "节点失联"
    ) == [job_id]
    assert row(engine, job_id)["state"] == "NODE_FAIL"
    assert do(engine, transitions.settle_lost, [], JobState.NODE_FAIL, "x") == []


# ---------- 并发：真实线程、各自的会话 ----------


def run_together(*fns: Callable[[], Any]) -> list[Any]:
    """用 Barrier 让各线程同时开始；返回各自结果，线程内异常在主线程重新抛出。"""
    barrier = threading.Barrier(len(fns))
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []

    def runner(i: int, fn: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - 交给主线程断言
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i, f)) for i, f in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "线程未结束（可能死锁）"
    if errors:
        raise errors[0]
    return results


def test_concurrent_double_cancel_exactly_one_changes(engine: Engine) -> None:
    for _ in range(20):
        job_id, _ = running_job(engine)
        r1, r2 = run_together(
            lambda j=job_id: do(engine, transitions.cancel, j),
            lambda j=job_id: do(engine, transitions.cancel, j),
        )
        assert sorted([r1.changed, r2.changed]) == [False, True]
        winner, loser = (r1, r2) if r1.changed else (r2, r1)
        assert winner.previous is JobState.RUNNING
        assert loser.previous is JobState.CANCELLED
        assert row(engine, job_id)["state"] == "CANCELLED"


def test_cancel_races_finish(engine: Engine) -> None:
    """取消与完成上报同时到达：恰有一方生效，结果此后不再改变，资源恰好释放一次。"""
    outcomes: dict[str, int] = {"CANCELLED": 0, "COMPLETED": 0}
    for _ in range(50):
        job_id, _ = running_job(engine)
        done = Outcome(job_id, JobState.COMPLETED, "0:0", None)
        cancel_res, finished = run_together(
            lambda j=job_id: do(engine, transitions.cancel, j),
            lambda o=done: do(engine, transitions.finish, [o]),
        )
        r = row(engine, job_id)
        assert r["state"] in outcomes
        outcomes[r["state"]] += 1
        # 双方对“谁赢了”的看法一致
        assert cancel_res.changed != (finished == [job_id])
        if cancel_res.changed:
            assert cancel_res.previous is JobState.RUNNING
            assert (r["state"], r["error_msg"]) == ("CANCELLED", "用户取消")
        else:
            assert cancel_res.previous is JobState.COMPLETED
            assert (r["state"], r["error_msg"]) == ("COMPLETED", None)
        assert r["exit_code"] == "0:0"
        assert r["released_at"] is not None
        assert r["end_time"] is not None

        # 之后的任何上报或取消都不改变结果，也不再次释放
        late = Outcome(job_id, JobState.FAILED, "1:0", "迟到的上报")
        assert do(engine, transitions.finish, [late]) == []
        assert do(engine, transitions.cancel, job_id).changed is False
        assert do(engine, transitions.release, [job_id]) == []
        assert row(engine, job_id) == r
    assert sum(outcomes.values()) == 50


def test_claim_races_cancel(engine: Engine) -> None:
    """认领与取消同时作用于 PENDING 作业：取消总是生效；认领成功与否与取消看到的旧状态一致。"""
    for _ in range(30):
        job_id = add_job(engine)
        token = new_token()
        placement = Placement(job_id, "node-c", "host-c")
        claimed, cancel_res = run_together(
            lambda p=placement, t=token: do(engine, transitions.claim, [p], [t], ["agent-c"], 1),
            lambda j=job_id: do(engine, transitions.cancel, j),
        )
        r = row(engine, job_id)
        assert r["state"] == "CANCELLED"
        assert cancel_res.changed is True
        if claimed:
            assert [x["id"] for x in claimed] == [job_id]
            assert cancel_res == CancelResult(JobState.RUNNING, True, "node-c")
            assert (r["node_id"], r["token"], r["released_at"]) == ("node-c", token, None)
        else:
            assert cancel_res == CancelResult(JobState.PENDING, True, None)
            assert (r["node_id"], r["token"]) == (None, None)


# ---------- 迁移 ----------


def test_migrations_idempotent(engine: Engine, database_url: str) -> None:
    job_id = add_job(engine)

    def snapshot() -> tuple[list[str], list[str], list[str], int]:
        with session_scope(engine) as s:
            versions = [v for (v,) in s.execute(text("SELECT version_num FROM alembic_version"))]
            tables = [
                t
                for (t,) in s.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "ORDER BY tablename"
                    )
                )
            ]
            indexes = [
                i
                for (i,) in s.execute(
                    text(
                        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
                        "ORDER BY indexname"
                    )
                )
            ]
            count = s.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        return versions, tables, indexes, count

    before = snapshot()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert before[0] == [head]
    assert before[1] == [
        "alembic_version",
        "api_tokens",
        "job_stats",
        "job_steps",
        "jobs",
        "login_codes",
        "node_drains",
        "scheduler_epochs",
    ]

    upgrade(database_url)
    upgrade(database_url)
    assert snapshot() == before
    assert row(engine, job_id)["state"] == "PENDING"


# ---------- orphan_tokens ----------


def test_orphan_tokens_of_a_new_agent(engine: Engine) -> None:
    """新代理上任要清理的令牌：本节点上不归它、仍占用资源的；本节点或同一地址上最近被判为丢失的。"""

    def claimed(node: str, agent: str, host: str) -> tuple[int, str]:
        job_id, token = add_job(engine), new_token()
        with session_scope(engine) as s:
            transitions.claim(s, [Placement(job_id, node, node)], [token], [agent], 1, [host])
        return job_id, token

    def ended(job_id: int, token: str, state: JobState) -> None:
        do(engine, transitions.finish, [Outcome(job_id, state, None, "x", token)])

    held_old = claimed("orph-n", "agent-old", "10.0.0.9")
    held_mine = claimed("orph-n", "agent-new", "10.0.0.9")
    held_elsewhere = claimed("orph-m", "agent-old", "10.0.0.8")
    lost = claimed("orph-n", "agent-old", "10.0.0.9")
    ended(*lost, JobState.FAILED)
    lost_same_host = claimed("orph-old-node", "agent-older", "10.0.0.9")
    ended(*lost_same_host, JobState.NODE_FAIL)
    completed = claimed("orph-n", "agent-old", "10.0.0.9")
    ended(*completed, JobState.COMPLETED)
    long_ago = claimed("orph-n", "agent-old", "10.0.0.9")
    ended(*long_ago, JobState.FAILED)
    with session_scope(engine) as s:
        s.execute(
            text("UPDATE jobs SET end_time = now() - interval '2 hours' WHERE id = :id"),
            {"id": long_ago[0]},
        )

    tokens = do(engine, orphans.orphan_tokens, "orph-n", "10.0.0.9", "agent-new", 3600.0)
    assert sorted(tokens) == sorted([held_old[1], lost[1], lost_same_host[1]])
    assert held_mine[1] not in tokens and held_elsewhere[1] not in tokens
