"""reconcile.decide 的单元测试：逐条规则，以及 summary 的中文摘要。"""

from __future__ import annotations

import pytest

from cluster.reconcile import (
    AgentView,
    HeldJob,
    ReconcilePlan,
    decide,
    orphan_tokens,
    sweepers,
)
from conductor.states import JobState


def held(
    job_id: int,
    *,
    state: JobState = JobState.RUNNING,
    node_id: str = "n1",
    agent_id: str | None = "agent-a",
    token: str | None = "tok",
    claimed_for: float = 0.0,
) -> HeldJob:
    return HeldJob(
        job_id, state, node_id, f"name-{node_id}", agent_id, token, claimed_for=claimed_for
    )


def view(agent_id: str, *jobs: int) -> AgentView:
    return AgentView(agent_id, frozenset(jobs))


def test_empty() -> None:
    for startup in (True, False):
        plan = decide([], set(), {}, startup=startup)
        assert plan == ReconcilePlan()
        assert not plan.changes_anything


@pytest.mark.parametrize("startup", [True, False])
def test_dead_node_is_node_fail(startup: bool) -> None:
    """节点已死：无论代理信息、是否在派发途中，都判 NODE_FAIL；已取消的同样归入（之后只释放资源）。"""
    running = held(1, node_id="dead")
    cancelled = held(2, node_id="dead", state=JobState.CANCELLED)
    in_flight_job = held(3, node_id="dead")
    plan = decide(
        [running, cancelled, in_flight_job],
        alive_nodes={"n1"},
        agents={"dead": view("agent-a", 1, 2, 3)},
        startup=startup,
        in_flight={3},
    )
    assert plan.node_fail == [running, cancelled, in_flight_job]
    assert (plan.reattach, plan.requeue, plan.agent_lost, plan.undecided) == ([], [], [], [])
    assert plan.changes_anything


@pytest.mark.parametrize("startup", [True, False])
def test_agent_id_differs_is_agent_lost(startup: bool) -> None:
    """代理被重建（身份不同）：即使新代理“认识”这个作业号也判丢失。"""
    job = held(1, agent_id="agent-old")
    plan = decide([job], {"n1"}, {"n1": view("agent-new", 1)}, startup=startup)
    assert plan.agent_lost == [job]
    assert (plan.reattach, plan.requeue, plan.node_fail, plan.undecided) == ([], [], [], [])
    assert plan.changes_anything


def test_agent_id_none_is_agent_lost() -> None:
    job = held(1, agent_id=None)
    plan = decide([job], {"n1"}, {"n1": view("agent-a", 1)}, startup=True)
    assert plan.agent_lost == [job]


@pytest.mark.parametrize("startup", [True, False])
def test_agent_missing_or_unresponsive_is_undecided(startup: bool) -> None:
    """节点存活而代理没有视图（缺失或无响应）：本轮不判定，不冤枉慢节点。"""
    missing = held(1, node_id="n1")
    silent = held(2, node_id="n2", state=JobState.CANCELLED)
    plan = decide([missing, silent], {"n1", "n2"}, {"n2": None}, startup=startup)
    assert plan.undecided == [1, 2]
    assert (plan.reattach, plan.requeue, plan.node_fail, plan.agent_lost) == ([], [], [], [])
    assert not plan.changes_anything


def test_in_flight_is_undecided_even_if_agent_changed() -> None:
    """本调度器正在派发的作业本轮一律不判定。"""
    jobs = [held(1, agent_id="agent-old"), held(2)]
    plan = decide(jobs, {"n1"}, {"n1": view("agent-new")}, startup=False, in_flight={1, 2})
    assert plan.undecided == [1, 2]
    assert not plan.changes_anything


@pytest.mark.parametrize("startup", [True, False])
def test_known_job_is_reattached(startup: bool) -> None:
    jobs = [held(1), held(2, state=JobState.CANCELLED)]
    plan = decide(jobs, {"n1"}, {"n1": view("agent-a", 1, 2)}, startup=startup)
    assert plan.reattach == [1, 2]
    assert (plan.requeue, plan.node_fail, plan.agent_lost, plan.undecided) == ([], [], [], [])
    assert not plan.changes_anything


def test_running_unknown_to_same_agent_requeued_at_startup() -> None:
    """启动对账：同一代理不认识的 RUNNING 作业从未交到代理手里，重新排队。"""
    jobs = [held(1), held(3, node_id="n2", agent_id="agent-b"), held(4)]
    plan = decide(
        jobs,
        {"n1", "n2"},
        {"n1": view("agent-a"), "n2": view("agent-b", 99)},
        startup=True,
    )
    assert plan.requeue == jobs
    assert (plan.reattach, plan.node_fail, plan.agent_lost, plan.undecided) == ([], [], [], [])
    assert plan.changes_anything


def test_running_unknown_to_same_agent_undecided_when_not_startup() -> None:
    """运行期的对账不重新排队：作业可能刚交给代理、结局还在上报途中。"""
    job = held(1)
    plan = decide([job], {"n1"}, {"n1": view("agent-a")}, startup=False)
    assert plan.undecided == [1]
    assert plan.requeue == []
    assert not plan.changes_anything


def test_stranded_claim_requeued_by_periodic_reconcile() -> None:
    """运行期对账：认领已超过时限、不在派发途中、同一代理仍不持有 → 从未启动，重新排队。"""
    old = held(1, claimed_for=31.0)
    fresh = held(2, claimed_for=29.0)
    plan = decide([old, fresh], {"n1"}, {"n1": view("agent-a")}, startup=False, stranded_after=30)
    assert plan.requeue == [old]
    assert plan.undecided == [2]
    assert (plan.reattach, plan.node_fail, plan.agent_lost) == ([], [], [])
    assert plan.changes_anything


def test_stranded_claim_in_flight_or_held_or_other_agent_is_not_requeued() -> None:
    """超过时限也不重新排队：本调度器正在派发、代理持有、代理已换（判丢失）、代理无响应。"""
    in_flight_job = held(1, claimed_for=100.0)
    known = held(2, claimed_for=100.0)
    other_agent = held(3, agent_id="agent-old", claimed_for=100.0)
    silent = held(4, node_id="n2", claimed_for=100.0)
    plan = decide(
        [in_flight_job, known, other_agent, silent],
        {"n1", "n2"},
        {"n1": view("agent-a", 2), "n2": None},
        startup=False,
        in_flight={1},
        stranded_after=30,
    )
    assert plan.requeue == []
    assert plan.undecided == [1, 4]
    assert plan.reattach == [2]
    assert plan.agent_lost == [other_agent]


def test_stranded_cancelled_claim_only_released() -> None:
    """已取消的作业超过时限也绝不重新排队：只释放资源。"""
    job = held(1, state=JobState.CANCELLED, claimed_for=100.0)
    plan = decide([job], {"n1"}, {"n1": view("agent-a")}, startup=False, stranded_after=30)
    assert plan.agent_lost == [job]
    assert plan.requeue == []


@pytest.mark.parametrize("startup", [True, False])
def test_cancelled_unknown_is_agent_lost_not_requeued(startup: bool) -> None:
    """已取消且代理不认识：只需释放资源，绝不能重新排队。"""
    job = held(5, state=JobState.CANCELLED)
    plan = decide([job], {"n1"}, {"n1": view("agent-a")}, startup=startup)
    assert plan.agent_lost == [job]
    assert plan.requeue == []


def test_mixed_plan_and_summary() -> None:
    jobs = [
        held(10),  # 重新接管
        held(11),  # 重新排队
        held(12, node_id="gone"),  # NODE_FAIL
        held(13, node_id="n2", agent_id="agent-old"),  # 代理丢失
        held(14, state=JobState.CANCELLED),  # 已取消、不认识 → 代理丢失（只释放）
        held(15),  # 重新排队
        held(16, node_id="n3"),  # 代理无响应 → 暂不判定
    ]
    plan = decide(
        jobs,
        alive_nodes={"n1", "n2", "n3"},
        agents={"n1": view("agent-a", 10), "n2": view("agent-new", 13), "n3": None},
        startup=True,
    )
    assert plan.reattach == [10]
    assert [j.job_id for j in plan.requeue] == [11, 15]
    assert [j.job_id for j in plan.node_fail] == [12]
    assert [j.job_id for j in plan.agent_lost] == [13, 14]
    assert plan.undecided == [16]
    assert plan.summary() == (
        "重新接管 1 个 [10]；"
        "重新排队（从未启动）2 个 [11, 15]；"
        "节点失联判 NODE_FAIL 1 个 [12]；"
        "代理丢失判 FAILED 2 个 [13, 14]；"
        "暂不判定 1 个 [16]"
    )


def test_summary_empty_plan() -> None:
    assert ReconcilePlan().summary() == (
        "重新接管 0 个 []；重新排队（从未启动）0 个 []；"
        "节点失联判 NODE_FAIL 0 个 []；代理丢失判 FAILED 0 个 []；暂不判定 0 个 []"
    )


def test_orphan_tokens_grouped_by_host() -> None:
    """代理换了：主机取作业行的 node_host，缺了查存活节点；节点失联：只能取 node_host。"""
    lost_with_host = HeldJob(1, JobState.RUNNING, "n1", "a", "old", "t1", node_host="h1")
    lost_without_host = HeldJob(2, JobState.CANCELLED, "n2", "b", "old", "t2")
    lost_no_token = HeldJob(3, JobState.RUNNING, "n1", "a", "old", None, node_host="h1")
    dead = HeldJob(4, JobState.RUNNING, "gone", "c", "x", "t4", node_host="h1")
    dead_unknown_host = HeldJob(5, JobState.RUNNING, "gone", "c", "x", "t5")
    plan = ReconcilePlan(
        agent_lost=[lost_with_host, lost_without_host, lost_no_token],
        node_fail=[dead, dead_unknown_host],
    )
    assert orphan_tokens(plan, {"n1": "h1", "n2": "h2"}) == {"h1": {"t1", "t4"}, "h2": {"t2"}}


def test_sweepers_one_node_per_host_and_hosts_without_a_node_wait() -> None:
    """每台有待清理令牌的主机选一个代理就绪的节点；还没有这样的节点的主机继续等。"""
    pending = {"h1": {"t1"}, "h2": {"t2"}, "h3": set()}
    hosts = {"n2": "h1", "n1": "h1", "n3": "h3"}
    assert sweepers(pending, hosts) == {"h1": "n1"}
    assert sweepers(pending, {}) == {}
