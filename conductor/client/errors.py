"""SDK 的错误：服务拒绝了请求，或服务连不上、暂时不可用。

命令行把它们映射为退出码 1 与 3（见 conductor/client/output.py）；单独成模块，
捕获它们不必导入 httpx。
"""

from __future__ import annotations

from conductor.errors import ConductorError


class ClientError(ConductorError):
    """请求 Conductor 服务失败。"""


class RequestRejected(ClientError):
    """服务拒绝了请求（HTTP 4xx）：作业不存在、参数无效或无权访问。"""


class ServiceUnavailable(ClientError):
    """无法连接 Conductor 服务，或服务暂时不可用（HTTP 5xx）。"""
