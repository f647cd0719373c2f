"""调度轮的节奏：这一轮是快速轮还是深轮、要不要重新判定依赖、之后何时再来一轮；出错后的退避。

时钟由调用者注入（now()，默认 time.monotonic，与事件循环的时钟相同，调度器据此定时唤醒），
测试用假时钟拨动时间（Kueue 的 WithClock）。这里只做算术，不等待、不碰数据库。
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# 队首窗口的余量（Slurm 的主调度与回填之分）：事件触发的快速轮每个分区只读“该分区空闲 CPU + QUICK_SLACK”行，
# 足以填满空闲 CPU；深轮读“+ QUEUE_SLACK”行，回填能看到这么深，并刷新更多等待原因
QUICK_SLACK = 8
QUEUE_SLACK = 100
# 深轮的周期秒数；快速轮读满窗口仍留下空闲 CPU 时（队首放不下），最快隔 DEEP_RETRY 秒补一次深轮
DEEP_INTERVAL = 0.5
DEEP_RETRY = 0.05
# 两次重新判定依赖的最短间隔秒数：大量作业等待依赖时不必每轮都读它们
DEPENDENCY_INTERVAL = 0.25
# 出错后重试同一步的退避（秒）：从 RETRY_FIRST 起每次加倍，封顶 RETRY_MAX
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


@dataclass(frozen=True)
class Pace:
    """一轮的节奏。wake_at：本轮跳过的事稍后要补一轮的时刻（now() 的刻度），不必补为 None。"""

    deep: bool
    check_dependencies: bool
    wake_at: float | None = None

    @property
    def slack(self) -> int:
        """每个分区在空闲 CPU 之外多读的队首行数。"""
        return QUEUE_SLACK if self.deep else QUICK_SLACK


def _earliest(*moments: float | None) -> float | None:
    return min((m for m in moments if m is not None), default=None)


class Pacing:
    """记住上次深轮与上次判定依赖的时刻，决定每一轮的节奏。"""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.deep_at = 0.0
        self.deep_wanted = False
        self.dependencies_checked = 0.0

    def next_pass(self) -> Pace:
        """开始一轮：到了间隔才判定依赖、才读深窗口；跳过的稍后补一轮。"""
        now = self.now()
        wakes: list[float] = []
        check_dependencies = now - self.dependencies_checked >= DEPENDENCY_INTERVAL
        if check_dependencies:
            self.dependencies_checked = now
        else:
            # 本轮跳过依赖判定：稍后补一轮，刚结束的作业的依赖者不必等到空闲对账
            wakes.append(self.dependencies_checked + DEPENDENCY_INTERVAL)
        since_deep = now - self.deep_at
        deep = since_deep >= DEEP_INTERVAL or (self.deep_wanted and since_deep >= DEEP_RETRY)
        if deep:
            self.deep_at, self.deep_wanted = now, False
        elif self.deep_wanted:
            wakes.append(self.deep_at + DEEP_RETRY)
        return Pace(deep, check_dependencies, _earliest(*wakes))

    def passed(self, pace: Pace, window_full: bool) -> float | None:
        """一轮结束，返回最早该再来一轮的时刻（None 为不必）。

        快速轮读满窗口、仍有空闲 CPU：窗口之后可能有能回填的作业，尽快补一次深轮。"""
        if window_full and not pace.deep:
            self.deep_wanted = True
            return _earliest(pace.wake_at, self.deep_at + DEEP_RETRY)
        return pace.wake_at


def backoff(first: float = RETRY_FIRST, cap: float = RETRY_MAX) -> Iterator[float]:
    """退避的等待秒数：first、2·first……封顶 cap，永不结束（Kueue 的 wait/backoff.go）。"""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)
