"""API 的地址登记在 Ray 的 GCS（内部 KV）里：执行器在作业启动时读它，作为作业的 CONDUCTOR_URL。

调度器与节点代理是常驻 actor，可能由更早的一次 serve 创建，它们手里的配置不一定是当前 API 的；
GCS 是 API 进程与各节点上的执行器都能读写的地方。API 每次启动都重新登记（覆盖旧值）。
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ray
from ray.experimental import internal_kv

if TYPE_CHECKING:
    # 只作类型注解：执行器的 worker 也导入本模块，不为它加载 pydantic-settings（约 9 MB）
    from conductor.settings import Settings

log = logging.getLogger("conductor.client")

_KEY = "conductor:service-url"


def service_url(settings: Settings) -> str:
    """作业访问 API 用的地址：CONDUCTOR_PUBLIC_URL；没给时由监听地址推出，监听所有地址时用本机在
    Ray 集群里的地址（其他节点上的作业也连得上）。"""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = ray.util.get_node_ip_address()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def publish(url: str, namespace: str) -> None:
    """登记 API 的地址（API 进程启动后调用）。登记失败只记日志：作业照常运行，只是没有 CONDUCTOR_URL。"""
    try:
        internal_kv._internal_kv_put(_KEY, url, overwrite=True, namespace=namespace)
    except Exception as exc:  # noqa: BLE001
        log.warning("无法在 Ray 中登记 API 地址 %s：%s", url, exc)


def lookup(namespace: str | None) -> str | None:
    """读出登记的 API 地址；没有登记或读不到时 None。"""
    try:
        value = internal_kv._internal_kv_get(_KEY, namespace=namespace)
    except Exception:  # noqa: BLE001 - 读不到就不给 CONDUCTOR_URL
        return None
    return value.decode() if value else None
