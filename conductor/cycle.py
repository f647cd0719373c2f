"""一轮调度：不碰 Ray 的“判定依赖 → 读窗口 → 快照 → 决策 → 等待原因 → 认领”。

形状取自 Kueue 的 schedule()：一轮按编号的阶段依次进行（见 SchedulingCycle.run），
全部在调用者的一个线程、一个事务里完成（每轮只切换一次线程、只提交一次）。
空闲资源由调用者以 ReadyNode（策略看到的 NodeView，加认领要记下的代理身份与主机）传入，
管理员排空的节点在这里按 node_drains 标上（同一事务）；
派发（Ray 任务、节点代理）留在 cluster/dispatch.py。节奏（快速轮或深轮）由 pacing.py 决定，时钟可注入。
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from sqlalchemy.engine import Engine
from sqlmodel import Session

from conductor import resolver
from conductor.account_limits import limit_for
from conductor.db import session_scope
from conductor.pacing import Pace, Pacing
from conductor.policy import (
    NodeView,
    PendingJob,
    Placement,
    RunningJob,
    Snapshot,
    free_cpus,
    plan,
    saturated,
)
from conductor.proctree import new_token
from conductor.resources import NONE, Resources
from conductor.settings import Settings
from conductor.store import dependencies, drains, queue, transitions

log = logging.getLogger("conductor.scheduler")

# 记住的等待原因条数上限（只写变化了的原因）；超过即清空重来
REASON_CACHE = 50_000


@dataclass(frozen=True)
class ReadyNode:
    """代理已就绪的存活节点：策略看到的容量与分区，加上认领要记下的代理身份与主机地址。"""

    view: NodeView
    agent_id: str
    host: str


class PassFigures(NamedTuple):
    """一轮的数字，作为指标导出：就绪节点的资源总量、已分配量（CPU、GPU、通用资源同一个向量）、
    读到的排队数、放置数。"""

    total: Resources = NONE
    allocated: Resources = NONE
    queued: int = 0
    placed: int = 0


@dataclass(frozen=True)
class CycleResult:
    """一轮的结果。claimed 为认领到的作业行（交给派发）；wake_at 为节奏要求再来一轮的时刻。"""

    deep: bool
    claimed: list[dict[str, Any]]
    resolved: bool  # 有作业的依赖判定改变了
    read: int  # 读到的排队作业数
    placed: int
    window_full: bool  # 有分区读满了窗口且仍有空闲 CPU
    wake_at: float | None

    @property
    def again(self) -> bool:
        """马上再来一轮：刚满足依赖的作业可能不在本轮窗口里；读到的都放下了，可能还有空闲。"""
        return self.resolved or (self.placed > 0 and self.placed == self.read)


@dataclass(frozen=True)
class Window:
    """阶段 2 读到的：仍占用资源的作业、各分区的队首、空闲 CPU 总数、是否有还空着 CPU 的分区读满了窗口。"""

    running: list[RunningJob]
    pending: list[PendingJob]
    free: int
    full: bool


def _sum(vectors: Iterable[Resources]) -> Resources:
    """向量之和，逐项累加到一个字典里：sum() 每加一个就新建一个向量，1 万个运行中作业时要几十毫秒。"""
    amounts: dict[str, float] = defaultdict(float)
    for vector in vectors:
        for name, value in vector.amounts.items():
            amounts[name] += value
    return Resources(amounts)


class SchedulingCycle:
    """调度器的决策部分。跨轮记住的只有节奏、依赖复查的游标与写过的等待原因，丢了（重启）无妨。"""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        epoch: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.epoch = epoch
        self.partitions = settings.partition_table()
        self.pacing = Pacing(clock)
        self.dependency_cursor = resolver.DependencyCursor()
        self.reasons: dict[int, str] = {}
        # 最近一轮的数字（出错的一轮为出错前已得到的），供指标
        self.figures = PassFigures()

    def run(self, nodes: Sequence[ReadyNode]) -> CycleResult:
        """一轮，一个事务。"""
        # 0 节奏：快速轮还是深轮，这轮判不判定依赖
        pace = self.pacing.next_pass()
        with session_scope(self.engine) as session:
            views = self._views(session, nodes)
            # 1 重新判定等待依赖的作业
            resolved = self._resolve_dependencies(session, pace)
            # 2 读窗口：仍占用资源的作业与各分区的队首
            window = self._read_window(session, views, pace.slack)
            total = _sum(v.total for v in views)
            allocated = _sum(r.used for r in window.running)
            self.figures = PassFigures(total, allocated, len(window.pending), 0)
            if not window.pending:
                return self._result(pace, resolved, window, [], [])
            # 3 快照；4 纯策略决策
            decision = plan(self._snapshot(views, window))
            placements = decision.placements
            self.figures = PassFigures(total, allocated, len(window.pending), len(placements))
            # 5 等待原因：只写变化了的
            queue.set_reasons(session, self._changed_reasons(decision.reasons))
            if placements:
                log.debug("放置：%s；预留：%s", placements, decision.reservations)
            # 6 认领（比较并交换：期间被取消、挂起的不会被认领）
            claimed = self._claim(session, placements, nodes)
        return self._result(pace, resolved, window, placements, claimed)

    @staticmethod
    def _views(session: Session, nodes: Sequence[ReadyNode]) -> list[NodeView]:
        """策略看到的节点：管理员排空的（node_drains，按节点名）标上 drain；Ray 报告排空的调用者已标上。"""
        drained = drains.drained_names(session)
        return [
            replace(n.view, drain=True) if n.view.node_name in drained else n.view for n in nodes
        ]

    def _resolve_dependencies(self, session: Session, pace: Pace) -> dict[int, str]:
        resolved: dict[int, str] = {}
        if pace.check_dependencies:
            # 游标在提交前就前进：本轮若回滚，漏掉的判定由回看与轮转复查补上
            resolved, self.dependency_cursor = resolver.resolve_dependencies(
                session, self.dependency_cursor
            )
        dependencies.set_dependency_states(session, resolved)
        return resolved

    def _read_window(self, session: Session, views: list[NodeView], slack: int) -> Window:
        """每个作业至少 1 个 CPU：一个分区最多放得下“该分区空闲 CPU”个，每个分区只读这么多（加余量 slack），
        一个分区排着再多放不下的作业也挡不住别的分区。没有空闲 CPU 的分区（占满、没有存活节点）
        也读 slack 行：它们的队首照样预留、等待原因照样刷新。集群占满时不读。"""
        running = queue.load_running(session)
        free, by_partition = free_cpus(views, running, self.partitions.names)
        if free == 0:
            return Window(running, [], free, False)
        running_arrays = sorted({r.array_job_id for r in running if r.array_job_id})
        skip_accounts, skip_arrays = saturated(
            running, self.settings.account_limits, queue.array_limits(session, running_arrays)
        )
        windows = {name: idle + slack for name, idle in by_partition.items()}
        pending = queue.load_pending(session, windows, skip_accounts, skip_arrays)
        read = Counter(j.partition for j in pending)
        full = any(read[name] == windows[name] for name, idle in by_partition.items() if idle)
        return Window(running, pending, free, full)

    def _snapshot(self, views: list[NodeView], window: Window) -> Snapshot:
        return Snapshot(
            views,
            window.running,
            window.pending,
            now=time.time(),
            account_limits=lambda account: limit_for(self.settings.account_limits, account),
            exceeds_partition_max=self.partitions.exceeds_max,
        )

    def _changed_reasons(self, reasons: dict[int, str]) -> dict[int, str]:
        """只写与上次不同的等待原因，避免每轮重写整个窗口。"""
        if len(self.reasons) > REASON_CACHE:
            self.reasons.clear()
        changed = {j: r for j, r in reasons.items() if self.reasons.get(j) != r}
        self.reasons.update(changed)
        return changed

    def _claim(
        self, session: Session, placements: list[Placement], nodes: Sequence[ReadyNode]
    ) -> list[dict[str, Any]]:
        """代理身份与主机取第一个节点（批处理节点）的；--mem=0 的多节点作业记下各节点中最小的内存
        （每个节点都至少有这么多，作业环境与记账不会说多）。"""
        by_id = {n.view.node_id: n for n in nodes}
        return transitions.claim(
            session,
            placements,
            [new_token() for _ in placements],
            [by_id[p.node_id].agent_id for p in placements],
            self.epoch,
            [by_id[p.node_id].host for p in placements],
            [int(min(by_id[n].view.total_memory for n in p.node_ids)) for p in placements],
        )

    def _result(
        self,
        pace: Pace,
        resolved: dict[int, str],
        window: Window,
        placements: list[Placement],
        claimed: list[dict[str, Any]],
    ) -> CycleResult:
        placed = {p.job_id for p in placements}
        idle = window.free - sum(j.cpus * j.nodes for j in window.pending if j.job_id in placed)
        window_full = window.full and idle > 0
        return CycleResult(
            deep=pace.deep,
            claimed=claimed,
            resolved=bool(resolved),
            read=len(window.pending),
            placed=len(placements),
            window_full=window_full,
            wake_at=self.pacing.passed(pace, window_full),
        )
