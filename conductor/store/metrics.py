"""/metrics 与 /dashboard 的计数读取：job_stats（触发器维护的增量）的合并与读取、调度器的启动次数。

这些读取的代价与作业表的大小无关：从不扫描 jobs（/metrics 不需要令牌）。
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, text
from sqlmodel import Session

# 把全部增量换成每类一行：并发的合并各自删掉自己看到的行、各写一行和，总数不变
_COMPACT = text(
    "WITH gone AS (DELETE FROM job_stats RETURNING kind, label, n, total) "
    "INSERT INTO job_stats (kind, label, n, total) "
    "SELECT kind, label, SUM(n), SUM(total) FROM gone GROUP BY kind, label HAVING SUM(n) <> 0"
)
_READ = text("SELECT kind, label, SUM(n) AS n, SUM(total) AS total FROM job_stats GROUP BY 1, 2")


def compact(session: Session) -> None:
    """合并增量（读取时与定期各做一次，表不会因为没人抓取而一直变大）。"""
    session.execute(_COMPACT)


def stats_rows(session: Session) -> Sequence[Row[Any]]:
    """每类（kind, label）一行：计数 n 与延迟之和 total。"""
    return session.execute(_READ).all()


def scheduler_starts(session: Session) -> int:
    """调度器启动过几次（每次启动领取一个纪元）。"""
    return int(session.execute(text("SELECT COUNT(*) FROM scheduler_epochs")).scalar_one())
