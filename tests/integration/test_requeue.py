"""重新排队的集成测试（真实 PostgreSQL）：scontrol requeue、--requeue 作业的节点失败、
“同一作业绝不同时有两次执行”的认领栅栏，以及作业凭据的校验。"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from cluster.reconcile import AgentView, HeldJob, apply, decide
from conductor.auth import authenticate
from conductor.db import make_engine, session_scope
from conductor.jobcred import job_credential
from conductor.states import JobState
from conductor.store import lost_cancels, steps, transitions
from conductor.store.transitions import Outcome
from tests.integration.test_transitions import add_job, claim_one, do, row, running_job


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=5)
    yield eng
    eng.dispose()


def requeue(engine: Engine, job_id: int) -> transitions.RequeueResult | None:
    return do(engine, transitions.requeue_job, job_id)


def finish(engine: Engine, job_id: int, token: str, state: JobState, code: str = "0:0") -> Any:
    return do(engine, transitions.finish, [Outcome(job_id, state, code, None, token)])


def test_requeue_running_waits_for_old_run_before_new_claim(engine: Engine) -> None:
    """运行中的作业重新排队：立刻 PENDING、重启次数 +1；旧执行的资源归还之前不能被再次认领，
    旧执行迟到的结局不改状态、不写退出码，只归还资源；之后才有新执行（新令牌）。"""
    job_id, old_token = running_job(engine)
    do(engine, steps.start_step, job_id, old_token, 0, "step", 1, "name-node-a")
    result = requeue(engine, job_id)
    assert result is not None
    assert (result.previous, result.changed, result.node_id, result.restart_count) == (
        JobState.RUNNING,
        True,
        "node-a",
        1,
    )
    r = row(engine, job_id)
    assert (r["state"], r["restart_count"], r["start_time"], r["exit_code"]) == (
        "PENDING",
        1,
        None,
        None,
    )
    # 旧执行仍占着资源：令牌与分配照旧，released_at 为空
    assert (r["token"], r["node_id"], r["released_at"]) == (old_token, "node-a", None)
    with session_scope(engine) as s:
        assert (
            s.execute(
                text("SELECT count(*) FROM job_steps WHERE job_id = :j"), {"j": job_id}
            ).scalar()
            == 0
        )
        assert lost_cancels.stale_among(s, [(job_id, old_token)]) == [job_id]
    # 旧执行还没确认结束：认领不到
    rows, _ = claim_one(engine, job_id, node="node-b")
    assert rows == []
    # 旧执行的结局迟到：状态仍 PENDING，退出码不记，资源归还
    finish(engine, job_id, old_token, JobState.FAILED, "0:15")
    r = row(engine, job_id)
    assert (r["state"], r["exit_code"]) == ("PENDING", None)
    assert r["released_at"] is not None
    # 现在才能认领：新令牌、新节点
    rows, new_token = claim_one(engine, job_id, node="node-b")
    assert [x["id"] for x in rows] == [job_id]
    assert rows[0]["token"] == new_token != old_token
    assert rows[0]["restart_count"] == 1
    # 旧令牌的结局再来一次也落不到新执行上
    finish(engine, job_id, old_token, JobState.COMPLETED)
    assert row(engine, job_id)["state"] == "RUNNING"
    finish(engine, job_id, new_token, JobState.COMPLETED)
    assert (row(engine, job_id)["state"], row(engine, job_id)["exit_code"]) == ("COMPLETED", "0:0")


@pytest.mark.parametrize(
    "state",
    [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.NODE_FAIL],
)
def test_requeue_finished_job(engine: Engine, state: JobState) -> None:
    """已结束的作业（任何终态）重新排队后回到 PENDING，结束时间、退出码与说明清空，可再次认领。"""
    job_id, token = running_job(engine)
    if state is JobState.CANCELLED:
        do(engine, transitions.cancel, job_id)
        do(engine, transitions.release, [job_id], ["0:15"], [token])
    else:
        finish(engine, job_id, token, state, "3:0")
    result = requeue(engine, job_id)
    assert result is not None and result.changed and result.node_id is None
    r = row(engine, job_id)
    assert (r["state"], r["end_time"], r["exit_code"], r["error_msg"], r["restart_count"]) == (
        "PENDING",
        None,
        None,
        None,
        1,
    )
    rows, _ = claim_one(engine, job_id)
    assert [x["id"] for x in rows] == [job_id]
    assert requeue(engine, job_id) is not None
    assert row(engine, job_id)["restart_count"] == 2


def test_requeue_pending_refused_and_missing(engine: Engine) -> None:
    job_id = add_job(engine)
    result = requeue(engine, job_id)
    assert result is not None
    assert (result.previous, result.changed) == (JobState.PENDING, False)
    assert row(engine, job_id)["restart_count"] == 0
    assert requeue(engine, 10**12) is None


def test_node_failure_requeues_only_requeue_jobs(engine: Engine) -> None:
    """--requeue 的作业节点失败时回到 PENDING（重启次数 +1、资源归还），其余以 NODE_FAIL 结束。"""
    plain, plain_token = running_job(engine)
    keep = add_job(engine, requeue=True)
    rows, keep_token = claim_one(engine, keep)
    assert rows
    do(
        engine,
        transitions.settle_lost,
        [(plain, plain_token), (keep, keep_token)],
        JobState.NODE_FAIL,
        "节点 x 失联",
    )
    assert row(engine, plain)["state"] == "NODE_FAIL"
    r = row(engine, keep)
    assert (r["state"], r["restart_count"]) == ("PENDING", 1)
    assert r["released_at"] is not None and "重新排队" in r["error_msg"]
    rows, _ = claim_one(engine, keep, node="node-c")
    assert [x["id"] for x in rows] == [keep] and rows[0]["error_msg"] is None
    # FAILED（不是节点失败）不会自动重新排队
    other = add_job(engine, requeue=True)
    _, t = claim_one(engine, other)
    finish(engine, other, t, JobState.FAILED, "1:0")
    assert row(engine, other)["state"] == "FAILED"


def test_reconcile_releases_requeued_job_whose_run_is_gone(engine: Engine) -> None:
    """重新排队的停止消息之后代理已不持有旧执行：对账只归还资源，作业随后可被认领；代理仍持有时不动。"""
    job_id, token = running_job(engine, agent="agent-r")
    requeue(engine, job_id)
    held = HeldJob(job_id, JobState.PENDING, "node-a", "name-node-a", "agent-r", token)
    holding = decide(
        [held], {"node-a"}, {"node-a": AgentView("agent-r", frozenset({job_id}))}, startup=False
    )
    assert holding.reattach == [job_id] and not holding.changes_anything
    plan = decide([held], {"node-a"}, {"node-a": AgentView("agent-r", frozenset())}, startup=False)
    assert [j.job_id for j in plan.finished] == [job_id]
    apply(engine, plan)
    r = row(engine, job_id)
    assert r["state"] == "PENDING" and r["released_at"] is not None
    assert claim_one(engine, job_id)[0]


def test_job_credential_valid_only_while_that_run_is_running(engine: Engine) -> None:
    """作业凭据：运行中、令牌是这次执行的才有效，权限为该作业的账户；结束或重新排队后失效，
    新执行的凭据不同。"""
    job_id, token = running_job(engine)
    principal = authenticate(engine, job_credential(job_id, token))
    assert principal is not None
    assert (principal.account, principal.admin) == ("acct", False)
    assert authenticate(engine, job_credential(job_id, token + "x")) is None
    assert authenticate(engine, job_credential(job_id + 1, token)) is None
    assert authenticate(engine, f"cdj_{job_id}") is None
    requeue(engine, job_id)
    assert authenticate(engine, job_credential(job_id, token)) is None
    finish(engine, job_id, token, JobState.FAILED)
    _, new = claim_one(engine, job_id)
    assert new != token
    assert authenticate(engine, job_credential(job_id, new)) is not None
    assert authenticate(engine, job_credential(job_id, token)) is None
    finish(engine, job_id, new, JobState.COMPLETED)
    assert authenticate(engine, job_credential(job_id, new)) is None
