"""测试共用的小工具：轮询等待而不是固定 sleep。"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, text

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


def insert_pending(conn: Connection, n: int, work_dir: str = "/tmp") -> None:
    """直接在数据库里插入 n 个排队作业（脚本 true，1 CPU、10 MiB）：大队列的测试与基准共用。"""
    conn.execute(
        text(
            "INSERT INTO jobs (name, account, partition, script, environment, work_dir, "
            "stdout_path, stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, "
            "exclusive, state, submit_time, eligible_time, data_source) "
            "SELECT 'queued', 'bench', 'default', 'true', '{}', :wd, '/dev/null', '/dev/null', "
            "1, 1, 1, 10485760, false, 'PENDING', now(), now(), 'API' "
            "FROM generate_series(1, :n)"
        ),
        {"n": n, "wd": work_dir},
    )


def insert_job(
    conn: Connection, script: str = "true", work_dir: str = "/tmp", **columns: object
) -> int:
    """直接在数据库里写一个作业行（默认排队、1 CPU、10 MiB），返回 id；columns 覆盖任意列，
    值按 SQL 表达式写入（字符串要自带引号）。故障测试用它写出 API 不会写出的行。"""
    values: dict[str, object] = {
        "name": "'raw'",
        "account": "'test'",
        "partition": "'default'",
        "script": ":script",
        "environment": "'{}'",
        "work_dir": ":wd",
        "stdout_path": ":out",
        "stderr_path": "'/dev/null'",
        "ntasks_per_node": "1",
        "cpus_per_task": "1",
        "cpus": "1",
        "memory_bytes": "10485760",
        "exclusive": "false",
        "state": "'PENDING'",
        "submit_time": "now()",
        "eligible_time": "now()",
        "data_source": "'API'",
    } | columns
    return conn.execute(
        text(
            f"INSERT INTO jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(str(v) for v in values.values())}) RETURNING id"
        ),
        {"script": script, "wd": work_dir, "out": f"{work_dir}/raw.out"},
    ).scalar_one()
