"""作业计数：各状态的作业数与提交→开始延迟的直方图，读自 job_stats（触发器维护的增量）。

/metrics 不需要令牌：它的代价必须与作业表的大小无关。每次读取先把增量合并成每类一行
（只处理上次合并之后的新行），再相加；从不扫描 jobs。
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlmodel import Session

from conductor.store import metrics as store

# 提交→开始延迟的桶（秒）：批处理作业从亚秒到数小时。与迁移 0005_security 的 BUCKETS 相同
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)


@dataclass(frozen=True)
class JobFigures:
    """各状态的作业数；开始过的作业按延迟桶的个数（不累计，最后一个为 +Inf）、总数与延迟之和。"""

    counts: dict[str, int]
    latency_buckets: tuple[int, ...]
    started: int
    latency_sum: float


def job_figures(session: Session) -> JobFigures:
    """合并增量后读出计数。"""
    store.compact(session)
    counts: dict[str, int] = {}
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    latency_sum = 0.0
    for r in store.stats_rows(session):
        if r.kind == "state":
            counts[r.label] = int(r.n)
        elif r.kind == "started":
            buckets[_bucket(r.label)] += int(r.n)
            latency_sum += float(r.total)
    return JobFigures(counts, tuple(buckets), sum(buckets), latency_sum)


def _bucket(label: str) -> int:
    bound = float(label)  # "+Inf" 也能解析
    if math.isinf(bound):
        return len(LATENCY_BUCKETS)
    return next(
        (i for i, b in enumerate(LATENCY_BUCKETS) if math.isclose(b, bound)), len(LATENCY_BUCKETS)
    )
