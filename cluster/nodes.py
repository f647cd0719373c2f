"""Ray 节点快照：存活节点、容量与人类可读的节点名。"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

# `ray start --labels` 可以给节点起名；未设置时用主机名加节点 id 前缀，同机多节点也能区分
NODE_NAME_LABEL = "conductor.node-name"


@dataclass(frozen=True)
class RayNode:
    """ray.nodes() 中的一个节点。"""

    node_id: str
    node_name: str
    host: str
    alive: bool
    total_cpus: float
    total_memory: float
    # Ray 节点标签：conductor.node-name 起名，conductor.partition 声明所属分区（partitions.py）
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    # 自定义资源名（partition:<名> 声明所属分区）
    resources: tuple[str, ...] = field(default=(), compare=False)


def node_name(raw: dict[str, Any]) -> str:
    labels = raw.get("Labels") or {}
    if labels.get(NODE_NAME_LABEL):
        return str(labels[NODE_NAME_LABEL])
    return f"{raw.get('NodeManagerHostname', 'node')}-{raw['NodeID'][:8]}"


def list_nodes() -> list[RayNode]:
    """集群中全部节点（含已死亡的，alive=False）。"""
    nodes = []
    for raw in ray.nodes():
        resources = raw.get("Resources") or {}
        nodes.append(
            RayNode(
                node_id=raw["NodeID"],
                node_name=node_name(raw),
                host=str(raw.get("NodeManagerAddress", "")),
                alive=bool(raw.get("Alive")),
                total_cpus=float(resources.get("CPU", 0.0)),
                total_memory=float(resources.get("memory", 0.0)),
                labels=dict(raw.get("Labels") or {}),
                resources=tuple(resources),
            )
        )
    return nodes


def alive_nodes() -> list[RayNode]:
    return [n for n in list_nodes() if n.alive]
