"""策略在资源向量上的性质测试：随机节点（CPU、内存、GPU、自定义资源 nvme、特性）与随机队列，
其中有多节点作业（gang，1–3 个节点；排队的与运行中的都有）。

(a) 在运行中作业之上应用计划后，没有节点在任何一项上超额；每个作业恰好放到它要的那么多个不同节点上；
(b) 回填从不推迟各分区队首（gang 或单节点）的预留开始时刻（不含回填作业与含回填作业各推算一次）；
(c) GPU 作业不落到没有 GPU 或没有所要型号的节点；-C、-x 与分区对每个节点都被遵守，-w 的节点都在分配里；
(d) ReqNodeNotAvail 恰好出现在 -w/-x/-C 筛得凑不齐节点时；账户的 GPU 上限（每节点 × 节点数）不被突破。
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


def _on(jobs: Sequence[RunningJob], n: NodeView) -> list[RunningJob]:
    """节点 n 上的作业（gang 在它的每个节点上都算一份）。"""
    return [j for j in jobs if n.node_id in j.node_ids]


def _fits(jobs: Sequence[PendingJob | RunningJob], n: NodeView) -> bool:
    cap = _capacity(n)
    return all(sum(_vector(j, n)[k] for j in jobs) <= cap[k] for k in cap)


@st.composite
def cases(draw: st.DrawFn, dense: bool = False, gangs: bool = False) -> Case:
    """dense：一两个有 GPU 的节点、多是小作业且带时限，队首之后常有可回填的作业（回填性质要的正是这种快照）。

    gangs：同 dense，但有 2–4 个节点（都在 default 分区里），多节点作业多、-w 少，gang 常能放下或预留。"""
    dense = dense or gangs
    nodes = [
        NodeView(
            f"id{i}",
            f"n{i}",
            draw(st.integers(1, 16)),
            draw(st.integers(1, 64)) * GIB,
            frozenset(
                draw(st.sets(st.sampled_from(PARTS), min_size=1))
                | ({"default"} if gangs else set())
            ),
            gpus=draw(st.sampled_from([1, 2, 4] if dense else [0, 0, 1, 2, 4])),
            custom={"nvme": draw(st.sampled_from([0, 0, 1, 2]))},
            features=frozenset(draw(st.sets(st.sampled_from(FEATURES)))),
        )
        for i in range(
            draw(st.integers(2, 4) if gangs else st.integers(1, 2) if dense else st.integers(0, 4))
        )
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
    if len(nodes) >= 2 and draw(st.booleans()):
        # 一个运行中的 gang：只在它的每个节点上都放得下、且没有独占作业时才加
        span = draw(st.lists(st.sampled_from(nodes), min_size=2, max_size=3, unique=True))
        e = draw(ends)
        gang = RunningJob(
            900, span[0].node_id, draw(st.integers(1, 2)), draw(st.integers(0, 2)) * GIB,
            None if e is None else NOW + e, account=draw(st.sampled_from(["alice", "carol"])),
            gpus=draw(st.sampled_from([0, 1])), nodes=len(span),
            node_ids=tuple(n.node_id for n in span),
        )  # fmt: skip
        if all(_fits([*_on(busy, n), gang], n) and not any(j.exclusive for j in _on(busy, n))
               for n in span):  # fmt: skip
            busy.append(gang)
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
                    if not gangs or draw(st.integers(0, 5)) == 0
                    else st.just([])
                ),
                excluded_nodes=draw(
                    st.one_of(st.just([]), st.lists(st.sampled_from(names), max_size=2))
                ),
                nodes=draw(st.sampled_from([1, 2, 2, 3] if gangs else [1, 1, 1, 2, 3])),
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
                    whole_node_memory=j.whole_node_memory, nodes=len(p.node_ids),
                    node_ids=p.node_ids,
                ),
            )
        )  # fmt: skip
    return out


def _allowed(j: PendingJob, n: NodeView, tree: Expr | None) -> bool:
    """-x / -C 允许这个节点（-w 看的是整个分配，见 _can_name）。"""
    return n.node_name not in j.excluded_nodes and (tree is None or holds(tree, n.features))


def _can_name(j: PendingJob, members: Sequence[NodeView], tree: Expr | None) -> bool:
    """-w/-x/-C 之下凑得出分区的 min(nodes, 节点数) 个节点，且 -w 列出的（至多 nodes 个）都在其中。"""
    allowed = [n for n in members if _allowed(j, n, tree)]
    wanted = set(j.required_nodes)
    return (
        len(wanted) <= j.nodes
        and wanted <= {n.node_name for n in allowed}
        and len(allowed) >= min(j.nodes, len(members))
    )


def _holds(j: PendingJob, n: NodeView, tree: Expr | None) -> bool:
    """空闲时这个节点能当 j 的一个节点（分区、-x、-C、GPU 型号、总容量）。"""
    typed = j.gpu_type is None or j.gpu_type in n.features
    return j.partition in n.partitions and _allowed(j, n, tree) and typed and _fits([j], n)


def _gang_start(j: PendingJob, starts: dict[str, float], names: dict[str, str]) -> float | None:
    """各节点最早时刻已知时 gang 的最早开始：-w 的节点必选，其余取最早的若干个，再取其中最晚的。"""
    wanted = set(j.required_nodes)
    must = [t for i, t in starts.items() if names[i] in wanted]
    rest = sorted(t for i, t in starts.items() if names[i] not in wanted)
    need = j.nodes - len(must)
    if len(wanted) > j.nodes or len(must) < len(wanted) or need > len(rest):
        return None
    return max(must + rest[:need])


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
@given(st.one_of(cases(), cases(gangs=True)))
def test_property_no_node_is_over_allocated_in_any_dimension(case: Case) -> None:
    result = plan(case.snap)
    by_id = {j.job_id: j for j in case.snap.pending}
    ids = {n.node_id for n in case.snap.nodes}
    for p in result.placements:
        assert len(set(p.node_ids)) == len(p.node_ids) == by_id[p.job_id].nodes, "节点数不对"
        assert set(p.node_ids) <= ids and p.node_ids[0] == p.node_id
    jobs = list(case.snap.running) + [r for _, r in _placed(case, result)]
    for n in case.snap.nodes:
        mine = _on(jobs, n)
        assert _fits(mine, n), f"节点 {n.node_name} 超额"
        if any(j.exclusive for j in mine):
            assert len(mine) == 1, "独占作业所在节点只有它一个"


@settings(max_examples=200, deadline=None)
@given(st.one_of(cases(), cases(dense=True), cases(gangs=True)))
def test_property_backfill_never_delays_a_partition_head(case: Case) -> None:
    result = plan(case.snap)
    by_id = {j.job_id: j for j in case.snap.pending}
    index = {j.job_id: k for k, j in enumerate(case.snap.pending)}
    names = {n.node_id: n.node_name for n in case.snap.nodes}
    placed = _placed(case, result)
    assert len({by_id[r.job_id].partition for r in result.reservations}) == len(result.reservations)
    for r in result.reservations:
        head = by_id[r.job_id]
        assert len(set(r.node_ids)) == len(r.node_ids) == head.nodes and r.node_ids[0] == r.node_id
        assert set(head.required_nodes) <= {names[i] for i in r.node_ids}, "-w 的节点不在预留里"
        without: dict[str, float] = {}
        for n in case.snap.nodes:
            if not _holds(head, n, case.exprs.get(head.job_id)):
                continue
            ahead = [j for k, j in placed if k < index[head.job_id]]
            start = _start(head, n, _on(list(case.snap.running) + ahead, n))
            if start is not None:
                without[n.node_id] = start
        assert _gang_start(head, without, names) == r.start, (
            "预留时刻即不含回填作业时推算的最早开始"
        )
        for node_id in r.node_ids:
            n = next(n for n in case.snap.nodes if n.node_id == node_id)
            assert without[node_id] <= r.start
            with_backfill = _start(
                head, n, _on(list(case.snap.running) + [j for _, j in placed], n)
            )
            assert with_backfill is not None and with_backfill <= r.start, "回填推迟了队首"


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_node_filters_and_gpus_are_honoured(case: Case) -> None:
    result = plan(case.snap)
    by_id = {j.job_id: j for j in case.snap.pending}
    nodes = {n.node_id: n for n in case.snap.nodes}
    for p in result.placements:
        j = by_id[p.job_id]
        assert j.runnable
        allocation = {nodes[i].node_name for i in p.node_ids}
        assert set(j.required_nodes) <= allocation, "-w 的节点不在分配里"
        for node_id in p.node_ids:
            n = nodes[node_id]
            assert j.partition in n.partitions
            if j.gpus:
                assert n.gpus >= j.gpus, "GPU 作业落到了 GPU 不够的节点"
            if j.gpu_type is not None:
                assert j.gpu_type in n.features, "GPU 型号不符"
            assert _allowed(j, n, case.exprs.get(j.job_id)), "违反了 -x/-C"
            assert j.gres.get("nvme", 0) <= n.custom.get("nvme", 0)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_req_node_not_avail_and_gpu_caps(case: Case) -> None:
    result = plan(case.snap)
    reasons = result.reasons
    for j in case.snap.pending:
        members = [n for n in case.snap.nodes if j.partition in n.partitions]
        none_named = bool(members) and not _can_name(j, members, case.exprs.get(j.job_id))
        if reasons.get(j.job_id) == "ReqNodeNotAvail":
            assert none_named
        if none_named:
            assert j.job_id not in {p.job_id for p in result.placements}
            assert reasons[j.job_id] in {"ReqNodeNotAvail", "Dependency", "AssocMaxJobsLimit",
                                         "AssocGrpCpuLimit", "AssocGrpGRES", "JobArrayTaskLimit"}  # fmt: skip
    placed = [r for _, r in _placed(case, result)]
    if any(r.account == "carol" and r.gpus for r in placed):
        jobs = list(case.snap.running) + placed
        assert sum(r.gpus * r.nodes for r in jobs if r.account == "carol") <= 2
    assert set(reasons) | {p.job_id for p in result.placements} == {
        j.job_id for j in case.snap.pending
    }
