"""Ray 节点快照：存活节点、容量与人类可读的节点名。"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import ray
from ray._private import state as ray_state

from conductor.node_resources import generic_resources, node_features
from conductor.resources import CPU, GPU, MEMORY, Resources

log = logging.getLogger("conductor.nodes")

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
    total_gpus: float = 0.0
    # 节点声明的通用资源（ray start --resources），名 → 数量
    gres: dict[str, float] = field(default_factory=dict, compare=False)
    # 小写的节点特性：conductor.features 标签加上 GPU 型号
    features: frozenset[str] = field(default=frozenset(), compare=False)
    # Ray 报告该节点正在排空（自动扩缩容器缩容、云厂商回收前的 ray drain-node）：不再往上放作业
    draining: bool = False

    @property
    def capacity(self) -> Resources:
        """节点的总容量向量：CPU、内存、GPU 与通用资源，展示与指标都用它。"""
        return Resources(
            {**self.gres, CPU: self.total_cpus, MEMORY: self.total_memory, GPU: self.total_gpus}
        )


def node_name(raw: dict[str, Any]) -> str:
    labels = raw.get("Labels") or {}
    if labels.get(NODE_NAME_LABEL):
        return str(labels[NODE_NAME_LABEL])
    node_id = str(raw["NodeID"])
    short = node_id[:8]
    if set(short) == {"f"}:
        # Ray 的假多节点提供者（自动扩缩容测试）给的 id 是一长串 f 加编号：取末尾才分得开
        short = node_id[-8:]
    return f"{raw.get('NodeManagerHostname', 'node')}-{short}"


def list_nodes() -> list[RayNode]:
    """集群中全部节点（含已死亡的，alive=False）。"""
    nodes = []
    draining = ray_draining()
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
                draining=raw["NodeID"] in draining,
            )
        )
    return nodes


def ray_draining() -> frozenset[str]:
    """Ray 报告正在排空的节点 id（GCS 的 GetDrainingNodes，与 ray.nodes() 同一个访问器）。

    读不到时当作没有：排空只是少放作业，读不到不该挡住整轮调度。"""
    try:
        return frozenset(ray_state.state.get_draining_nodes())
    except Exception:  # noqa: BLE001 - 旧版 Ray 没有此接口、GCS 暂时不可达
        log.debug("读取 Ray 排空中的节点失败", exc_info=True)
        return frozenset()


def alive_nodes() -> list[RayNode]:
    return [n for n in list_nodes() if n.alive]
