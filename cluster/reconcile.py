"""对账：把数据库中“占用资源”的作业与 Ray 上真实存活的执行比对。

调度器启动时（接受新工作之前）以及空闲时定期执行。判定规则（decide）是纯函数：
- 节点已死亡                    → NODE_FAIL（已取消的只释放资源）
- 节点存活、代理存活且持有作业  → 重新接管，什么也不做
- 节点存活、代理存活但不认识作业 → 作业从未交到代理手里（或终态已记录）：重新排队
- 节点存活但派发时的代理已死亡  → 任务随代理死亡：FAILED，并清理孤儿进程
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from conductor.states import JobState


@dataclass(frozen=True)
class HeldJob:
    """数据库中仍占用资源的作业（RUNNING，或已取消但执行尚未结束）。"""

    job_id: int
    state: JobState
    node_id: str
    node_name: str
    epoch: int
    agent_id: str | None
    token: str | None


@dataclass(frozen=True)
class AgentView:
    """一个存活代理的身份（每次创建都不同）与它手中的作业。"""

    agent_id: str
    jobs: frozenset[int]


@dataclass
class ReconcilePlan:
    reattach: list[int] = field(default_factory=list)
    requeue: dict[int, list[int]] = field(default_factory=dict)  # 纪元 → 作业
    node_fail: list[HeldJob] = field(default_factory=list)
    agent_lost: list[HeldJob] = field(default_factory=list)

    def summary(self) -> str:
        requeued = sorted(j for jobs in self.requeue.values() for j in jobs)
        return (
            f"重新接管 {len(self.reattach)} 个 {self.reattach}；"
            f"重新排队（从未启动）{len(requeued)} 个 {requeued}；"
            f"节点失联判 NODE_FAIL {len(self.node_fail)} 个 {[j.job_id for j in self.node_fail]}；"
            f"代理丢失判 FAILED {len(self.agent_lost)} 个 {[j.job_id for j in self.agent_lost]}"
        )

    @property
    def changes_anything(self) -> bool:
        return bool(self.requeue or self.node_fail or self.agent_lost)


def decide(
    held: Sequence[HeldJob],
    alive_nodes: set[str],
    agents: Mapping[str, AgentView],
) -> ReconcilePlan:
    """agents：节点 → 该节点当前存活的代理。代理身份与派发时记录的不同，说明原代理已死。"""
    plan = ReconcilePlan()
    for job in held:
        if job.node_id not in alive_nodes:
            plan.node_fail.append(job)
            continue
        agent = agents.get(job.node_id)
        if agent is None or agent.agent_id != job.agent_id:
            plan.agent_lost.append(job)
        elif job.job_id in agent.jobs:
            plan.reattach.append(job.job_id)
        elif job.state is JobState.RUNNING:
            plan.requeue.setdefault(job.epoch, []).append(job.job_id)
        else:
            # 已取消且代理不认识：执行已结束或从未开始，只需释放资源
            plan.agent_lost.append(job)
    return plan
