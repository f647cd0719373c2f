"""`conductor serve`：监督进程，运行并看护整个服务。

按需启动内嵌 PostgreSQL（数据目录下）与本地 Ray 头节点，执行迁移，然后启动 API 进程
（api/worker.py），API 进程退出就按退避重启。收到 Ctrl-C 或 SIGTERM 时按相反顺序
停止它启动的一切：API 进程 → （本地 Ray 时）终止并记录运行中的作业 → Ray → PostgreSQL。
监督进程本身不连接 Ray，Ray 集群重启也不会让它退出。
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Annotated

import typer

from cluster.bootstrap import stop_jobs
from cluster.local_ray import LocalRayHead
from conductor.embedded_pg import EmbeddedPostgres
from conductor.lifeline import die_with_parent
from conductor.migrate import upgrade
from conductor.settings import Settings, get_settings

log = logging.getLogger("conductor.server")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0)
# API 进程运行超过这么久才退出，视为新的故障，退避从头开始
STABLE_SECONDS = 60.0


class Supervisor:
    """持有本次启动的全部子系统，负责按序启动、看护与停止。"""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.pg: EmbeddedPostgres | None = None
        self.ray_head: LocalRayHead | None = None
        self.api: subprocess.Popen[bytes] | None = None

    def run(self) -> None:
        try:
            self._start()
            self._watch_api()
        finally:
            self._stop()

    def _start(self) -> None:
        s = self.settings
        url = s.database_url
        if not url:
            self.pg = EmbeddedPostgres(s.data_dir)
            url = self.pg.url
        upgrade(url)
        address = s.ray_address
        if not address:
            self.ray_head = LocalRayHead(s, s.data_dir / "logs" / "ray-head.log")
            address = self.ray_head.address
        self.settings = s.model_copy(update={"database_url": url, "ray_address": address})

    def _api_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in self.settings.model_dump(mode="json", exclude_none=True).items():
            # 字典（账户映射）须以 JSON 传递，pydantic-settings 才能解析回来
            env[f"CONDUCTOR_{name.upper()}"] = (
                json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
        return env

    def _watch_api(self) -> None:
        """运行 API 进程；它意外退出时按退避重启。本地 Ray 头节点死亡时重启 Ray，再重启 API
        （新调度器启动对账时把旧集群上的作业判为 NODE_FAIL，排队作业在新集群上运行）。"""
        failures = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.api = subprocess.Popen(
                [sys.executable, "-m", "api.worker"],
                env=self._api_env(),
                start_new_session=True,
                preexec_fn=die_with_parent,  # 监督进程被 SIGKILL 时 API 进程也退出
            )
            code = self._wait_api()
            if time.monotonic() - started > STABLE_SECONDS:
                failures = 0
            if self.stopping.is_set():
                return
            if self.ray_head is not None and not self.ray_head.alive():
                log.error("本地 Ray 头节点已退出，重新启动 Ray")
                self.ray_head.stop()
                self.ray_head = LocalRayHead(
                    self.settings, self.settings.data_dir / "logs" / "ray-head.log"
                )
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            log.warning("API 进程退出（代码 %s），%.0f 秒后重启", code, delay)
            self.stopping.wait(delay)

    def _wait_api(self) -> int | None:
        """等 API 进程退出；本地 Ray 头节点先死时结束 API 进程（它的连接已失效）。"""
        assert self.api is not None
        while not self.stopping.is_set():
            try:
                return self.api.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if self.ray_head is not None and not self.ray_head.alive():
                    self.api.terminate()
        return self.api.wait()

    def request_stop(self, signum: int, frame: object) -> None:
        log.info("收到信号 %s，停止服务", signal.Signals(signum).name)
        self.stopping.set()
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()

    def _stop(self) -> None:
        self.stopping.set()
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
        if self.api is not None:
            try:
                self.api.wait(30)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()
        if self.ray_head is not None:
            if self.ray_head.alive():
                self._stop_jobs()
            self.ray_head.stop()
        if self.pg is not None:
            self.pg.stop()
        log.info("Conductor 已停止")

    def _stop_jobs(self) -> None:
        """本地 Ray 即将停止：在一个短命的子进程里（它连接 Ray）终止并记录全部作业。"""
        grace = min(self.settings.kill_wait, 5.0)
        reason = "服务关闭，本地 Ray 集群随之停止，作业被终止"
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=stop_jobs, args=(self.settings, reason, grace))
        proc.start()
        proc.join(150)
        if proc.is_alive():
            log.warning("终止作业超时")
            proc.kill()
            proc.join()


def serve(
    host: Annotated[str | None, typer.Option(help="API 监听地址")] = None,
    port: Annotated[int | None, typer.Option(help="API 监听端口")] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="数据目录（内嵌 PostgreSQL 与日志）")
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="本地 Ray 的逻辑 CPU 数，默认本机核数")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="使用已有的 PostgreSQL")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="连接已有的 Ray 集群（HOST:PORT）")
    ] = None,
) -> None:
    """运行整个服务：PostgreSQL（内嵌或外部）、Ray（本地或外部）、调度器与 API。"""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "num_cpus": num_cpus,
        "database_url": database_url,
        "ray_address": ray_address,
    }
    merged = {
        **get_settings().model_dump(),
        **{k: v for k, v in overrides.items() if v is not None},
    }
    settings = Settings(**merged)
    try:
        settings.check_security()  # 在启动任何东西之前拒绝不安全的配置
    except ValueError as exc:
        log.error("%s", exc)
        raise typer.Exit(2) from exc
    supervisor = Supervisor(settings)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    supervisor.run()
