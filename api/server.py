"""`conductor serve`：在一个进程里运行整个服务。

按需启动内嵌 PostgreSQL（数据目录下）与本地 Ray（含仪表盘），执行迁移，
取得调度器，然后运行 API。收到 Ctrl-C 或 SIGTERM 时按相反顺序停止它启动的一切。
"""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import ray
import typer
import uvicorn

from api.app import create_app
from api.runtime import Runtime
from cluster.bootstrap import connect_ray, ensure_scheduler
from cluster.client import ClusterClient
from conductor.cli import app
from conductor.db import make_engine
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from conductor.settings import Settings, get_settings

log = logging.getLogger("conductor.server")


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_service(settings: Settings) -> None:
    """启动并运行服务直到收到停止信号；退出前停止本进程启动的 PostgreSQL 与 Ray。"""
    # 启动阶段也要能被 SIGTERM 干净地打断
    signal.signal(signal.SIGTERM, _exit_on_signal)
    pg: EmbeddedPostgres | None = None
    own_ray = False
    try:
        url = settings.database_url
        if not url:
            pg = EmbeddedPostgres(settings.data_dir)
            url = pg.url
        upgrade(url)
        settings = settings.model_copy(update={"database_url": url})
        connection = connect_ray(settings)
        own_ray = connection.own
        ensure_scheduler(settings)
        runtime = Runtime(
            settings,
            make_engine(url, pool_size=10),
            ClusterClient(settings),
            connection.dashboard_url,
        )
        log.info("Ray 仪表盘：%s", connection.dashboard_url)
        log.info("Conductor API 监听 http://%s:%s", settings.host, settings.port)
        config = uvicorn.Config(
            create_app(runtime), host=settings.host, port=settings.port, log_level="info"
        )
        uvicorn.Server(config).run()
    except SystemExit:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(settings, own_ray, pg)


def _stop(settings: Settings, own_ray: bool, pg: EmbeddedPostgres | None) -> None:
    if own_ray and ray.is_initialized():
        log.info("停止本地 Ray：先终止并记录仍在运行的作业")
        try:
            handle = ray.get_actor("conductor-scheduler", namespace=settings.namespace)
            reason = "服务关闭，本地 Ray 集群随之停止，作业被终止"
            ray.get(handle.shutdown_jobs.remote(reason, min(settings.kill_wait, 5.0)), timeout=60)
        except Exception as exc:  # noqa: BLE001 - 关闭时尽力而为
            log.warning("关闭前终止作业失败：%s", exc)
        ray.shutdown()
    elif ray.is_initialized():
        ray.shutdown()  # 外部集群：只断开连接，调度器与作业继续运行
    if pg is not None:
        pg.stop()
    log.info("Conductor 已停止")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="API 监听地址")] = None,
    port: Annotated[int | None, typer.Option(help="API 监听端口")] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="数据目录（内嵌 PostgreSQL）")
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="本地 Ray 的逻辑 CPU 数")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="使用外部 PostgreSQL")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="连接外部 Ray 集群")
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
    base = get_settings()
    settings = Settings(
        **{**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    run_service(settings)


def main() -> None:
    app()
