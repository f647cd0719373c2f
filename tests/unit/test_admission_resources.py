"""提交时的 check_can_ever_run：没有一个节点能容下的请求 422，消息点名字段与缺的资源。"""

from __future__ import annotations

import pytest

from conductor.admission import check_can_ever_run
from conductor.errors import InvalidJobRequest
from conductor.placement import NodeView, PendingJob

GIB = 1024**3
MIB = 1024**2


def node(name: str, cpus: float = 8, memory: float = 16 * GIB, **kw: object) -> NodeView:
    return NodeView(name, name, cpus, memory, **kw)  # type: ignore[arg-type]


CLUSTER = [
    node("cpu1", 32, 128 * GIB),
    node("gpu1", 8, 32 * GIB, gpus=2, features=frozenset({"a100", "ib"}), custom={"nvme": 1}),
    node("gpu2", 8, 32 * GIB, gpus=1, features=frozenset({"v100"})),
    node("dbg", 2, 4 * GIB, partitions=frozenset({"debug"})),
]


def req(cpus: int = 1, memory: int = GIB, **kw: object) -> PendingJob:
    return PendingJob(0, cpus, memory, **kw)  # type: ignore[arg-type]


def refused(request: PendingJob, nodes: list[NodeView] = CLUSTER) -> InvalidJobRequest:
    with pytest.raises(InvalidJobRequest) as info:
        check_can_ever_run(request, nodes)
    return info.value


@pytest.mark.parametrize(
    "request_",
    [
        req(),
        req(32, 128 * GIB),
        req(2, gpus=2, gpu_type="A100"),
        req(gres={"nvme": 1}, constraints="a100&ib"),
        req(required_nodes=["gpu2"], gpus=1),
        req(excluded_nodes=["cpu1", "gpu1"]),
        req(1, 0, whole_node_memory=True),
        req(2, 4 * GIB, partition="debug"),
        req(64, partition="nowhere"),  # 分区暂无存活节点：接受
    ],
)
def test_runnable_requests_pass(request_: PendingJob) -> None:
    check_can_ever_run(request_, CLUSTER)


def test_no_nodes_at_all_accepts_everything() -> None:
    check_can_ever_run(req(999, gpus=9, required_nodes=["x"]), [])


def test_too_many_gpus_names_gres_and_the_maximum() -> None:
    err = refused(req(gpus=4))
    assert err.field == "job.gpus"
    assert "gres gpu:4" in err.message and "gpus" in err.message and "最大 2 个" in err.message


def test_gpu_type_nobody_has() -> None:
    err = refused(req(gpus=1, gpu_type="h100"))
    assert err.field == "job.gpus"
    assert "h100" in err.message and "a100" in err.message
    # 有这个型号的节点 GPU 不够
    err = refused(req(gpus=2, gpu_type="v100"))
    assert err.field == "job.gpus" and "最大 1 个" in err.message


def test_unknown_generic_resource_is_named() -> None:
    err = refused(req(gres={"fpga": 1}))
    assert err.field == "job.gres"
    assert "fpga" in err.message and "nvme" in err.message
    err = refused(req(gres={"nvme": 2}))
    assert err.field == "job.gres" and "nvme:2" in err.message and "最大 1" in err.message


def test_constraints() -> None:
    err = refused(req(constraints="h100"))
    assert err.field == "job.constraints" and "h100" in err.message and "a100" in err.message
    err = refused(req(constraints="a100&"))
    assert err.field == "job.constraints" and "应为特性名" in err.message
    # 满足约束的节点被 -x 排除
    err = refused(req(constraints="ib", excluded_nodes=["gpu1"]))
    assert err.field == "job.constraints"


def test_required_nodes() -> None:
    err = refused(req(required_nodes=["nosuch"]))
    assert err.field == "job.required_nodes" and "nosuch" in err.message and "cpu1" in err.message
    err = refused(req(required_nodes=["gpu1", "gpu2"]))
    assert err.field == "job.required_nodes" and "2 个节点" in err.message
    err = refused(req(required_nodes=["dbg"]))
    assert err.field == "job.required_nodes" and "不属于分区 default" in err.message
    err = refused(req(required_nodes=["gpu1"], excluded_nodes=["gpu1"]))
    assert err.field == "job.required_nodes"
    # -w 的节点容不下：点名缺的资源，范围说明是符合 -w/-x/-C 的节点
    err = refused(req(16, required_nodes=["gpu1"]))
    assert (
        err.field == "job.cpus_per_task"
        and "符合 -w/-x/-C 的" in err.message
        and "最大 8 个" in err.message
    )


def test_excluded_everything() -> None:
    err = refused(req(excluded_nodes=["cpu1", "gpu1", "gpu2"]))
    assert err.field == "job.excluded_nodes"


def test_cpu_and_memory_messages_are_unchanged() -> None:
    """与原先 API 里的检查相同的字段与消息。"""
    err = refused(req(64))
    assert err.field == "job.cpus_per_task"
    assert err.message == (
        "请求 64 个 CPU（ntasks_per_node × cpus_per_task），超过分区 default 中任何节点的容量（最大 32 个）"
    )
    err = refused(req(16, 200 * GIB))
    assert err.field == "job.memory_per_node"
    assert err.message == (
        f"请求内存 {200 * GIB // MIB} MB，超过分区 default 中任何 CPU 足够的节点的可用内存"
        f"（最大 {128 * GIB // MIB} MB）"
    )
    # 内存的最大值只在 CPU（与 GPU）足够的节点里取
    err = refused(req(2, 64 * GIB, gpus=1))
    assert err.field == "job.memory_per_node" and f"最大 {32 * GIB // MIB} MB" in err.message


def test_multi_node_needs_enough_distinct_nodes() -> None:
    """多节点作业：分区的节点不够、或容得下每节点需求的节点不够，都点名 job.nodes。"""
    check_can_ever_run(req(8, nodes=3), CLUSTER)  # cpu1、gpu1、gpu2 各 8 个 CPU 以上
    err = refused(req(nodes=4))
    assert err.field == "job.nodes" and "分区 default 只有 3 个" in err.message
    err = refused(req(16, nodes=2))  # 只有 cpu1 有 16 个 CPU
    assert err.field == "job.nodes" and "只有 1 个" in err.message and "cpu1" in err.message
    err = refused(req(gpus=1, nodes=3))
    assert err.field == "job.nodes" and "只有 2 个" in err.message
    err = refused(req(64, nodes=2))  # 一个节点也容不下每节点的量：点名 CPU
    assert err.field == "job.cpus_per_task" and "每个节点 64 个 CPU" in err.message
    # -w 列出的节点都要在分配里，其余补足
    check_can_ever_run(req(nodes=2, required_nodes=["gpu2"]), CLUSTER)
    err = refused(req(gpus=2, nodes=2, required_nodes=["gpu1", "gpu2"]))
    assert err.field == "job.nodes"
