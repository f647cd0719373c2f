"""对账：把数据库中“占用资源”的作业与 Ray 上真实存活的执行比对。

调度器启动时（接受新工作之前）以及空闲时定期执行。判定规则（decide）是纯函数：
- 节点已死亡                      → NODE_FAIL（已取消的只释放资源）
- 已结束（取消之外的终态）却仍占用 → 只释放资源
- 已重新排队（PENDING）却仍占用    → 代理仍持有则等执行结束；代理不持有则只释放资源
- 派发时的代理仍在且持有作业      → 重新接管，什么也不做
- 派发时的代理仍在但不认识作业    → 启动对账时，或认领已超过 stranded_after 秒（运行期对账）：
                                     作业从未交到代理手里，重新排队
- 节点存活但派发时的代理已不在    → 任务随代理死亡：FAILED，并清理孤儿进程
- 节点存活但其代理暂时无响应      → 本轮不判定，下次再看（不冤枉慢节点）
- 本调度器正在派发途中的作业      → 本轮不判定

apply 把判定写进数据库（调度器与 conductor doctor 共用）。孤儿进程按主机清理
（orphan_tokens 分组、sweepers 选节点），调度器重试到那台主机上的代理确认为止。
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from conductor.db import session_scope
from conductor.exec_result import node_lost_message
from conductor.states import JobState
from conductor.store import reconcile as store
from conductor.store import transitions


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
    # 认领至今的秒数（数据库时钟）：运行期对账只处理认领已久、早该交到代理手里的作业
    claimed_for: float = 0.0


def load_held_jobs(engine: Engine) -> list[HeldJob]:
    """数据库中仍占用资源的全部作业（调度器对账与 conductor doctor 共用）。"""
    with session_scope(engine) as session:
        rows = store.held_jobs(session)
    return [
        HeldJob(
            r.id,
            JobState(r.state),
            r.node_id,
            r.node_name or "",
            r.agent_id,
            r.token,
            r.node_host,
            float(r.claimed_for),
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
    """decide 的判定。undecided 为本轮不判定的全部作业 id；其中同一代理存活却不持有的
    RUNNING 作业（可能还在派发途中）另列在 unknown，供 conductor doctor 报告。"""

    reattach: list[int] = field(default_factory=list)
    requeue: list[HeldJob] = field(default_factory=list)
    node_fail: list[HeldJob] = field(default_factory=list)
    agent_lost: list[HeldJob] = field(default_factory=list)
    undecided: list[int] = field(default_factory=list)
    finished: list[HeldJob] = field(default_factory=list)
    unknown: list[HeldJob] = field(default_factory=list)

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
        return bool(self.requeue or self.node_fail or self.agent_lost or self.finished)


def decide(
    held: Sequence[HeldJob],
    alive_nodes: Collection[str],
    agents: Mapping[str, AgentView | None],
    *,
    startup: bool,
    in_flight: Collection[int] = (),
    stranded_after: float = math.inf,
) -> ReconcilePlan:
    """agents：存活节点 → 代理视图；值为 None 表示代理暂时无响应。

    代理持有每个作业直到其结局写入数据库，所以“同一个存活代理不持有、仍为 RUNNING”即从未启动。
    运行期对账另加一道时限 stranded_after：刚认领的作业可能还在交给代理的路上，不去碰它。"""
    plan = ReconcilePlan()
    for job in held:
        if job.node_id not in alive_nodes:
            plan.node_fail.append(job)
            continue
        if job.state.is_terminal and job.state is not JobState.CANCELLED:
            plan.finished.append(job)  # 结局已写下，只是资源没有归还
            continue
        agent = agents.get(job.node_id)
        if job.job_id in in_flight or agent is None:
            plan.undecided.append(job.job_id)
        elif agent.agent_id != job.agent_id:
            plan.agent_lost.append(job)
        elif job.job_id in agent.jobs:
            plan.reattach.append(job.job_id)
        elif job.state is JobState.RUNNING and (startup or job.claimed_for >= stranded_after):
            plan.requeue.append(job)
        elif job.state is JobState.CANCELLED:
            # 已取消且代理不认识：执行已结束或从未开始，只需释放资源
            plan.agent_lost.append(job)
        elif job.state is JobState.PENDING:
            # 已重新排队、上一次执行的资源尚未归还，而代理已不持有它：执行已结束，只需释放资源，
            # 之后作业才能再次被认领
            plan.finished.append(job)
        else:
            plan.undecided.append(job.job_id)
            plan.unknown.append(job)
    return plan


AGENT_LOST = "节点代理已退出，作业的执行随之终止（作业不会自动重试，请重新提交）"


def apply(engine: Engine, plan: ReconcilePlan, lost_reason: str = AGENT_LOST) -> list[int]:
    """在一个事务里执行计划：重新排队、判 NODE_FAIL / FAILED（已取消的只释放资源）、归还已结束作业的资源。

    返回释放了资源或回到队列的作业 id。lost_reason 为代理丢失的作业写下的说明。"""
    with session_scope(engine) as session:
        freed = transitions.requeue(session, [(j.job_id, j.token or "") for j in plan.requeue])
        for job in plan.node_fail:
            transitions.settle_lost(
                session,
                [(job.job_id, job.token)],
                JobState.NODE_FAIL,
                node_lost_message(job.node_name),
            )
            freed.append(job.job_id)
        transitions.settle_lost(
            session, [(j.job_id, j.token) for j in plan.agent_lost], JobState.FAILED, lost_reason
        )
        transitions.release(
            session, [j.job_id for j in plan.finished], tokens=[j.token for j in plan.finished]
        )
        return freed + [j.job_id for j in plan.agent_lost] + [j.job_id for j in plan.finished]


def orphan_tokens(plan: ReconcilePlan, hosts: Mapping[str, str]) -> dict[str, set[str]]:
    """执行丢失的作业留下的令牌，按主机分组（清理按令牌扫描本机进程，同一主机上哪个代理都行）。

    hosts：存活节点 → 主机地址。代理换了的节点仍存活，主机取作业行的 node_host，缺了查 hosts；
    节点失联的只能取 node_host（没有记录的无从清理）。"""
    by_host: dict[str, set[str]] = defaultdict(set)
    for job in plan.agent_lost:
        host = job.node_host or hosts.get(job.node_id)
        if job.token and host:
            by_host[host].add(job.token)
    for job in plan.node_fail:
        if job.token and job.node_host:
            by_host[job.node_host].add(job.token)
    return dict(by_host)


def sweepers(pending: Mapping[str, Collection[str]], hosts: Mapping[str, str]) -> dict[str, str]:
    """为每个有待清理令牌的主机选一个节点：主机 → 节点（取 id 最小的，结果确定）。

    hosts：代理已就绪的存活节点 → 主机地址。还没有这样的节点的主机不在结果里：清理继续等，
    直到那台主机上出现存活节点与代理。"""
    chosen: dict[str, str] = {}
    for node_id, host in sorted(hosts.items()):
        if pending.get(host) and host not in chosen:
            chosen[host] = node_id
    return chosen
