"""轮询等待而不是固定 sleep，以及“进程还活着吗”。"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "",
) -> T:
    """反复调用 predicate 直到返回真值并返回它；超时则断言失败。"""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            label = what() if callable(what) else what
            raise AssertionError(f"等待超时（{timeout} 秒）：{label or predicate}")
        time.sleep(interval)
        last = predicate()
    return last


def pid_alive(pid: int) -> bool:
    """进程存在且不是僵尸。"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
