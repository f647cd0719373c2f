"""连接 Ray，并取得（或创建）调度器 actor。"""

from __future__ import annotations

import logging
import time

import ray
from ray.exceptions import AuthenticationError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.names import SCHEDULER_NAME
from cluster.ray_auth import missing_token_hint, use_token_if_available
from cluster.scheduler import Scheduler
from conductor.errors import ClusterUnavailable, SchedulerUnavailable
from conductor.settings import Settings

log = logging.getLogger("conductor.bootstrap")


def connect_ray(settings: Settings, timeout: float = 120.0) -> None:
    """连接 settings.ray_address 指定的集群；集群尚在启动时重试到超时。

    令牌被拒不会自己好转：不重试，直接说明令牌该放在哪里。"""
    use_token_if_available()
    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.init(
                address=settings.ray_address, namespace=settings.namespace, log_to_driver=False
            )
            return
        except AuthenticationError as exc:
            raise ClusterUnavailable(
                f"Ray 集群 {settings.ray_address} 拒绝连接：{' '.join(str(exc).split())[:300]}；"
                f"{missing_token_hint()}"
            ) from exc
        except (ConnectionError, RuntimeError) as exc:
            if time.monotonic() > deadline:
                raise ClusterUnavailable(
                    f"无法连接 Ray 集群 {settings.ray_address}：{exc}"
                ) from exc
            log.info("Ray 集群 %s 尚不可用，稍后重试：%s", settings.ray_address, exc)
            time.sleep(1)


def stop_jobs(settings: Settings, reason: str, grace: float) -> int:
    """让调度器终止并记录所有运行中的作业（本地集群即将停止时调用）。"""
    connect_ray(settings, timeout=10)
    try:
        handle = ray.get_actor(SCHEDULER_NAME, namespace=settings.namespace)
        return ray.get(handle.shutdown_jobs.remote(reason, grace), timeout=120)
    finally:
        ray.shutdown()


def ensure_scheduler(settings: Settings, timeout: float = 120.0) -> ray.actor.ActorHandle:
    """取得或创建 detached 调度器，并等它完成启动对账。"""
    handle = Scheduler.options(  # type: ignore[attr-defined]
        name=SCHEDULER_NAME,
        namespace=settings.namespace,
        lifetime="detached",
        get_if_exists=True,
        # 放在服务所在的节点（ray up 的头节点）上：落在工作节点上，那个节点就永远不空闲、不能缩容；
        # 软约束，那个节点不在时 Ray 仍在别处重启它
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True
        ),
    ).remote(settings)
    if not ray.get(handle.wait_ready.remote(timeout), timeout=timeout + 5):
        raise SchedulerUnavailable("调度器在限定时间内未完成启动对账")
    return handle
