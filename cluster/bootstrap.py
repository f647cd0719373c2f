"""连接或启动 Ray，并取得（或创建）调度器 actor。"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ray

from cluster.scheduler import SCHEDULER_NAME, Scheduler
from conductor.errors import SchedulerUnavailable
from conductor.settings import Settings

log = logging.getLogger("conductor.bootstrap")


@dataclass(frozen=True)
class RayConnection:
    """own=True 表示本进程启动了本地 Ray（关闭服务时由它负责停止）。"""

    own: bool
    dashboard_url: str | None


def connect_ray(settings: Settings) -> RayConnection:
    """连接 settings.ray_address 指定的集群，否则启动本地 Ray（含仪表盘）。"""
    if settings.ray_address:
        ctx = ray.init(
            address=settings.ray_address, namespace=settings.namespace, log_to_driver=False
        )
        return RayConnection(own=False, dashboard_url=_http(ctx.dashboard_url))
    # address="local"：总是新起一个实例，不去连接本机上别人的 Ray（RAY_ADDRESS、ray start 留下的地址）
    ctx = ray.init(
        address="local",
        num_cpus=settings.effective_num_cpus(),
        namespace=settings.namespace,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port,
        log_to_driver=False,
    )
    return RayConnection(own=True, dashboard_url=_http(ctx.dashboard_url))


def _http(url: str | None) -> str | None:
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def ensure_scheduler(settings: Settings, timeout: float = 120.0) -> ray.actor.ActorHandle:
    """取得或创建 detached 调度器，并等它完成启动对账。"""
    handle = Scheduler.options(
        name=SCHEDULER_NAME,
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings)
    if not ray.get(handle.wait_ready.remote(timeout), timeout=timeout + 5):
        raise SchedulerUnavailable("调度器在限定时间内未完成启动对账")
    return handle
