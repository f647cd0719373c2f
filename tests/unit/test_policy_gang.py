"""多节点作业（gang）在调度策略与准入里的单元测试：全有或全无、EASY 预留与回填、-w 包含、
-x/-C 对每个节点、独占、账户上限按每节点 × 节点数、提交时节点数不够的拒绝。"""

from __future__ import annotations

import pytest

from conductor.account_limits import NO_LIMIT, AccountLimit
from conductor.admission import check_can_ever_run
from conductor.errors import InvalidJobRequest
from conductor.placement import NodeView, PendingJob, Placement, RunningJob
from conductor.policy import Plan, Reservation, Snapshot, free_cpus, plan

GIB = 1024**3
NOW = 1_000_000.0


def node(node_id: str, cpus: float = 4, memory: float = 16 * GIB, **kw: object) -> NodeView:
    return NodeView(node_id, node_id, cpus, memory, **kw)  # type: ignore[arg-type]


def job(job_id: int, cpus: int = 4, memory: int = GIB, **kw: object) -> PendingJob:
    return PendingJob(job_id, cpus, memory, **kw)  # type: ignore[arg-type]


def running(
    job_id: int, node_id: str, cpus: int, ends_in: float | None, **kw: object
) -> RunningJob:
    end = NOW + ends_in if ends_in is not None else None
    return RunningJob(job_id, node_id, cpus, kw.pop("memory", GIB), end, **kw)  # type: ignore[arg-type]


def run(nodes: list[NodeView], pending: list[PendingJob], busy: list[RunningJob] | None = None,
        limits: dict[str, AccountLimit] | None = None) -> Plan:  # fmt: skip
    table = limits or {}
    return plan(Snapshot(nodes, busy or [], pending, NOW, lambda a: table.get(a, NO_LIMIT)))


def placed(result: Plan) -> dict[int, tuple[str, ...]]:
    return {p.job_id: p.node_ids for p in result.placements}


THREE = [node("a"), node("b"), node("c")]


# ---------- 数据 ----------


def test_single_node_values_fill_in_their_one_node() -> None:
    assert Placement(1, "a", "host-a").node_ids == ("a",)
    assert Placement(1, "a", "host-a").node_names == ("host-a",)
    assert running(1, "a", 1, None).node_ids == ("a",)
    assert Reservation(1, "a", NOW).node_ids == ("a",)
    gang = running(2, "b", 1, None, nodes=2, node_ids=("b", "c"))
    assert gang.node_ids == ("b", "c") and gang.node_id == "b"
    with pytest.raises(ValueError, match="node_ids"):
        running(3, "a", 1, None, nodes=2, node_ids=("b", "a"))  # 第一个须是 node_id
    with pytest.raises(ValueError, match="2 个节点"):
        running(4, "a", 1, None, nodes=2)  # 占两个节点却只给了一个
    with pytest.raises(ValueError):
        job(5, nodes=0)


def test_running_gang_occupies_each_of_its_nodes() -> None:
    busy = [running(9, "a", 4, None, nodes=2, node_ids=("a", "b"))]
    assert placed(run(THREE, [job(1, 4)], busy)) == {1: ("c",)}
    assert free_cpus(THREE, busy, ["default"]) == (4, {"default": 4})


# ---------- 全有或全无 ----------


def test_gang_waits_holding_nothing_while_the_free_node_backfills() -> None:
    """三节点、两个忙：2 节点作业不占任何节点地等待；空着的节点只给在预留时刻前结束的单节点作业。"""
    busy = [running(90, "a", 4, 100), running(91, "b", 4, 200)]
    gang = job(1, nodes=2, time_limit=1000)
    short = job(2, time_limit=50)  # 100 秒后预留开始之前结束
    long = job(3, time_limit=500)  # 会越过预留时刻
    forever = job(4)  # 不限时
    result = run(THREE, [gang, short, long, forever], busy)
    assert placed(result) == {2: ("c",)}
    assert result.reasons == {1: "Resources", 3: "Priority", 4: "Priority"}
    assert result.reservations == [Reservation(1, "a", NOW + 100, ("a", "c"))]


def test_gang_starts_when_enough_nodes_are_free() -> None:
    result = run(THREE, [job(1, nodes=2)], [running(90, "b", 4, 200)])
    assert result.placements == [Placement(1, "a", "a", ("a", "c"), ("a", "c"))]
    assert result.reasons == {}


def test_gang_is_never_partially_placed() -> None:
    """3 节点作业只有两个节点空：一个也不占；算不出开始时刻（不限时的作业挡着）时节点对回填关闭。"""
    result = run(THREE, [job(1, nodes=3), job(2, 1)], [running(90, "c", 1, None)])
    assert placed(result) == {}
    assert result.reasons == {1: "Resources", 2: "Priority"}
    assert result.reservations == []


def test_gang_needs_nodes_each_fitting_the_per_node_vector() -> None:
    """每节点 3 个 CPU：空闲合计 6 个 CPU 但分在三个节点上各 2 个，不够两个节点各 3 个。"""
    busy = [running(90 + i, n.node_id, 2, 100 * (i + 1)) for i, n in enumerate(THREE)]
    result = run(THREE, [job(1, 3, nodes=2)], busy)
    assert placed(result) == {}
    assert result.reservations == [Reservation(1, "a", NOW + 200, ("a", "b"))]


def test_backfilled_gang_respects_the_head_reservation() -> None:
    busy = [running(90, "a", 4, 100), running(91, "b", 4, 100)]
    nodes = [*THREE, node("d")]
    head = job(1, nodes=3, time_limit=1000)  # c、d 现在空，a、b 100 秒后同时空出，按名取 a
    early = job(2, nodes=2, time_limit=50)  # c、d 上，预留之前结束
    late = job(3, nodes=2, time_limit=500)  # 会越过预留时刻，c、d 届时没有余量
    result = run(nodes, [head, early, late], busy)
    assert placed(result) == {2: ("c", "d")}
    assert result.reservations == [Reservation(1, "a", NOW + 100, ("a", "c", "d"))]
    assert result.reasons == {1: "Resources", 3: "Priority"}


def test_backfilled_gang_uses_up_the_spare_on_each_of_its_nodes() -> None:
    """队首 100 秒后在 a、b、c 上各要 2 个 CPU，届时每个节点余 2 个；越过预留的 gang 用掉 b、c 的余量，
    之后越过预留的作业在哪个节点上都不行（只记第一个节点的账就会放到 c 上，推迟队首）。"""
    head = job(1, 2, nodes=3, time_limit=1000)
    wide = job(2, 2, nodes=2)  # 不限时
    small = job(3, 2)  # 不限时
    result = run(THREE, [head, wide, small], [running(90, "a", 4, 100)])
    assert placed(result) == {2: ("b", "c")}
    assert result.reasons == {1: "Resources", 3: "Priority"}


def test_partition_with_too_few_nodes_does_not_block_the_queue() -> None:
    result = run(THREE, [job(1, nodes=4), job(2, 1)])
    assert result.reasons == {1: "Resources"}
    assert result.reservations == []
    assert placed(result) == {2: ("a",)}


def test_gang_picks_best_fit_nodes_and_lists_them_by_name() -> None:
    nodes = [node("z", 16), node("m", 2), node("b", 8), node("a", 4)]
    assert placed(run(nodes, [job(1, 2, nodes=2)])) == {1: ("a", "m")}
    assert placed(run(nodes, [job(1, 6, nodes=2)])) == {1: ("b", "z")}


# ---------- 节点筛选 ----------


def test_required_nodes_are_included_in_the_allocation() -> None:
    nodes = [node("a", 8), node("b", 4), node("c", 16)]
    assert placed(run(nodes, [job(1, 2, nodes=2, required_nodes=["c"])])) == {1: ("b", "c")}
    assert placed(run(nodes, [job(1, 2, nodes=2, required_nodes=["c", "a"])])) == {1: ("a", "c")}
    too_many = run(nodes, [job(1, 2, nodes=2, required_nodes=["a", "b", "c"])])
    assert too_many.reasons == {1: "ReqNodeNotAvail"}
    gone = run(nodes, [job(1, 2, nodes=2, required_nodes=["gone"]), job(2, 1)])
    assert gone.reasons == {1: "ReqNodeNotAvail"} and placed(gone) == {2: ("b",)}


def test_required_busy_node_is_waited_for() -> None:
    result = run(THREE, [job(1, nodes=2, required_nodes=["b"])], [running(90, "b", 4, 300)])
    assert placed(result) == {}
    assert result.reservations == [Reservation(1, "a", NOW + 300, ("a", "b"))]


def test_exclude_constraint_and_gpu_type_apply_to_every_node() -> None:
    tagged = [
        node("a", features=frozenset({"ib"})),
        node("b", gpus=1, features=frozenset({"ib", "a100"})),
        node("c", gpus=1, features=frozenset({"a100"})),
    ]
    assert placed(run(tagged, [job(1, nodes=2, excluded_nodes=["a"])])) == {1: ("b", "c")}
    assert run(tagged, [job(1, nodes=2, excluded_nodes=["a", "b"])]).reasons == {
        1: "ReqNodeNotAvail"
    }
    assert placed(run(tagged, [job(1, nodes=2, constraints="ib")])) == {1: ("a", "b")}
    assert run(tagged, [job(1, nodes=3, constraints="ib")]).reasons == {1: "ReqNodeNotAvail"}
    typed = job(1, nodes=2, gpus=1, gpu_type="a100")
    assert placed(run(tagged, [typed])) == {1: ("b", "c")}
    assert run(tagged, [job(1, nodes=3, gpus=1, gpu_type="a100")]).reasons == {1: "Resources"}


# ---------- 独占 ----------


def test_exclusive_gang_takes_empty_nodes() -> None:
    busy = [running(90, "a", 1, 100)]
    assert placed(run(THREE, [job(1, 1, nodes=2, exclusive=True)], busy)) == {1: ("b", "c")}
    wide = run(THREE, [job(1, 1, nodes=3, exclusive=True), job(2, 1, time_limit=500)], busy)
    assert placed(wide) == {}
    assert wide.reservations == [Reservation(1, "a", NOW + 100, ("a", "b", "c"))]
    assert wide.reasons == {1: "Resources", 2: "Priority"}  # 独占的预留不留余量


def test_exclusive_gang_leaves_its_nodes_to_nobody() -> None:
    result = run(THREE, [job(1, 1, nodes=2, exclusive=True), job(2, 1), job(3, 1)])
    assert placed(result) == {1: ("a", "b"), 2: ("c",), 3: ("c",)}


# ---------- 账户上限 ----------


def test_account_limits_count_per_node_times_nodes() -> None:
    limits = {"bob": AccountLimit(max_cpus=8), "carol": AccountLimit(max_gpus=2)}
    fits = run(THREE, [job(1, 4, nodes=2, account="bob")], limits=limits)
    assert placed(fits) == {1: ("a", "b")}
    over = run(THREE, [job(1, 3, nodes=3, account="bob")], limits=limits)
    assert over.reasons == {1: "AssocGrpCpuLimit"}
    busy = [running(9, "a", 4, None, nodes=2, node_ids=("a", "b"), account="bob")]
    assert run(THREE, [job(2, 1, account="bob")], busy, limits).reasons == {2: "AssocGrpCpuLimit"}
    gpus = [node(n, gpus=2) for n in "abc"]
    assert run(gpus, [job(3, 1, nodes=3, gpus=1, account="carol")], limits=limits).reasons == {
        3: "AssocGrpGRES"
    }


# ---------- 提交时 ----------


def refused(request: PendingJob, nodes: list[NodeView]) -> InvalidJobRequest:
    with pytest.raises(InvalidJobRequest) as info:
        check_can_ever_run(request, nodes)
    return info.value


def test_admission_refuses_more_nodes_than_the_partition_has() -> None:
    err = refused(job(0, 1, nodes=4), THREE)
    assert err.field == "job.nodes" and "4 个节点" in err.message and "只有 3 个" in err.message
    check_can_ever_run(job(0, 4, nodes=3), THREE)
    check_can_ever_run(job(0, 1, nodes=9, partition="nowhere"), THREE)  # 分区暂无节点：接受


def test_admission_counts_nodes_after_filters_and_per_node_capacity() -> None:
    err = refused(job(0, 1, nodes=2, excluded_nodes=["a", "b"]), THREE)
    assert err.field == "job.nodes" and "只有 1 个" in err.message and "c" in err.message
    mixed = [node("a", 8), node("b", 4), node("c", 4)]
    err = refused(job(0, 8, nodes=2), mixed)  # 每节点 8 个 CPU：只有 a 容得下
    assert err.field == "job.nodes" and "只有 1 个" in err.message
    check_can_ever_run(job(0, 4, nodes=3), mixed)


def test_admission_required_nodes_for_gangs() -> None:
    check_can_ever_run(job(0, 1, nodes=2, required_nodes=["a", "b"]), THREE)
    err = refused(job(0, 1, nodes=2, required_nodes=["a", "b", "c"]), THREE)
    assert err.field == "job.required_nodes" and "至多列 2 个" in err.message
    err = refused(job(0, 1, nodes=2, required_nodes=["a", "nosuch"]), THREE)
    assert err.field == "job.required_nodes" and "nosuch" in err.message
    mixed = [node("a", 8), node("b", 4), node("c", 8)]
    err = refused(job(0, 8, nodes=2, required_nodes=["b"]), mixed)
    assert err.field == "job.required_nodes" and "b" in err.message
