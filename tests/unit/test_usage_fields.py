"""/dashboard 的容量与占用字段（纯函数 usage_fields）：CPU、GPU 与通用资源同一种算法。"""

from __future__ import annotations

from api.routes.dashboard import usage_fields
from api.schemas import GresStats
from conductor.resources import Resources

GIB = 2**30


def test_gpus_and_gres_are_derived_like_cpus() -> None:
    total = Resources.of(4, 8 * GIB, 2, nvme=2)
    held = Resources.of(1, GIB, 1, nvme=1)
    fields = usage_fields(total, held, alive=True)
    assert (fields["total_cpus"], fields["allocated_cpus"], fields["available_cpus"]) == (4, 1, 3)
    assert (fields["total_gpus"], fields["allocated_gpus"], fields["available_gpus"]) == (2, 1, 1)
    assert fields["utilization_rate"] == 0.25
    # 内存不是通用资源，不出现在 gres 里
    assert fields["gres"] == {"nvme": GresStats(total=2, allocated=1, available=1)}


def test_a_down_node_has_nothing_allocated_or_free() -> None:
    fields = usage_fields(Resources.of(4, gpu=2, nvme=1), Resources.of(2, gpu=1), alive=False)
    assert (fields["total_gpus"], fields["allocated_gpus"], fields["available_gpus"]) == (2, 0, 0)
    assert (fields["allocated_cpus"], fields["available_cpus"]) == (0, 0)
    assert fields["gres"] == {"nvme": GresStats(total=1, allocated=0, available=0)}


def test_overcommitted_node_shows_zero_free_not_negative() -> None:
    fields = usage_fields(Resources.of(2, gpu=1), Resources.of(3, gpu=2), alive=True)
    assert (fields["available_cpus"], fields["available_gpus"]) == (0, 0)
    assert (fields["allocated_cpus"], fields["allocated_gpus"]) == (3, 2)


def test_a_cpu_only_node_has_zero_gpus_and_no_gres() -> None:
    fields = usage_fields(Resources.of(4, GIB), Resources(), alive=True)
    assert (fields["total_gpus"], fields["available_gpus"], fields["gres"]) == (0, 0, {})
