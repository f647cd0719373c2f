"""API 进程的运行时依赖：配置、数据库引擎、集群客户端。路由通过 Depends 取得。"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy.engine import Engine

from cluster.client import ClusterClient
from conductor.node_types import cluster_config, load_config, potential_nodes
from conductor.partitions import PartitionTable
from conductor.placement import NodeView
from conductor.settings import Settings

log = logging.getLogger("conductor.api")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    cluster: ClusterClient
    # 分区表由配置决定、进程内不变：建一次，每个请求复用
    partitions: PartitionTable = field(init=False)
    # 自动扩缩容器能扩出的节点（提交时与存活节点一起判断作业能否运行）；没有集群配置时为空
    potential: list[NodeView] = field(init=False)

    def __post_init__(self) -> None:
        self.partitions = self.settings.partition_table()
        self.potential = _potential_nodes(self.settings, self.partitions)


def _potential_nodes(settings: Settings, partitions: PartitionTable) -> list[NodeView]:
    path = cluster_config(settings.autoscaler_config)
    if path is None:
        return []
    views = potential_nodes(load_config(path), partitions)
    log.info("提交时也按 %s 中可扩出的 %d 个节点判断作业能否运行", path, len(views))
    return views


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime
