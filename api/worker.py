"""API 进程：连接 Ray（作为 driver）、取得调度器，运行 uvicorn。

由 `conductor serve` 作为子进程启动并在其退出时重启：Ray 集群重启会让 driver 进程退出，
这里不必处理，监督进程会拉起新的 API 进程重新连接。配置全部来自 CONDUCTOR_* 环境变量。
"""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from api.runtime import Runtime
from cluster.bootstrap import connect_ray, ensure_scheduler
from cluster.client import ClusterClient
from conductor.db import make_engine
from conductor.settings import Settings

log = logging.getLogger("conductor.api")


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
    log.info("Conductor API 监听 http://%s:%s", settings.host, settings.port)
    uvicorn.run(create_app(runtime), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
