"""API 进程的运行时依赖：配置、数据库引擎、集群客户端。路由通过 Depends 取得。"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.engine import Engine

from cluster.client import ClusterClient
from conductor.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    cluster: ClusterClient


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime
