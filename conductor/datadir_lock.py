"""数据目录的独占锁：同一个数据目录同时只能有一个 `conductor serve`。

第二个 serve 若照常启动，会连上第一个的内嵌 PostgreSQL（pgserver 复用正在运行的实例）与
同一个 Ray 端口；第一个停止时把它们一起停掉，第二个的调度器从此连不上数据库。
用 flock 而不是“有文件就算占用”：持锁进程崩溃时内核自动释放，不会留下要手工删的锁文件。
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from conductor.startup import StartupFailed

LOCK_NAME = "serve.lock"


def lock_data_dir(data_dir: Path) -> int:
    """占住数据目录，返回持锁的文件描述符（进程结束或 os.close 即释放）；已被占用时 StartupFailed。"""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "未知"
        os.close(fd)
        raise StartupFailed(
            f"数据目录 {data_dir} 正被另一个 conductor serve 使用（pid {holder}）："
            "请先停止它，或用 --data-dir 指定别的目录"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
