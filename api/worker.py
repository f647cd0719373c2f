"""API 进程：连接 Ray（作为 driver）、取得调度器，运行 uvicorn。

由 `conductor serve` 作为子进程启动并在其退出时重启：Ray 集群重启会让 driver 进程退出，
这里不必处理，监督进程会拉起新的 API 进程重新连接。配置全部来自 CONDUCTOR_* 环境变量。
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ray
import uvicorn

from api.app import create_app
from api.runtime import Runtime
from cluster.bootstrap import connect_ray, ensure_scheduler
from cluster.client import ClusterClient
from conductor.db import make_engine
from conductor.settings import Settings

log = logging.getLogger("conductor.api")


WATCHDOG_PERIOD = 2.0
WATCHDOG_TIMEOUT = 15.0


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


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings()
    connect_ray(settings)
    ensure_scheduler(settings)
    engine = make_engine(settings.database_url or "", pool_size=10)
    runtime = Runtime(settings, engine, ClusterClient(settings))
    log.info("Ray 仪表盘：%s", runtime.cluster.dashboard_url())
    threading.Thread(target=_watch_ray, name="ray-watchdog", daemon=True).start()
    log.info("Conductor API 监听 http://%s:%s", settings.host, settings.port)
    uvicorn.run(create_app(runtime), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
