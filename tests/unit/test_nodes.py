"""Ray 节点资源与标签的解读：哪些算通用资源（gres），节点有哪些特性。"""

from __future__ import annotations

from conductor.node_resources import generic_resources, node_features


def test_generic_resources_are_what_users_declare() -> None:
    raw = {
        "CPU": 8.0,
        "memory": 1e9,
        "GPU": 2.0,
        "object_store_memory": 1e8,
        "node:10.0.0.1": 1.0,
        "node:__internal_head__": 1.0,
        "accelerator_type:A100": 1.0,
        "partition:gpu": 1.0,
        "nvme": 2.0,
        "license_matlab": 5.0,
    }
    assert generic_resources(raw) == {"nvme": 2.0, "license_matlab": 5.0}


def test_features_come_from_the_label_and_the_gpu_type() -> None:
    labels = {"conductor.features": "IB, bigmem,", "ray.io/accelerator-type": "H100"}
    assert node_features(labels, {"accelerator_type:A100": 1.0}) == {"ib", "bigmem", "h100", "a100"}
    assert node_features({}, {"CPU": 1.0}) == frozenset()
