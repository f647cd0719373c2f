"""节点代理的数据库线程：代理的全部数据库操作在这一个线程里串行执行。

不与读日志共用默认线程池：卡住的读（网络文件系统、FIFO）占满线程池时，结局照样写得进数据库。
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from conductor.db import make_engine, session_scope
from conductor.errors import DatabaseUnavailable, TransactionConflict

T = TypeVar("T")

# 失败后的退避：0.1 秒起倍增，最长 5 秒，带抖动（与 with_retry 相同）
FIRST_DELAY = 0.1
MAX_DELAY = 5.0


class AgentDb:
    """代理的数据库连接与它专用的线程。"""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url, pool_size=2, pre_ping=False)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """在数据库线程里开一个事务执行一次 fn(session, *args)（fn 为 conductor/store 的函数）。"""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.thread, functools.partial(self._call, fn, *args))

    async def run_retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """同 run，数据库不可用或事务冲突时退避重试（不占着数据库线程睡眠）；其他错误照常抛出。"""
        delay = FIRST_DELAY
        while True:
            try:
                return await self.run(fn, *args)
            except (DatabaseUnavailable, TransactionConflict):
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_DELAY)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        with session_scope(self.engine) as session:
            return fn(session, *args)
