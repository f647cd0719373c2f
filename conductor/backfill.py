"""规划中每个节点的账本与 EASY 回填的预留（纯函数，policy.plan 使用）。

账本记“已用”而不是“空闲”：已用是各作业向量之和，恒为非负，释放时减回去仍然准确；
Ray 报的容量比已用小（超额）时空闲为负，用已用比较不会因向量丢掉负值而算错。
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conductor.placement import NodeView, PendingJob, demand_on
from conductor.resources import NONE, Resources


@dataclass
class Slot:
    """一个预留：开始时刻与届时队首之外的余量；越过开始时刻的回填作业只能用余量。

    closed：队首是独占作业，越过开始时刻的作业一概不行。"""

    start: float
    spare: Resources
    closed: bool = False


@dataclass
class Release:
    """预计释放：时刻（None 为不限时）、向量、是否独占。"""

    end: float | None
    used: Resources
    exclusive: bool


@dataclass
class Ledger:
    """规划过程中一个节点的可变账本。"""

    view: NodeView
    used: Resources = NONE
    jobs: int = 0
    exclusive_busy: bool = False
    releases: list[Release] = field(default_factory=list)
    reserved: list[Slot] = field(default_factory=list)
    frozen: bool = False  # 有分区队首的开始时间算不出：不再回填

    def take(self, used: Resources, exclusive: bool, end: float | None) -> None:
        self.used = self.used + used
        self.jobs += 1
        self.exclusive_busy = self.exclusive_busy or exclusive
        self.releases.append(Release(end, used, exclusive))

    def fits_now(self, job: PendingJob) -> bool:
        if self.exclusive_busy:
            return False
        if job.exclusive:
            return self.jobs == 0
        return self.used.fits_with(demand_on(job, self.view), self.view.total)

    def respects_reservations(self, job: PendingJob, end: float | None) -> bool:
        """放在这里不会推迟任何预留：在预留开始前结束，或只用预留之外的余量。"""
        if self.frozen:
            return False
        need = demand_on(job, self.view)
        for slot in self.reserved:
            if end is not None and end <= slot.start:
                continue
            if slot.closed or job.exclusive or not need.fits_in(slot.spare):
                return False
        return True

    def charge_reservations(self, job: PendingJob, end: float | None) -> None:
        """越过预留开始时刻的回填作业占用余量。"""
        need = demand_on(job, self.view)
        for slot in self.reserved:
            if end is None or end > slot.start:
                slot.spare = slot.spare - need

    def start_for(self, job: PendingJob, now: float) -> Slot | None:
        """逐个应用预计释放，找到第一个放得下作业的时刻与届时的余量；有不限时的作业挡着则可能算不出。"""
        used, jobs = self.used, self.jobs
        exclusive_left = sum(1 for r in self.releases if r.exclusive)
        known = sorted((r for r in self.releases if r.end is not None), key=lambda r: r.end or 0.0)
        need = demand_on(job, self.view)
        total = self.view.total
        moment = now
        for step in range(len(known) + 1):
            if step:
                release = known[step - 1]
                used, jobs = used - release.used, jobs - 1
                exclusive_left -= int(release.exclusive)
                moment = max(release.end or now, now)
            if exclusive_left:
                continue
            if job.exclusive:
                if jobs == 0:
                    return Slot(moment, NONE, closed=True)
            elif used.fits_with(need, total):
                return Slot(moment, total - (used + need))
        return None

    def slot_at(self, job: PendingJob, start: float, now: float) -> Slot:
        """在 start 时刻（不早于本节点的 start_for）为作业预留：届时已结束的作业都释放后的余量。

        多节点作业的开始时刻取各节点中最晚的，早空出来的节点到那时可能余得更多。"""
        if job.exclusive:
            return Slot(start, NONE, closed=True)
        gone = [r for r in self.releases if r.end is not None and max(r.end, now) <= start]
        used = self.used
        for release in gone:
            used = used - release.used
        return Slot(start, self.view.total - (used + demand_on(job, self.view)))
