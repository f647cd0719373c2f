"""调度轮各条 SQL 在大队列上的耗时（空闲数据库，排除 CPU 争用）：

    python -m bench.queue_sql [--pending 100000]

启动一个临时的内嵌 PostgreSQL，迁移到最新结构，插入 N 个排队作业，逐条计时调度轮用到的读写。
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from conductor import queue, transitions
from conductor.db import make_engine, session_scope
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from tests.helpers import insert_pending

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

        def timed(name: str, step: Callable[..., object], rounds: int = 50) -> None:
            with session_scope(engine) as session:
                step(session)  # 预热
            started = time.perf_counter()
            for _ in range(rounds):
                with session_scope(engine) as session:
                    step(session)
            print(f"{name:28s} {(time.perf_counter() - started) / rounds * 1000:6.2f} ms")

        print(f"{args.pending} 个排队作业：")
        timed("重新判定依赖", queue.resolve_dependencies)
        timed("读占用资源的作业", queue.load_running)
        timed(f"读队首 {WINDOW} 个", lambda s: queue.load_pending(s, WINDOW, [], []))
        reasons = {i: "Priority" for i in range(1, 101)}
        timed("写 100 个等待原因", lambda s: transitions.set_reasons(s, reasons))
        engine.dispose()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
