"""自动扩缩容器能扩出的节点类型（纯函数）：读 Ray 集群配置（ray up 的 YAML）的 available_node_types。

提交时判断“作业能否运行”不能只看存活节点：缩到零的 GPU 分区此刻一台节点也没有，2 节点作业所在的分区
此刻可能只有 1 台。准入把每种工作节点类型能扩出的节点（至多 max_workers 台）当作可能的节点一起看。
节点类型没写 CPU（云厂商的类型由 ray up 按实例规格补上；手写的配置可能没有）就不知道它多大：
这样的类型不参与判断。
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from conductor.node_resources import generic_resources, node_features
from conductor.partitions import PartitionTable
from conductor.placement import NodeView

# ray up 在头节点上写下的集群配置（已按实例规格补上各节点类型的 CPU、GPU、内存）
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")

# 每种类型至多当作这么多台：准入只需凑够作业的节点数，类型的 max_workers 可能上千
MAX_VIRTUAL_PER_TYPE = 64


def cluster_config(explicit: Path | None) -> Path | None:
    """这个集群的自动扩缩容配置：设置里给的，没给时头节点上 ray up 写下的那份（存在时）；都没有为 None，
    即固定集群（本地 Ray、手工起的节点）。"""
    if explicit is not None:
        return explicit.expanduser()
    path = BOOTSTRAP_CONFIG.expanduser()
    return path if path.exists() else None


def load_config(path: Path) -> dict[str, Any]:
    """读 Ray 集群配置；读不了或不是映射时报错，说明是哪个文件。"""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"无法读取 Ray 集群配置 {path}：{exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"Ray 集群配置 {path} 不是 YAML 映射")
    return data


def declares_memory(config: Mapping[str, Any]) -> bool:
    """有没有哪种工作节点类型写明了内存。云提供者（AWS、GCP）由 `ray up` 按机型填上；本地与假提供者
    不填，自动扩缩容器就把它们的内存当作 0，带内存的份额没有类型能满足。"""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    return any(
        "memory" in (spec.get("resources") or {})
        for name, spec in types.items()
        if name != head and isinstance(spec, Mapping)
    )


def potential_nodes(config: Mapping[str, Any], table: PartitionTable) -> list[NodeView]:
    """配置里每种工作节点类型能扩出的节点，作为准入看的节点视图（id 与名字为 `类型名#序号`）。"""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    default_max = int(config.get("max_workers", 0) or 0)
    views = []
    for name, spec in types.items():
        if name == head or not isinstance(spec, Mapping):
            continue
        resources = {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        count = int(spec.get("max_workers", default_max) or 0)
        if "CPU" not in resources or count <= 0:
            continue
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        for i in range(min(count, MAX_VIRTUAL_PER_TYPE)):
            views.append(
                NodeView(
                    f"{name}#{i}",
                    f"{name}#{i}",
                    resources["CPU"],
                    resources.get("memory", math.inf),  # 没写内存：不按内存拒绝
                    table.node_partitions(labels, resources),
                    gpus=resources.get("GPU", 0.0),
                    custom=generic_resources(resources),
                    features=node_features(labels, resources),
                )
            )
    return views
