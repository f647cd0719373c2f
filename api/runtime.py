"""API 进程的运行时依赖：配置、数据库引擎、集群客户端。路由通过 Depends 取得。"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy.engine import Engine

from cluster.client import ClusterClient
from conductor.partitions import PartitionTable
from conductor.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    cluster: ClusterClient
    # 分区表由配置决定、进程内不变：建一次，每个请求复用
    partitions: PartitionTable = field(init=False)

    def __post_init__(self) -> None:
        self.partitions = self.settings.partition_table()


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime
