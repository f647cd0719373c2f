"""Ray 节点的资源与标签怎么读（纯函数）：哪些是用户声明的通用资源（gres），节点有哪些特性。

存活节点（cluster/nodes.py）与自动扩缩容器的节点类型（conductor/node_types.py）共用。
"""

from __future__ import annotations

# 节点特性（sbatch -C 匹配的对象）：`ray start --labels '{"conductor.features": "a100,ib"}'`，逗号分隔
FEATURES_LABEL = "conductor.features"
# Ray 探测到的加速器型号：标签（Ray 自动设置）与 accelerator_type:<型号> 资源两种写法
ACCELERATOR_LABEL = "ray.io/accelerator-type"
ACCELERATOR_RESOURCE = "accelerator_type:"
# 不是通用资源（gres）的 Ray 资源：基本三项、对象存储、节点与型号标记、分区声明
_NOT_GRES = ("CPU", "memory", "GPU", "object_store_memory")
_NOT_GRES_PREFIXES = ("node:", ACCELERATOR_RESOURCE, "partition:")


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
