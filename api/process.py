"""API 进程：连接 Ray（作为 driver）、取得调度器，运行 uvicorn。

由 `conductor serve` 作为子进程启动并在其退出时重启：Ray 集群重启会让 driver 进程退出，
这里不必处理，监督进程会拉起新的 API 进程重新连接。配置全部来自 CONDUCTOR_* 环境变量。
就绪（开始监听）或启动失败都经监督进程给的管道报告一行：`ok`，或 `error 原因`。
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ray
import uvicorn

from api.app import create_app
from api.runtime import Runtime
from cluster import service_url
from cluster.bootstrap import connect_ray, ensure_scheduler
from cluster.client import ClusterClient
from conductor.db import make_engine
from conductor.errors import ConductorError
from conductor.settings import Settings
from conductor.startup import READY_FD_VAR, failure_cause

log = logging.getLogger("conductor.api")


WATCHDOG_PERIOD = 2.0
WATCHDOG_TIMEOUT = 15.0
# 数据库连接在池里闲置超过这么久才在取出时探活（conductor/db.py make_engine 的 ping_idle）
PING_IDLE = 1.0


def _watch_ray() -> None:
    """Ray 连接看门狗：GCS 不再应答（集群重启或停止）时退出进程，由监督进程重启并重新连接。

    Ray 的 driver 连上重启后的 GCS 会直接中止，无法在进程内重连，所以选择干净地退出。
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-watchdog") as pool:
        while True:
            time.sleep(WATCHDOG_PERIOD)
            try:
                pool.submit(ray.nodes).result(timeout=WATCHDOG_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - 超时或任何错误都意味着连接已不可用
                log.error("与 Ray 集群的连接已丢失（%s），API 进程退出以便重启", exc)
                logging.shutdown()
                os._exit(3)


class ReadyPipe:
    """向监督进程报告就绪或失败（各一行）；不是由监督进程启动时什么也不做。"""

    def __init__(self) -> None:
        fd = os.environ.pop(READY_FD_VAR, "")
        self._file = os.fdopen(int(fd), "w") if fd else None

    def _say(self, line: str) -> None:
        if self._file is not None:
            self._file.write(" ".join(line.split()) + "\n")  # 原因只占一行
            self._file.close()
            self._file = None

    def ok(self) -> None:
        self._say("ok")

    def fail(self, reason: str) -> None:
        self._say("error " + reason)


def _listen(host: str, port: int) -> socket.socket:
    """自己绑定监听端口：被占用时给出清楚的原因，而不是 uvicorn 打印后退出。"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"无法监听 {host}:{port}：{exc.strerror}（端口被占用时换 --port）") from exc
    return sock


def _startup_reason(exc: BaseException) -> str:
    """启动失败的一行原因：我们自己的错误原样（已是给用户的话），其余从异常文本里挑一行。"""
    if isinstance(exc, ConductorError | OSError):
        return " ".join(str(exc).split())[:500]
    return failure_cause(str(exc)) or type(exc).__name__


def _serve(server: uvicorn.Server, sock: socket.socket, ready: ReadyPipe) -> None:
    """运行 uvicorn；它开始接受连接时报告就绪。"""

    def report_when_started() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.ok()

    threading.Thread(target=report_when_started, name="ready", daemon=True).start()
    server.run(sockets=[sock])


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ready = ReadyPipe()
    try:
        settings = Settings()
        connect_ray(settings)
        ensure_scheduler(settings)
        engine = make_engine(settings.database_url or "", pool_size=10, ping_idle=PING_IDLE)
        runtime = Runtime(settings, engine, ClusterClient(settings))
        sock = _listen(settings.host, settings.port)
    except Exception as exc:
        log.exception("API 进程启动失败")
        ready.fail(_startup_reason(exc))
        raise SystemExit(4) from exc
    log.info("Ray 仪表盘：%s", runtime.cluster.dashboard_url())
    # 作业里的 Slurm 命令经 CONDUCTOR_URL 找到本 API（执行器从 GCS 读它）
    service_url.publish(service_url.service_url(settings), settings.namespace)
    threading.Thread(target=_watch_ray, name="ray-watchdog", daemon=True).start()
    log.info("Conductor API 监听 http://%s:%s", settings.host, settings.port)
    config = uvicorn.Config(create_app(runtime), log_level="info")
    _serve(uvicorn.Server(config), sock, ready)


if __name__ == "__main__":
    main()
