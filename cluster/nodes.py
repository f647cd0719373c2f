"""Ray 节点快照：存活节点、容量与人类可读的节点名。"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from conductor.resources import CPU, GPU, MEMORY, Resources

# `ray start --labels` 可以给节点起名；未设置时用主机名加节点 id 前缀，同机多节点也能区分
NODE_NAME_LABEL = "conductor.node-name"
# 节点特性（sbatch -C 匹配的对象）：`ray start --labels '{"conductor.features": "a100,ib"}'`，逗号分隔
FEATURES_LABEL = "conductor.features"
# Ray 探测到的加速器型号：标签（Ray 自动设置）与 accelerator_type:<型号> 资源两种写法
ACCELERATOR_LABEL = "ray.io/accelerator-type"
ACCELERATOR_RESOURCE = "accelerator_type:"
# 不是通用资源（gres）的 Ray 资源：基本三项、对象存储、节点与型号标记、分区声明
_NOT_GRES = ("CPU", "memory", "GPU", "object_store_memory")
_NOT_GRES_PREFIXES = ("node:", ACCELERATOR_RESOURCE, "partition:")


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
    total_gpus: float = 0.0
    # 节点声明的通用资源（ray start --resources），名 → 数量
    gres: dict[str, float] = field(default_factory=dict, compare=False)
    # 小写的节点特性：conductor.features 标签加上 GPU 型号
    features: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def capacity(self) -> Resources:
        """节点的总容量向量：CPU、内存、GPU 与通用资源，展示与指标都用它。"""
        return Resources(
            {**self.gres, CPU: self.total_cpus, MEMORY: self.total_memory, GPU: self.total_gpus}
        )


def generic_resources(resources: dict[str, float]) -> dict[str, float]:
    """Ray 资源里用户声明的通用资源（gres）：去掉 CPU/内存/GPU 与 Ray、分区自用的标记资源。"""
    return {
        name: float(amount)
        for name, amount in resources.items()
        if name not in _NOT_GRES and not name.startswith(_NOT_GRES_PREFIXES)
    }


def node_features(labels: dict[str, str], resources: dict[str, float]) -> frozenset[str]:
    """节点特性（小写）：conductor.features 标签里逗号分隔的各项，加上 GPU 型号（-C a100 与 --gres=gpu:a100:1 都按它匹配）。"""
    found = {f.strip().lower() for f in labels.get(FEATURES_LABEL, "").split(",") if f.strip()}
    if labels.get(ACCELERATOR_LABEL):
        found.add(labels[ACCELERATOR_LABEL].lower())
    found.update(
        name[len(ACCELERATOR_RESOURCE) :].lower()
        for name in resources
        if name.startswith(ACCELERATOR_RESOURCE)
    )
    return frozenset(found)


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
                total_gpus=float(resources.get("GPU", 0.0)),
                gres=generic_resources(resources),
                features=node_features(raw.get("Labels") or {}, resources),
            )
        )
    return nodes


def alive_nodes() -> list[RayNode]:
    return [n for n in list_nodes() if n.alive]
