"""调度轮各条 SQL 在大队列上的耗时（空闲数据库，排除 CPU 争用）：

    python -m bench.queue_sql [--pending 100000]

启动一个临时的内嵌 PostgreSQL，迁移到最新结构，插入 N 个排队作业，逐条计时调度轮用到的读写。
之后再量几种“队首读不到能跑的作业”的情形：N 个作业堵在一个忙分区（另一个分区空闲、只有 1 个作业）；
它们的账户已到上限；N 个作业都在等一个被挂起的作业（再加 1,000 个作业依赖刚结束的作业）。
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from conductor import resolver
from conductor.db import make_engine, session_scope
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from conductor.store import queue
from harness.rows import insert_pending

WINDOW = 108  # 8 个空闲 CPU + 余量 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pending", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="conductor-queue-sql-"))
    server = EmbeddedPostgres(root)
    try:
        upgrade(server.url)
        engine = make_engine(server.url)
        with engine.begin() as conn:
            insert_pending(conn, args.pending)
            conn.execute(text("ANALYZE jobs"))

        def timed(
            name: str,
            step: Callable[..., Any],
            rounds: int = 50,
            note: Callable[[Any], str] | None = None,
        ) -> None:
            with session_scope(engine) as session:
                result = step(session)  # 预热；note 说明这一轮读到了什么
            started = time.perf_counter()
            for _ in range(rounds):
                with session_scope(engine) as session:
                    step(session)
            elapsed = (time.perf_counter() - started) / rounds * 1000
            print(f"{name:28s} {elapsed:6.2f} ms" + (f"  {note(result)}" if note else ""))

        print(f"{args.pending} 个排队作业：")
        timed("重新判定依赖", resolver.resolve_dependencies)  # 每轮从头：回看 1 分钟
        timed("读占用资源的作业", queue.load_running)
        timed(f"读队首 {WINDOW} 个", lambda s: queue.load_pending(s, {"default": WINDOW}, [], []))
        reasons = {i: "Priority" for i in range(1, 101)}
        timed("写 100 个等待原因", lambda s: queue.set_reasons(s, reasons))

        # N 个作业都在忙分区 default，空闲分区 gpu 只有排在最后的 1 个
        with engine.begin() as conn:
            insert_pending(conn, 1)
            conn.execute(
                text("UPDATE jobs SET partition = 'gpu' WHERE id = (SELECT max(id) FROM jobs)")
            )
        timed(
            "读窗口：忙分区 + 空闲分区",
            # 忙分区没有空闲 CPU，只读余量 100 行；空闲分区读“8 + 100”行
            lambda s: queue.load_pending(s, {"default": WINDOW - 8, "gpu": WINDOW}, [], []),
            note=lambda rows: (
                f"读到 {len(rows)} 个，其中空闲分区的 {sum(r.partition == 'gpu' for r in rows)} 个"
            ),
        )

        # 全部作业所属的账户已到上限：读窗口时整体排除，但要沿索引跳过它的每一个作业（未修）
        timed(
            "读窗口：账户已到上限",
            lambda s: queue.load_pending(s, {"default": WINDOW - 8, "gpu": WINDOW}, ["bench"], []),
            rounds=10,
            note=lambda rows: f"读到 {len(rows)} 个",
        )

        # N 个作业等待一个挂起的作业（它永不放行）：每轮只有轮转复查的一批
        with engine.begin() as conn:
            insert_pending(conn, 1)
            held = conn.execute(text("SELECT max(id) FROM jobs")).scalar_one()
            conn.execute(text("UPDATE jobs SET held = true WHERE id = :id"), {"id": held})
            conn.execute(
                text(
                    "UPDATE jobs SET dependency = 'afterok:' || :held, dependency_ids = ARRAY[:held], "
                    "dependency_state = 'WAITING' WHERE id < :held"
                ),
                {"held": held},
            )
            conn.execute(text("ANALYZE jobs"))
        waiting = f"重新判定依赖（{args.pending} 个等待）"
        timed(waiting, resolver.resolve_dependencies, note=lambda r: f"判定改变 {len(r[0])} 个")

        # 再加 1,000 个刚结束的作业，各有 1 个作业依赖它：一轮至多判定一批，其余下一轮
        with engine.begin() as conn:
            insert_pending(conn, 1000)
            conn.execute(
                text(
                    "UPDATE jobs SET state = 'COMPLETED', start_time = now(), "
                    "end_time = clock_timestamp() WHERE id > :held"
                ),
                {"held": held},
            )
            insert_pending(conn, 1000)
            conn.execute(
                text(
                    "UPDATE jobs SET dependency = 'afterok:' || (id - 1000), "
                    "dependency_ids = ARRAY[id - 1000], dependency_state = 'WAITING' "
                    "WHERE id > :held + 1000"
                ),
                {"held": held},
            )
            conn.execute(text("ANALYZE jobs"))
        timed(
            waiting + "，1,000 个刚结束",
            resolver.resolve_dependencies,
            note=lambda r: f"判定改变 {len(r[0])} 个（共 1,000 个可满足）",
        )
        engine.dispose()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
