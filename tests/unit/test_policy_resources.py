"""策略在资源向量上的单元测试：GPU、通用资源、节点筛选（GPU 型号、-C、-w、-x）、--mem=0、
GPU 的 EASY 回填、最佳适配对 GPU 节点的回避、账户的 GPU 上限（AssocGrpGRES）。"""

from __future__ import annotations

import pytest

from conductor.account_limits import NO_LIMIT, AccountLimit, blocking_reason
from conductor.features import parse_constraint, satisfies
from conductor.placement import NodeView, PendingJob, RunningJob
from conductor.policy import Plan, Snapshot, plan
from conductor.reasons import Usage, blocked
from conductor.resources import Resources

GIB = 1024**3
NOW = 1_000_000.0


def node(node_id: str, cpus: float = 8, memory: float = 64 * GIB, **kw: object) -> NodeView:
    return NodeView(node_id, node_id, cpus, memory, **kw)  # type: ignore[arg-type]


def job(job_id: int, cpus: int = 1, memory: int = GIB, **kw: object) -> PendingJob:
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


def placed(result: Plan) -> list[tuple[int, str]]:
    return [(p.job_id, p.node_id) for p in result.placements]


# ---------- 向量 ----------


def test_node_and_job_vectors() -> None:
    n = node("g", 8, 16 * GIB, gpus=2, custom={"nvme": 1}, features=frozenset({"A100", "ib"}))
    assert n.total == Resources.of(8, 16 * GIB, 2, nvme=1)
    assert n.features == {"a100", "ib"}
    j = job(1, 4, GIB, gpus=1, gres={"nvme": 1}, required_nodes=["g"])
    assert j.request == Resources.of(4, GIB, 1, nvme=1)
    assert j.required_nodes == ("g",)
    hash(n), hash(j)  # 快照里的值可以哈希
    r = running(9, "g", 2, None, gpus=1)
    assert r.used == Resources.of(2, GIB, 1)
    # 老的写法（位置参数、不带新字段）照旧
    assert NodeView("a", "a", 4, GIB, frozenset({"x"})).total == Resources.of(4, GIB)


# ---------- GPU ----------


def test_two_one_gpu_jobs_share_a_two_gpu_node_and_the_third_waits() -> None:
    nodes = [node("g", 8, gpus=2)]
    result = run(nodes, [job(1, gpus=1), job(2, gpus=1), job(3, gpus=1)])
    assert placed(result) == [(1, "g"), (2, "g")]
    assert result.reasons == {3: "Resources"}
    # 一个结束之后第三个放得下
    busy = [running(1, "g", 1, None, gpus=1)]
    assert placed(run(nodes, [job(3, gpus=1)], busy)) == [(3, "g")]


def test_gpu_jobs_never_land_on_nodes_without_gpus() -> None:
    nodes = [node("cpu", 64), node("g", 4, gpus=1)]
    result = run(nodes, [job(1, gpus=1), job(2, gpus=1)])
    assert placed(result) == [(1, "g")]
    assert result.reasons == {2: "Resources"}
    # 集群里没有 GPU 足够的节点：不预留、不挡后面的作业
    result = run(nodes, [job(3, gpus=2), job(4, 2)])
    assert placed(result) == [(4, "cpu")]
    assert result.reasons == {3: "Resources"} and result.reservations == []


def test_cpu_only_jobs_prefer_nodes_without_gpus() -> None:
    """不要 GPU 的作业先挑没有 GPU 的节点，哪怕 GPU 节点的空闲 CPU 更少（最佳适配的第一条）。"""
    nodes = [node("big", 32), node("g", 4, gpus=2)]
    assert placed(run(nodes, [job(1, 2)])) == [(1, "big")]
    # 没有别的节点放得下时，CPU 作业照样可以用 GPU 节点
    assert placed(run(nodes, [job(1, 2)], [running(9, "big", 31, None)])) == [(1, "g")]
    # 要 GPU 的作业挑空闲 GPU 最少的节点
    gpu_nodes = [node("g4", 8, gpus=4), node("g2", 8, gpus=2), node("g8", 8, gpus=8)]
    assert placed(run(gpu_nodes, [job(1, gpus=2)])) == [(1, "g2")]


def test_gpu_type_must_be_among_the_node_features() -> None:
    nodes = [
        node("h", gpus=2, features=frozenset({"h100"})),
        node("a", gpus=2, features=frozenset({"a100"})),
    ]
    result = run(nodes, [job(1, gpus=1, gpu_type="a100"), job(2, gpus=1, gpu_type="v100")])
    assert placed(result) == [(1, "a")]
    assert result.reasons == {2: "Resources"}


def test_generic_resources_are_counted_like_any_other() -> None:
    nodes = [node("plain", 8), node("fast", 8, custom={"nvme": 1})]
    result = run(nodes, [job(1, gres={"nvme": 1}), job(2, gres={"nvme": 1}), job(3)])
    assert placed(result) == [(1, "fast"), (3, "plain")]
    assert result.reasons == {2: "Resources"}


def test_gpu_wide_head_is_not_delayed_while_cpu_jobs_backfill_around_it() -> None:
    """队首要 2 个 GPU，100 秒后才有。排在后面的 1-GPU 作业放得下但会越过预留 → Priority；
    只要 CPU 的作业用队首留下的 CPU，照样回填。"""
    nodes = [node("g", 8, 64 * GIB, gpus=2)]
    busy = [running(9, "g", 2, 100, gpus=1)]
    pending = [
        job(1, 2, gpus=2, time_limit=3600),
        job(2, 1, gpus=1, time_limit=3600),
        job(3, 2),  # 不限时，只用 CPU
        job(4, 1, gpus=1, time_limit=50),  # 在预留时刻前结束：可以用那块空着的 GPU
    ]
    result = run(nodes, pending, busy)
    assert placed(result) == [(3, "g"), (4, "g")]
    assert [(r.job_id, r.node_id, r.start) for r in result.reservations] == [(1, "g", NOW + 100)]
    assert result.reasons == {1: "Resources", 2: "Priority"}


def test_reservation_spare_is_per_dimension() -> None:
    """队首开始后 CPU 有余量、GPU 没有：越过预留时刻的作业只有不要 GPU 时才能用余量。"""
    nodes = [node("g", 16, gpus=1)]
    busy = [running(9, "g", 8, 100, gpus=1)]
    result = run(nodes, [job(1, 4, gpus=1, time_limit=10), job(2, 4, gpus=1), job(3, 4)], busy)
    assert placed(result) == [(3, "g")]
    assert result.reasons == {1: "Resources", 2: "Priority"}


# ---------- 节点筛选 ----------


def test_constraint_lands_only_on_labelled_nodes() -> None:
    nodes = [
        node("plain", 64),
        node("a", 8, features=frozenset({"a100"})),
        node("ib", 4, features=frozenset({"a100", "ib"})),
    ]
    result = run(
        nodes,
        [job(1, constraints="a100"), job(2, constraints="a100&ib"), job(3, 5, constraints="a100")],
    )
    # 作业 1：a 与 ib 都符合，挑空闲 CPU 少的 ib；作业 3 要 5 个 CPU，只有 a 放得下
    assert placed(result) == [(1, "ib"), (2, "ib"), (3, "a")]
    result = run(nodes, [job(4, constraints="(h100|a100)&ib"), job(5, constraints="h100")])
    assert placed(result) == [(4, "ib")]
    assert result.reasons == {5: "ReqNodeNotAvail"}


def test_required_and_excluded_nodes() -> None:
    nodes = [node("n1", 8), node("n2", 8), node("n3", 8)]
    result = run(
        nodes,
        [
            job(1, required_nodes=["n3"]),
            job(2, excluded_nodes=["n1", "n2"]),
            job(3, excluded_nodes=["n1"]),
        ],
    )
    assert placed(result) == [(1, "n3"), (2, "n3"), (3, "n3")]
    # -w 的节点忙：等资源（并为它预留），别的节点空着也不用
    busy = [running(9, "n1", 8, 100)]
    result = run(nodes, [job(4, required_nodes=["n1"], time_limit=10)], busy)
    assert placed(result) == []
    assert result.reasons == {4: "Resources"}
    assert [(r.node_id, r.start) for r in result.reservations] == [("n1", NOW + 100)]
    # -w 的节点不在（不存活）、-x 排除了全部、单节点作业列了两个节点：ReqNodeNotAvail，不挡后面的作业
    pending = [
        job(5, required_nodes=["gone"]),
        job(6, excluded_nodes=["n1", "n2", "n3"]),
        job(7, required_nodes=["n2", "n3"]),
        job(8, required_nodes=["n2", "n2"]),
    ]
    result = run(nodes, pending)
    assert placed(result) == [(8, "n2")]
    assert result.reasons == {5: "ReqNodeNotAvail", 6: "ReqNodeNotAvail", 7: "ReqNodeNotAvail"}


def test_filters_apply_within_the_partition() -> None:
    nodes = [
        node("cpu1", partitions=frozenset({"batch"})),
        node("gpu1", gpus=1, partitions=frozenset({"gpu"})),
    ]
    result = run(
        nodes, [job(1, partition="gpu", required_nodes=["cpu1"]), job(2, partition="batch", gpus=1)]
    )
    assert placed(result) == []
    assert result.reasons == {1: "ReqNodeNotAvail", 2: "Resources"}
    # 分区里一个节点也没有：仍是 Resources（节点加入后自然可放）
    assert run([], [job(3, required_nodes=["x"])]).reasons == {3: "Resources"}


def test_bad_constraint_in_a_row_does_not_break_the_pass() -> None:
    result = run([node("a")], [job(1, constraints="a100&"), job(2)])
    assert placed(result) == [(2, "a")]
    assert result.reasons == {1: "ReqNodeNotAvail"}


# ---------- --mem=0 ----------


def test_whole_node_memory_takes_all_of_it() -> None:
    nodes = [node("m1", 8, 16 * GIB), node("m2", 8, 64 * GIB)]
    # 作业 1 要整个节点的内存：之后要内存的作业放不到那里（作业 3 等它结束），不要内存的可以
    result = run(
        nodes,
        [
            job(1, 1, 0, whole_node_memory=True, time_limit=100),
            job(2, 1, 60 * GIB, time_limit=100),
            job(3, 1, 8 * GIB),
            job(4, 1, 0),
        ],
    )
    assert placed(result) == [(1, "m1"), (2, "m2"), (4, "m1")]
    assert result.reasons == {3: "Resources"}
    # 节点上已有作业用着内存时，整节点内存的作业等它结束
    busy = [running(9, "m1", 1, 100, memory=GIB), running(8, "m2", 1, 200, memory=GIB)]
    result = run(nodes, [job(5, 1, 0, whole_node_memory=True, time_limit=60), job(6, 1, GIB)], busy)
    assert placed(result) == [(6, "m2")]
    assert [(r.job_id, r.node_id, r.start) for r in result.reservations] == [(5, "m1", NOW + 100)]
    # 运行中的整节点内存作业占着该节点的全部内存
    busy = [running(9, "m1", 1, None, memory=0, whole_node_memory=True)]
    assert placed(run(nodes[:1], [job(7, 1, 1)], busy)) == []


def test_exclusive_with_whole_node_memory() -> None:
    nodes = [node("a", 4, 8 * GIB, gpus=1), node("b", 4, 8 * GIB)]
    result = run(nodes, [job(1, 1, 0, exclusive=True, whole_node_memory=True), job(2, 1, 0)])
    assert placed(result) == [(1, "b"), (2, "a")]  # 独占作业不要 GPU：先挑没有 GPU 的节点


# ---------- 账户的 GPU 上限 ----------


def test_account_gpu_cap_blocks_gpu_jobs_only() -> None:
    limits = {"alice": AccountLimit(max_gpus=2)}
    nodes = [node("g", 32, gpus=8)]
    busy = [running(9, "g", 1, None, gpus=1, account="alice")]
    pending = [
        job(1, gpus=1, account="alice"),
        job(2, gpus=1, account="alice"),
        job(3, account="alice"),
        job(4, gpus=1, account="bob"),
    ]
    result = run(nodes, pending, busy, limits)
    assert [p.job_id for p in result.placements] == [1, 3, 4]
    assert result.reasons == {2: "AssocGrpGRES"}


def test_gpu_cap_reason_is_derived_in_one_place() -> None:
    """API 的原因推导与策略用同一个函数：Usage 里有账户的 GPU 占用时得出同一个原因。"""
    limit = AccountLimit(max_gpus=4)
    assert blocking_reason(limit, 0, 0, 1, running_gpus=3, gpus=2) == "AssocGrpGRES"
    assert blocking_reason(limit, 0, 0, 1, running_gpus=3, gpus=1) is None
    assert blocking_reason(limit, 0, 0, 1, running_gpus=9, gpus=0) is None
    usage = Usage()
    usage.add("alice", 2, None, 3)
    assert blocked(None, False, limit, usage, "alice", 1, None, None, gpus=2) == "AssocGrpGRES"
    assert blocked(None, False, limit, usage, "alice", 1, None, None) is None
    # CPU 上限先于 GPU 上限
    both = AccountLimit(max_cpus=2, max_gpus=1)
    assert blocked(None, False, both, usage, "alice", 1, None, None, gpus=2) == "AssocGrpCpuLimit"


def test_account_limit_config_accepts_max_gpus() -> None:
    assert AccountLimit.model_validate({"max_gpus": 8}).max_gpus == 8
    with pytest.raises(ValueError):
        AccountLimit.model_validate({"max_gpus": -1})


# ---------- -C 表达式 ----------


@pytest.mark.parametrize(
    ("text", "features", "expected"),
    [
        ("a100", {"a100"}, True),
        ("A100", {"a100"}, True),
        ("a100", {"h100"}, False),
        ("a100|h100", {"h100"}, True),
        ("a100&ib", {"a100"}, False),
        ("a100&ib", {"a100", "ib"}, True),
        ("a100|h100&ib", {"a100"}, True),  # & 比 | 结合得紧
        ("(a100|h100)&ib", {"a100"}, False),
        (" ( a100 | h100 ) & ib ", {"h100", "ib"}, True),
        ("((x))", {"x"}, True),
    ],
)
def test_constraint_expressions(text: str, features: set[str], expected: bool) -> None:
    assert parse_constraint(text).matches(features) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "约束为空"),
        ("a100&", "应为特性名"),
        ("|a100", "应为特性名"),
        ("(a100|h100", "括号没有闭合"),
        ("a100)", "多出"),
        ("a100 h100", "多出"),
        ("a100,h100", "无效"),
        ("a100&&ib", "应为特性名"),
    ],
)
def test_bad_constraints_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_constraint(text)


def test_constraint_names_and_no_constraint() -> None:
    assert parse_constraint("(a100|h100)&IB").names == {"a100", "h100", "ib"}
    assert satisfies(None, set()) and satisfies("  ", set())
