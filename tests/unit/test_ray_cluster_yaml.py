"""两份 `ray up` 配置都通过 Ray 自己的离线校验（prepare_config + validate_config，无需凭据与网络）。"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.nodes import NODE_NAME_LABEL

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ["ray-cluster.yaml", "ray-cluster.aws.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_ray_validation(name: str) -> None:
    config = _load(name)
    validate_config(prepare_config(copy.deepcopy(config)))


def test_on_premise_config_uses_local_provider_without_node_types() -> None:
    config = _load("ray-cluster.yaml")
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config  # local provider 不允许


def test_cloud_config_declares_partitions_as_custom_resources() -> None:
    config = _load("ray-cluster.aws.yaml")
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}  # 头节点不跑作业
    partitions = {r for t in types.values() for r in t["resources"] if r.startswith("partition:")}
    assert partitions == {"partition:batch", "partition:spot", "partition:gpu"}


def test_cloud_worker_types_scale_to_zero_one_per_partition() -> None:
    config = _load("ray-cluster.aws.yaml")
    workers = {
        name: t
        for name, t in config["available_node_types"].items()
        if name != config["head_node_type"]
    }
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers.values()), workers
    for name, t in workers.items():
        assert [r for r in t["resources"] if r.startswith("partition:")] == [f"partition:{name}"]
    assert workers["gpu"]["node_config"]["InstanceType"].startswith("g")  # 有 GPU 的机型


@pytest.mark.parametrize("name", CONFIGS)
def test_api_is_not_exposed_beyond_loopback_without_auth(name: str) -> None:
    text = (ROOT / name).read_text()
    assert "--host 127.0.0.1" in text and "--host 0.0.0.0" not in text
    assert "--dashboard-host=127.0.0.1" in text


@pytest.mark.parametrize("name", CONFIGS)
def test_start_commands_label_nodes_and_restart_the_supervisor(name: str) -> None:
    config = _load(name)
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    # cluster/nodes.py 从这个标签读节点名
    label = f"--labels={NODE_NAME_LABEL}="
    assert label in head and label in worker
    assert "while true; do" in head and "conductor serve" in head
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
