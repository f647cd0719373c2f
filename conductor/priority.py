"""有效优先级 = priority + 等待的分钟数（年龄因子）；高者先，同分先提交者先。

年龄对所有排队作业以同样速度增长，所以两个作业的先后与时刻无关，
可以存为一个不随时间变化的排序键：queue_rank = 提交时刻（分钟）− priority，升序即队列顺序。
这样队列由索引直接给出，调度轮不必全表扫描、也不必每轮重新排序。
"""

from __future__ import annotations

from datetime import datetime

MIN_PRIORITY = 0
MAX_PRIORITY = 1_000_000


def queue_rank(priority: int, submit_time: datetime) -> float:
    """越小越靠前：priority 每高 1，相当于早提交 1 分钟。"""
    return submit_time.timestamp() / 60.0 - priority
