"""对 Ray 自动扩缩容器的请求（conductor/demand.py）：只缺容量的作业、账户上限、多节点作业各占一台、上限 cap。"""

from __future__ import annotations

from conductor.account_limits import NO_LIMIT, AccountLimit
from conductor.demand import (
    SHARE,
    could_host,
    declared_partitions,
    fixed_partitions,
    pending_bundles,
    running_bundles,
)
from conductor.partitions import PartitionConfig, PartitionTable
from conductor.placement import PendingJob, RunningJob

GIB = 1 << 30


def _bundles(pending, running=(), limits=None, fixed=frozenset(), cap=100, over=lambda p, t: False):
    limits = limits or {}
    return pending_bundles(
        pending, list(running), lambda a: limits.get(a, NO_LIMIT), over, fixed, cap
    )


def test_gpu_job_asks_for_its_shape_on_its_partition_type() -> None:
    job = PendingJob(1, 4, 8 * GIB, "gpu", gpus=1, gres={"nvme": 1})
    assert _bundles([job]) == [
        {"CPU": 4.0, "memory": 8.0 * GIB, "GPU": 1.0, "nvme": 1.0, "partition:gpu": SHARE}
    ]


def test_gang_members_and_exclusive_jobs_take_a_whole_node_each() -> None:
    gang = PendingJob(1, 2, 0, "batch", nodes=3)
    whole = PendingJob(2, 1, 0, "batch", exclusive=True)
    bundles = _bundles([gang, whole])
    assert bundles == [{"CPU": 2.0, "partition:batch": 1.0}] * 3 + [
        {"CPU": 1.0, "partition:batch": 1.0}
    ]


def test_whole_node_memory_is_not_a_memory_request() -> None:
    job = PendingJob(1, 1, 64 * GIB, "batch", whole_node_memory=True)
    assert _bundles([job]) == [{"CPU": 1.0, "partition:batch": SHARE}]


def test_held_named_and_over_limit_jobs_never_ask() -> None:
    limits = {"alice": AccountLimit(max_cpus=4)}
    running = [RunningJob(9, "n1", 2, 0, None, account="alice")]
    pending = [
        PendingJob(1, 1, 0, "batch", runnable=False),  # 挂起或依赖未满足
        PendingJob(2, 1, 0, "batch", required_nodes=["node7"]),  # -w：新节点不会叫这个名字
        PendingJob(3, 2, 0, "batch", account="alice"),  # 运行中 2 + 2 = 4：到上限为止
        PendingJob(4, 1, 0, "batch", account="alice"),  # 再多一个就超过 max_cpus
        PendingJob(5, 1, 0, "batch", time_limit=7200),  # 超过分区时限
        PendingJob(6, 1, 0, "batch", account="bob"),
    ]
    over = lambda partition, limit: limit is not None and limit > 3600  # noqa: E731
    bundles = _bundles(pending, running, limits, over=over)
    assert bundles == [
        {"CPU": 2.0, "partition:batch": SHARE},
        {"CPU": 1.0, "partition:batch": SHARE},
    ]


def test_array_max_running_counts_requested_tasks() -> None:
    tasks = [PendingJob(i, 1, 0, "batch", array_job_id=10, array_max_running=2) for i in range(5)]
    assert len(_bundles(tasks)) == 2


def test_cap_stops_in_queue_order_without_splitting_a_gang() -> None:
    pending = [
        PendingJob(1, 1, 0, "b"),
        PendingJob(2, 1, 0, "b", nodes=4),
        PendingJob(3, 1, 0, "b"),
    ]
    assert len(_bundles(pending, cap=4)) == 1  # 多节点作业放不进剩下的 3 份：到此为止，不跳过它
    assert len(_bundles(pending, cap=5)) == 5


def test_fixed_partitions_carry_no_partition_resource() -> None:
    job = PendingJob(1, 1, 0, "onprem")
    assert _bundles([job], fixed=frozenset({"onprem"})) == [{"CPU": 1.0}]


def test_running_jobs_fill_their_own_nodes_again() -> None:
    running = [
        RunningJob(1, "a", 2, GIB, None),
        RunningJob(2, "a", 1, 0, None, nodes=2, node_ids=("a", "b")),
        RunningJob(3, "gone", 1, 0, None),  # 节点已失联：不计
    ]
    by_node = {"a": ["batch"], "b": []}
    assert running_bundles(running, by_node) == [
        {"CPU": 2.0, "memory": float(GIB), "partition:batch": SHARE},
        {"CPU": 1.0, "partition:batch": 1.0},
        {"CPU": 1.0},
    ]


def test_partition_declarations() -> None:
    table = PartitionTable.from_config(
        {
            "batch": PartitionConfig(default=True),
            "gpu": PartitionConfig(),
            "lab": PartitionConfig(),
        },
        "batch",
    )
    assert declared_partitions(["CPU", "partition:gpu", "node:1.2.3.4"]) == ["gpu"]
    nodes = [
        ({}, ["CPU", "partition:gpu"]),  # 按类型扩容的 GPU 节点
        ({"conductor.partition": "lab"}, ["CPU"]),  # 固定节点，以标签归入
    ]
    assert fixed_partitions(table, nodes) == {"lab"}
    assert fixed_partitions(table, [({}, ["CPU"])]) == {"batch"}  # 什么都没声明：默认分区


def test_a_parked_node_is_woken_only_for_bundles_it_could_hold() -> None:
    gpu_node = {"CPU": 4.0, "GPU": 1.0, "memory": 8e9}
    assert could_host({"CPU": 2.0, "GPU": 1.0, "partition:gpu": 0.001}, gpu_node, ["gpu"])
    assert not could_host({"CPU": 2.0, "partition:batch": 0.001}, gpu_node, ["gpu"])
    assert not could_host({"CPU": 8.0}, gpu_node, [])
    assert not could_host({"CPU": 1.0, "nvme": 1.0}, gpu_node, [])
    assert could_host({"CPU": 1.0, "memory": 8e9}, gpu_node, [])
