"""ray-cluster.yaml 通过 Ray 自己的离线校验（prepare_config + validate_config，无需凭据）。"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def test_ray_cluster_yaml_passes_ray_validation() -> None:
    config = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"]["type"] == "local"
    assert "available_node_types" not in config  # local provider 不允许


def test_api_is_not_exposed_beyond_loopback_without_auth() -> None:
    text = (ROOT / "ray-cluster.yaml").read_text()
    assert "--host 127.0.0.1" in text and "--host 0.0.0.0" not in text
