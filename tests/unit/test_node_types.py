"""自动扩缩容器的节点类型当作可能的节点（conductor/node_types.py），提交时的准入把它们算进去。"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conductor.admission import check_can_ever_run
from conductor.errors import InvalidJobRequest
from conductor.node_types import MAX_VIRTUAL_PER_TYPE, declares_memory, load_config, potential_nodes
from conductor.partitions import PartitionConfig, PartitionTable
from conductor.placement import NodeView, PendingJob

TABLE = PartitionTable.from_config(
    {"batch": PartitionConfig(default=True), "gpu": PartitionConfig()}, "batch"
)
CONFIG = {
    "max_workers": 10,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "cpu": {"resources": {"CPU": 8, "memory": 32e9, "partition:batch": 1}, "max_workers": 3},
        "gpu": {
            "resources": {"CPU": 4, "GPU": 1, "accelerator_type:A10G": 1, "partition:gpu": 1},
            "labels": {"conductor.features": "ib"},
        },
        "unsized": {"resources": {"partition:gpu": 1}, "max_workers": 5},  # 没写 CPU：不参与
        "big": {"resources": {"CPU": 96, "memory": 16e9}, "max_workers": 5000},
    },
}


def test_each_worker_type_becomes_up_to_max_workers_nodes() -> None:
    views = potential_nodes(CONFIG, TABLE)
    by_type: dict[str, list[NodeView]] = {}
    for v in views:
        by_type.setdefault(v.node_id.split("#")[0], []).append(v)
    assert sorted(by_type) == ["big", "cpu", "gpu"]
    assert len(by_type["cpu"]) == 3
    assert len(by_type["gpu"]) == 10  # 类型没写 max_workers：取集群的
    assert len(by_type["big"]) == MAX_VIRTUAL_PER_TYPE
    gpu = by_type["gpu"][0]
    assert gpu.partitions == {"gpu"} and gpu.gpus == 1 and gpu.features == {"ib", "a10g"}
    assert gpu.total_memory == math.inf  # 没写内存：不按内存拒绝
    assert by_type["big"][0].partitions == {"batch"}  # 什么都没声明：默认分区


def test_admission_counts_nodes_the_autoscaler_could_add() -> None:
    alive = [NodeView("h", "head", 0, 0, frozenset({"batch"}))]
    views = alive + potential_nodes(CONFIG, TABLE)
    # 缩到零的 GPU 分区、此刻只有 0 台的 3 节点作业：都能运行
    check_can_ever_run(PendingJob(0, 4, 0, "gpu", gpus=1), views)
    check_can_ever_run(PendingJob(0, 8, 0, "batch", nodes=3, gres={}), views)
    with pytest.raises(InvalidJobRequest) as err:
        check_can_ever_run(PendingJob(0, 4, 0, "gpu", gpus=2), views)
    assert err.value.field == "job.gpus"
    with pytest.raises(InvalidJobRequest) as err:
        check_can_ever_run(
            PendingJob(0, 8, 64e9, "batch", nodes=4), views
        )  # 能扩 4 台的只有 big，它内存不够
    assert err.value.field == "job.memory_per_node"


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="c.yaml"):
        load_config(path)
    with pytest.raises(ValueError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_memory_is_declared_only_when_a_worker_type_says_so() -> None:
    head = {"resources": {"CPU": 0, "memory": 8.0}}
    config = {"head_node_type": "head", "available_node_types": {"head": head}}
    config["available_node_types"]["w"] = {"resources": {"CPU": 4}}
    assert declares_memory(config) is False
    config["available_node_types"]["w"]["resources"]["memory"] = 16.0
    assert declares_memory(config) is True
