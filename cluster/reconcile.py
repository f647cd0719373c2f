"""对账：把数据库中“占用资源”的作业与 Ray 上真实存活的执行比对。

调度器启动时（接受新工作之前）以及空闲时定期执行。判定规则（decide）是纯函数：
- 节点已死亡                      → NODE_FAIL（已取消的只释放资源）
- 派发时的代理仍在且持有作业      → 重新接管，什么也不做
- 派发时的代理仍在但不认识作业    → 仅在启动对账时：作业从未交到代理手里，重新排队
- 节点存活但派发时的代理已不在    → 任务随代理死亡：FAILED，并清理孤儿进程
- 节点存活但其代理暂时无响应      → 本轮不判定，下次再看（不冤枉慢节点）
- 本调度器正在派发途中的作业      → 本轮不判定
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.db import session_scope
from conductor.states import JobState
from conductor.transitions import HOLDING


@dataclass(frozen=True)
class HeldJob:
    """数据库中仍占用资源的作业（RUNNING，或已取消但执行尚未结束）。"""

    job_id: int
    state: JobState
    node_id: str
    node_name: str
    agent_id: str | None
    token: str | None
    node_host: str | None = None


def load_held_jobs(engine: Engine) -> list[HeldJob]:
    """数据库中仍占用资源的全部作业（调度器对账与 conductor doctor 共用）。"""
    with session_scope(engine) as session:
        rows = session.execute(
            text(
                "SELECT id, state, node_id, node_name, agent_id, token, node_host FROM jobs "
                f"WHERE {HOLDING}"
            )
        )
        return [
            HeldJob(
                r.id,
                JobState(r.state),
                r.node_id,
                r.node_name or "",
                r.agent_id,
                r.token,
                r.node_host,
            )
            for r in rows
        ]


@dataclass(frozen=True)
class AgentView:
    """一个节点当前的代理：身份（每次创建都不同）与它手中的作业；health 为代理的健康（不参与判定）。"""

    agent_id: str
    jobs: frozenset[int]
    health: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass
class ReconcilePlan:
    reattach: list[int] = field(default_factory=list)
    requeue: list[HeldJob] = field(default_factory=list)
    node_fail: list[HeldJob] = field(default_factory=list)
    agent_lost: list[HeldJob] = field(default_factory=list)
    undecided: list[int] = field(default_factory=list)

    def summary(self) -> str:
        def ids(jobs: Sequence[HeldJob]) -> list[int]:
            return [j.job_id for j in jobs]

        return (
            f"重新接管 {len(self.reattach)} 个 {self.reattach}；"
            f"重新排队（从未启动）{len(self.requeue)} 个 {ids(self.requeue)}；"
            f"节点失联判 NODE_FAIL {len(self.node_fail)} 个 {ids(self.node_fail)}；"
            f"代理丢失判 FAILED {len(self.agent_lost)} 个 {ids(self.agent_lost)}；"
            f"暂不判定 {len(self.undecided)} 个 {self.undecided}"
        )

    @property
    def changes_anything(self) -> bool:
        return bool(self.requeue or self.node_fail or self.agent_lost)


def decide(
    held: Sequence[HeldJob],
    alive_nodes: Collection[str],
    agents: Mapping[str, AgentView | None],
    *,
    startup: bool,
    in_flight: Collection[int] = (),
) -> ReconcilePlan:
    """agents：存活节点 → 代理视图；值为 None 表示代理暂时无响应。"""
    plan = ReconcilePlan()
    for job in held:
        if job.node_id not in alive_nodes:
            plan.node_fail.append(job)
            continue
        agent = agents.get(job.node_id)
        if job.job_id in in_flight or agent is None:
            plan.undecided.append(job.job_id)
        elif agent.agent_id != job.agent_id:
            plan.agent_lost.append(job)
        elif job.job_id in agent.jobs:
            plan.reattach.append(job.job_id)
        elif job.state is JobState.RUNNING and startup:
            plan.requeue.append(job)
        elif job.state is JobState.CANCELLED:
            # 已取消且代理不认识：执行已结束或从未开始，只需释放资源
            plan.agent_lost.append(job)
        else:
            plan.undecided.append(job.job_id)
    return plan
