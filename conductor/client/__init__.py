"""Conductor 的客户端：Python SDK（`ConductorClient`）与建在它之上的命令行命令。

只经 REST API 与服务交互，不导入 Ray、FastAPI 与服务端代码。Python 用户写
`from conductor.client import ConductorClient`。`ConductorClient` 在第一次被取用时才导入
（PEP 562 的模块 `__getattr__`）：它带来 httpx（约 0.1 秒），`conductor queue --help`
这类不发请求的命令不必付这个代价。
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conductor.client.defaults import DEFAULT_URL
from conductor.client.errors import ClientError, RequestRejected, ServiceUnavailable

if TYPE_CHECKING:
    from conductor.client.sdk import ConductorClient, LogChunk

__all__ = [
    "DEFAULT_URL",
    "ClientError",
    "ConductorClient",
    "LogChunk",
    "RequestRejected",
    "ServiceUnavailable",
]


def __getattr__(name: str) -> object:
    if name in ("ConductorClient", "LogChunk"):
        from conductor.client import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
