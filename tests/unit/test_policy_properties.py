"""策略在资源向量上的性质测试：随机节点（CPU、内存、GPU、自定义资源 nvme、特性）与随机队列。

(a) 在运行中作业之上应用计划后，没有节点在任何一项上超额；
(b) 回填从不推迟各分区队首的预留开始时刻（不含回填作业与含回填作业各推算一次）；
(c) GPU 作业不落到没有 GPU 或没有所要型号的节点；-C、-w、-x 与分区总被遵守；
(d) ReqNodeNotAvail 恰好出现在 -w/-x/-C 筛掉了分区全部节点时；账户的 GPU 上限不被突破。
检查都用这里独立写的判定，不调用策略的内部函数。
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.account_limits import NO_LIMIT, AccountLimit
from conductor.placement import NodeView, PendingJob, RunningJob
from conductor.policy import Plan, Snapshot, plan

GIB = 1024**3
NOW = 1_000_000.0
PARTS = ["default", "gpu"]
FEATURES = ["a100", "h100", "ib"]
LIMITS = {
    "alice": AccountLimit(max_running_jobs=3),
    "bob": AccountLimit(max_cpus=8),
    "carol": AccountLimit(max_gpus=2),
}

# ---------- -C 表达式：随机语法树，独立求值，再写成字符串交给策略 ----------

Expr = str | tuple[str, "Expr", "Expr"]

exprs: st.SearchStrategy[Expr] = st.recursive(
    st.sampled_from(FEATURES),
    lambda inner: st.tuples(st.sampled_from(["&", "|"]), inner, inner),
    max_leaves=4,
)


def render(e: Expr) -> str:
    if isinstance(e, str):
        return e
    op, left, right = e
    return f"({render(left)}{op}{render(right)})"


def holds(e: Expr, features: frozenset[str]) -> bool:
    if isinstance(e, str):
        return e in features
    op, left, right = e
    if op == "&":
        return holds(left, features) and holds(right, features)
    return holds(left, features) or holds(right, features)


@dataclass(frozen=True)
class Case:
    snap: Snapshot
    exprs: dict[int, Expr]  # 作业号 → 它的 -C 语法树


# ---------- 生成 ----------


def _vector(j: PendingJob | RunningJob, n: NodeView) -> dict[str, float]:
    """作业在节点上占用的各项（独立于策略的写法）。"""
    return {
        "CPU": j.cpus,
        "memory": n.total_memory if j.whole_node_memory else j.memory_bytes,
        "GPU": j.gpus,
        "nvme": j.gres.get("nvme", 0.0),
    }


def _capacity(n: NodeView) -> dict[str, float]:
    return {
        "CPU": n.total_cpus,
        "memory": n.total_memory,
        "GPU": n.gpus,
        "nvme": n.custom.get("nvme", 0.0),
    }


def _fits(jobs: Sequence[PendingJob | RunningJob], n: NodeView) -> bool:
    cap = _capacity(n)
    return all(sum(_vector(j, n)[k] for j in jobs) <= cap[k] for k in cap)


@st.composite
def cases(draw: st.DrawFn, dense: bool = False) -> Case:
    """dense：一两个有 GPU 的节点、多是小作业且带时限，队首之后常有可回填的作业（回填性质要的正是这种快照）。"""
    nodes = [
        NodeView(
            f"id{i}",
            f"n{i}",
            draw(st.integers(1, 16)),
            draw(st.integers(1, 64)) * GIB,
            frozenset(draw(st.sets(st.sampled_from(PARTS), min_size=1))),
            gpus=draw(st.sampled_from([1, 2, 4] if dense else [0, 0, 1, 2, 4])),
            custom={"nvme": draw(st.sampled_from([0, 0, 1, 2]))},
            features=frozenset(draw(st.sets(st.sampled_from(FEATURES)))),
        )
        for i in range(draw(st.integers(1, 2) if dense else st.integers(0, 4)))
    ]
    ends = st.integers(1, 500) if dense else st.one_of(st.none(), st.integers(1, 500))
    busy: list[RunningJob] = []
    for i, n in enumerate(nodes):
        mine: list[RunningJob] = []
        for k in range(draw(st.integers(0, 3))):
            exclusive = k == 0 and draw(st.integers(0, 4)) == 0
            whole = draw(st.integers(0, 5)) == 0
            e = draw(ends)
            r = RunningJob(
                1000 + i * 10 + k,
                n.node_id,
                draw(st.integers(1, 4)),
                0 if whole else draw(st.integers(0, 8)) * GIB,
                None if e is None else NOW + e,
                exclusive,
                draw(st.sampled_from(["alice", "bob", "carol"])),
                draw(st.sampled_from([None, 1])),
                gpus=draw(st.sampled_from([0, 0, 1, 2])),
                gres={"nvme": draw(st.sampled_from([0, 0, 1]))},
                whole_node_memory=whole,
            )
            # 运行中的作业本身不超额（超额的快照另有 test_policy.py 覆盖）
            if _fits([*mine, r], n) and not any(m.exclusive for m in mine):
                mine.append(r)
            if exclusive:
                break
        busy.extend(mine)
    names = [n.node_name for n in nodes] + ["gone"]
    trees: dict[int, Expr] = {}
    pending = []
    for i in range(draw(st.integers(0, 20))):
        gpus = draw(st.sampled_from([0, 1, 1, 2] if dense else [0, 0, 0, 1, 2, 3]))
        tree = (
            draw(st.one_of(st.none(), st.none(), exprs))
            if not dense or draw(st.integers(0, 4)) == 0
            else None
        )
        if tree is not None:
            trees[i + 1] = tree
        whole = draw(st.integers(0, 7)) == 0
        array = draw(st.sampled_from([None, 1]))
        cpus = st.one_of(st.integers(1, 3), st.integers(1, 16)) if dense else st.integers(1, 16)
        limit = (
            st.integers(1, 500)
            if dense and draw(st.integers(0, 4))
            else st.none() | st.integers(1, 500)
        )
        pending.append(
            PendingJob(
                i + 1,
                draw(cpus),
                0 if whole else draw(st.integers(0, 4 if dense else 32)) * GIB,
                draw(st.sampled_from(PARTS)),
                draw(limit),
                draw(st.integers(0, 5)) == 0,
                draw(st.sampled_from(["alice", "bob", "carol", "dave"])),
                array,
                2 if array else None,
                draw(st.integers(0, 6)) > 0,
                gpus=gpus,
                gres={"nvme": draw(st.sampled_from([0, 0, 0, 1]))},
                gpu_type=draw(
                    st.sampled_from([None, None, None, "a100"] if dense else [None, "a100", "h100"])
                )
                if gpus
                else None,
                whole_node_memory=whole,
                constraints=None if tree is None else render(tree),
                required_nodes=draw(
                    st.one_of(
                        st.just([]),
                        st.just([]),
                        st.lists(st.sampled_from(names), min_size=1, max_size=2),
                    )
                ),
                excluded_nodes=draw(
                    st.one_of(st.just([]), st.lists(st.sampled_from(names), max_size=2))
                ),
            )
        )
    snap = Snapshot(nodes, busy, pending, NOW, lambda a: LIMITS.get(a, NO_LIMIT))
    return Case(snap, trees)


def _placed(case: Case, result: Plan) -> list[tuple[int, RunningJob]]:
    """本轮放置的作业，写成运行中的作业（带它在队列里的位置）。"""
    index = {j.job_id: k for k, j in enumerate(case.snap.pending)}
    by_id = {j.job_id: j for j in case.snap.pending}
    out = []
    for p in result.placements:
        j = by_id[p.job_id]
        out.append(
            (
                index[j.job_id],
                RunningJob(
                    j.job_id, p.node_id, j.cpus, j.memory_bytes,
                    None if j.time_limit is None else NOW + j.time_limit,
                    j.exclusive, j.account, j.array_job_id, gpus=j.gpus, gres=j.gres,
                    whole_node_memory=j.whole_node_memory,
                ),
            )
        )  # fmt: skip
    return out


def _named(j: PendingJob, n: NodeView, tree: Expr | None) -> bool:
    """-w / -x / -C 允许这个节点（单节点作业的 -w 要求列出的每个节点都是它）。"""
    if j.required_nodes and any(name != n.node_name for name in j.required_nodes):
        return False
    if n.node_name in j.excluded_nodes:
        return False
    return tree is None or holds(tree, n.features)


def _start(head: PendingJob, n: NodeView, jobs: Sequence[RunningJob]) -> float | None:
    """在节点 n 上，jobs 按各自的预计结束离开后，head 最早能开始的时刻（算不出为 None）。"""
    moments = sorted({NOW, *(max(j.expected_end, NOW) for j in jobs if j.expected_end is not None)})
    for t in moments:
        alive = [j for j in jobs if j.expected_end is None or j.expected_end > t]
        if head.exclusive:
            if not alive:
                return t
        elif not any(j.exclusive for j in alive) and _fits([*alive, head], n):
            return t
    return None


# ---------- 性质 ----------


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_no_node_is_over_allocated_in_any_dimension(case: Case) -> None:
    result = plan(case.snap)
    jobs = list(case.snap.running) + [r for _, r in _placed(case, result)]
    for n in case.snap.nodes:
        mine = [j for j in jobs if j.node_id == n.node_id]
        assert _fits(mine, n), f"节点 {n.node_name} 超额"
        if any(j.exclusive for j in mine):
            assert len(mine) == 1, "独占作业所在节点只有它一个"


@settings(max_examples=200, deadline=None)
@given(st.one_of(cases(), cases(dense=True), cases(dense=True)))
def test_property_backfill_never_delays_a_partition_head(case: Case) -> None:
    result = plan(case.snap)
    by_id = {j.job_id: j for j in case.snap.pending}
    index = {j.job_id: k for k, j in enumerate(case.snap.pending)}
    placed = _placed(case, result)
    assert len({by_id[r.job_id].partition for r in result.reservations}) == len(result.reservations)
    for r in result.reservations:
        head = by_id[r.job_id]
        n = next(n for n in case.snap.nodes if n.node_id == r.node_id)
        here = [j for j in case.snap.running if j.node_id == n.node_id]
        ahead = here + [j for k, j in placed if j.node_id == n.node_id and k < index[head.job_id]]
        everyone = here + [j for _, j in placed if j.node_id == n.node_id]
        without = _start(head, n, ahead)
        assert without == r.start, "预留时刻即不含回填作业时推算的最早开始"
        with_backfill = _start(head, n, everyone)
        assert with_backfill is not None and with_backfill <= r.start, "回填推迟了队首"


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_node_filters_and_gpus_are_honoured(case: Case) -> None:
    result = plan(case.snap)
    by_id = {j.job_id: j for j in case.snap.pending}
    nodes = {n.node_id: n for n in case.snap.nodes}
    for p in result.placements:
        j, n = by_id[p.job_id], nodes[p.node_id]
        assert j.runnable and j.partition in n.partitions
        if j.gpus:
            assert n.gpus >= j.gpus, "GPU 作业落到了 GPU 不够的节点"
        if j.gpu_type is not None:
            assert j.gpu_type in n.features, "GPU 型号不符"
        assert _named(j, n, case.exprs.get(j.job_id)), "违反了 -w/-x/-C"
        assert j.gres.get("nvme", 0) <= n.custom.get("nvme", 0)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_req_node_not_avail_and_gpu_caps(case: Case) -> None:
    result = plan(case.snap)
    reasons = result.reasons
    for j in case.snap.pending:
        members = [n for n in case.snap.nodes if j.partition in n.partitions]
        none_named = bool(members) and not any(
            _named(j, n, case.exprs.get(j.job_id)) for n in members
        )
        if reasons.get(j.job_id) == "ReqNodeNotAvail":
            assert none_named
        if none_named:
            assert j.job_id not in {p.job_id for p in result.placements}
            assert reasons[j.job_id] in {"ReqNodeNotAvail", "Dependency", "AssocMaxJobsLimit",
                                         "AssocGrpCpuLimit", "AssocGrpGRES", "JobArrayTaskLimit"}  # fmt: skip
    placed = [r for _, r in _placed(case, result)]
    if any(r.account == "carol" and r.gpus for r in placed):
        jobs = list(case.snap.running) + placed
        assert sum(r.gpus for r in jobs if r.account == "carol") <= 2
    assert set(reasons) | {p.job_id for p in result.placements} == {
        j.job_id for j in case.snap.pending
    }
