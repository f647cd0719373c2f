"""policy 的单元测试与性质测试：优先级顺序、最佳适配、不超额分配、EASY 回填不推迟队首、
exclusive、分区、账户上限、数组 %N、依赖未满足的作业不启动。"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.account_limits import NO_LIMIT, AccountLimit
from conductor.admission import check_can_ever_run
from conductor.errors import InvalidJobRequest
from conductor.placement import can_hold
from conductor.policy import (
    NodeView,
    PendingJob,
    Plan,
    RunningJob,
    Snapshot,
    free_cpus,
    plan,
)

GIB = 1024**3
NOW = 1_000_000.0


def node(node_id: str, cpus: float, memory: float = 64 * GIB, *, name: str | None = None,
         partitions: frozenset[str] = frozenset({"default"})) -> NodeView:  # fmt: skip
    return NodeView(node_id, name if name is not None else node_id, cpus, memory, partitions)


def job(job_id: int, cpus: int, memory: int = GIB, **kw: object) -> PendingJob:
    return PendingJob(job_id, cpus, memory, **kw)  # type: ignore[arg-type]


def running(
    job_id: int, node_id: str, cpus: int, ends_in: float | None, **kw: object
) -> RunningJob:
    end = NOW + ends_in if ends_in is not None else None
    return RunningJob(job_id, node_id, cpus, kw.pop("memory", GIB), end, **kw)  # type: ignore[arg-type]


def run(nodes: list[NodeView], pending: list[PendingJob], running_jobs: list[RunningJob] | None = None,
        limits: dict[str, AccountLimit] | None = None) -> Plan:  # fmt: skip
    table = limits or {}
    return plan(Snapshot(nodes, running_jobs or [], pending, NOW, lambda a: table.get(a, NO_LIMIT)))


def placed(result: Plan) -> list[tuple[int, str]]:
    return [(p.job_id, p.node_id) for p in result.placements]


# ---------- 基本放置 ----------


def test_can_ever_run_needs_one_node_with_every_dimension() -> None:
    """作业不跨节点：CPU 够的节点与内存够的节点不是同一个，就永远放不下（提交时 422）。"""
    nodes = [node("cpu", 16, 1 * GIB), node("mem", 2, 64 * GIB)]
    with pytest.raises(InvalidJobRequest) as info:
        check_can_ever_run(job(0, 8, 8 * GIB), nodes)
    assert info.value.field == "job.memory_per_node"
    check_can_ever_run(job(0, 16, 1 * GIB), nodes)


def test_empty_inputs() -> None:
    assert run([node("a", 4)], []).placements == []
    assert run([], [job(1, 1)]).placements == []


def test_best_fit_picks_fewest_free_cpus_and_breaks_ties_by_name() -> None:
    nodes = [node("big", 16), node("small", 2), node("mid", 4)]
    assert placed(run(nodes, [job(1, 2)])) == [(1, "small")]
    assert placed(run(nodes, [job(1, 3)])) == [(1, "mid")]
    twins = [node("id-1", 4, name="zeta"), node("id-2", 4, name="alpha")]
    assert placed(run(twins, [job(1, 1)])) == [(1, "id-2")]
    assert placed(run(list(reversed(twins)), [job(1, 1)])) == [(1, "id-2")]


def test_memory_is_reserved() -> None:
    """内存与 CPU 一样被预留：CPU 空闲但内存已被占满的节点不接作业。"""
    nodes = [node("a", 8, 4 * GIB)]
    busy = [running(9, "a", 1, None, memory=3 * GIB)]
    result = run(nodes, [job(1, 1, 2 * GIB), job(2, 1, 1 * GIB)], busy)
    assert placed(result) == []
    assert result.reasons[1] == "Resources"


def test_never_fitting_job_does_not_block_the_queue() -> None:
    nodes = [node("a", 4), node("b", 2)]
    result = run(nodes, [job(1, 5), job(2, 1, 65 * GIB), job(3, 2), job(4, 4)])
    assert placed(result) == [(3, "b"), (4, "a")]
    assert result.reasons == {1: "Resources", 2: "Resources"}


def test_order_of_the_queue_is_kept() -> None:
    """队列已按有效优先级排好：先到先放。"""
    nodes = [node("a", 3), node("b", 5)]
    result = run(nodes, [job(7, 1), job(3, 2), job(9, 1), job(1, 3)])
    assert [p.job_id for p in result.placements] == [7, 3, 9, 1]


# ---------- 回填 ----------


def test_without_time_limits_the_head_blocks_everything_behind_it() -> None:
    """预计结束算不出（不限时）时不回填：宁可空着，也不让小作业饿死大作业。"""
    nodes = [node("a", 4)]
    result = run(nodes, [job(1, 4), job(2, 1, time_limit=10)], [running(9, "a", 2, None)])
    assert placed(result) == []
    assert result.reasons == {1: "Resources", 2: "Priority"}


def test_backfill_only_when_the_head_is_not_delayed() -> None:
    """队首要 4 个 CPU，100 秒后才有；60 秒的作业可先跑，200 秒的不行，不限时的也不行。"""
    nodes = [node("a", 4)]
    busy = [running(9, "a", 2, 100)]
    pending = [
        job(1, 4, time_limit=50),
        job(2, 2, time_limit=200),
        job(3, 2),
        job(4, 2, time_limit=60),
    ]
    result = run(nodes, pending, busy)
    assert placed(result) == [(4, "a")]
    assert [(r.job_id, r.node_id, r.start) for r in result.reservations] == [(1, "a", NOW + 100)]
    assert result.reasons == {1: "Resources", 2: "Priority", 3: "Priority"}


def test_backfill_may_use_what_the_head_leaves_spare() -> None:
    """队首开始后仍有余量时，越过预留时刻的作业也可以用这部分余量。"""
    nodes = [node("a", 8)]
    busy = [running(9, "a", 6, 100)]
    result = run(nodes, [job(1, 4, time_limit=10), job(2, 2), job(3, 1)], busy)
    # 100 秒后有 8 个 CPU，队首用 4 还余 4：不限时的作业 2 只用余量，可以先跑；此刻已无空闲给作业 3
    assert placed(result) == [(2, "a")]


def test_backfill_on_other_nodes_is_free() -> None:
    """预留只在一个节点上：别的节点照常接活。"""
    nodes = [node("a", 4), node("b", 2)]
    busy = [running(9, "a", 2, 100), running(8, "b", 1, 500)]
    result = run(nodes, [job(1, 4, time_limit=10), job(2, 1)], busy)
    assert placed(result) == [(2, "b")]
    assert [r.node_id for r in result.reservations] == ["a"]


# ---------- exclusive、分区、上限、数组、依赖 ----------


def test_exclusive_needs_an_empty_node_and_keeps_it() -> None:
    nodes = [node("a", 4), node("b", 8)]
    busy = [running(9, "b", 1, None)]
    result = run(nodes, [job(1, 1, exclusive=True), job(2, 1)], busy)
    assert placed(result) == [(1, "a"), (2, "b")]
    # a 上有独占作业：哪怕 CPU 空闲也不接
    result = run(nodes, [job(3, 1)], [running(1, "a", 1, None, exclusive=True)])
    assert placed(result) == [(3, "b")]


def test_partitions_restrict_nodes() -> None:
    gpu = frozenset({"gpu"})
    nodes = [node("cpu1", 8), node("gpu1", 4, partitions=gpu)]
    result = run(nodes, [job(1, 2, partition="gpu"), job(2, 2), job(3, 8, partition="gpu")])
    assert placed(result) == [(1, "gpu1"), (2, "cpu1")]
    assert result.reasons == {3: "Resources"}


def test_account_limits() -> None:
    limits = {"alice": AccountLimit(max_running_jobs=2), "bob": AccountLimit(max_cpus=3)}
    nodes = [node("a", 16)]
    busy = [running(9, "a", 1, None, account="alice")]
    pending = [
        job(1, 1, account="alice"),
        job(2, 1, account="alice"),
        job(3, 2, account="bob"),
        job(4, 2, account="bob"),
        job(5, 1, account="bob"),
    ]
    result = run(nodes, pending, busy, limits)
    assert [p.job_id for p in result.placements] == [1, 3, 5]
    assert result.reasons == {2: "AssocMaxJobsLimit", 4: "AssocGrpCpuLimit"}


def test_array_throttle() -> None:
    nodes = [node("a", 16)]
    busy = [running(10, "a", 1, None, array_job_id=10)]
    pending = [job(i, 1, array_job_id=10, array_max_running=3) for i in range(11, 16)]
    result = run(nodes, pending, busy)
    assert [p.job_id for p in result.placements] == [11, 12]
    assert set(result.reasons.values()) == {"JobArrayTaskLimit"}


def test_free_cpus_per_partition() -> None:
    """共用的节点计入它所属的每个分区；超额占用的节点算 0；没有节点的分区为 0。"""
    nodes = [
        node("a", 4),
        node("b", 2, partitions=frozenset({"default", "gpu"})),
        node("c", 2, partitions=frozenset({"gpu"})),
    ]
    busy = [running(1, "a", 4, None), running(2, "c", 3, None), running(3, "b", 1, None)]
    assert free_cpus(nodes, busy, ["default", "gpu", "debug"]) == (
        1,
        {"default": 1, "gpu": 1, "debug": 0},
    )
    assert free_cpus([], [], ["default"]) == (0, {"default": 0})


def test_jobs_waiting_for_dependencies_never_start() -> None:
    result = run([node("a", 4)], [job(1, 1, runnable=False), job(2, 1)])
    assert placed(result) == [(2, "a")]
    assert result.reasons == {1: "Dependency"}


def test_partition_time_limit() -> None:
    snap = Snapshot(
        [node("a", 4)],
        [],
        [job(1, 1, time_limit=7200), job(2, 1, time_limit=60)],
        NOW,
        exceeds_partition_max=lambda _p, t: t is None or t > 3600,
    )
    result = plan(snap)
    assert [p.job_id for p in result.placements] == [2]
    assert result.reasons == {1: "PartitionTimeLimit"}


# ---------- 性质测试 ----------


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    parts = ["default", "gpu"]
    nodes = []
    for i in range(draw(st.integers(0, 4))):
        member = draw(st.sets(st.sampled_from(parts), min_size=1))
        nodes.append(
            NodeView(
                f"id{i}",
                draw(st.sampled_from(["n1", "n2", "n3"])),
                draw(st.integers(1, 16)),
                draw(st.integers(1, 64)) * GIB,
                frozenset(member),
            )
        )
    limit = st.one_of(st.none(), st.integers(1, 500))
    busy = []
    for i, n in enumerate(nodes):
        for k in range(draw(st.integers(0, 3))):
            busy.append(
                RunningJob(
                    1000 + i * 10 + k,
                    n.node_id,
                    draw(st.integers(1, 4)),
                    draw(st.integers(0, 8)) * GIB,
                    (NOW + e) if (e := draw(limit)) is not None else None,
                    draw(st.booleans()) and k == 0 and draw(st.booleans()),
                    draw(st.sampled_from(["alice", "bob"])),
                    draw(st.sampled_from([None, 1])),
                )
            )
    pending = [
        PendingJob(
            i + 1,
            draw(st.integers(1, 16)),
            draw(st.integers(0, 32)) * GIB,
            draw(st.sampled_from(parts)),
            draw(limit),
            draw(st.integers(0, 5)) == 0,
            draw(st.sampled_from(["alice", "bob", "carol"])),
            array := draw(st.sampled_from([None, 1])),
            2 if array else None,
            draw(st.integers(0, 6)) > 0,
        )
        for i in range(draw(st.integers(0, 20)))
    ]
    limits = {"alice": AccountLimit(max_running_jobs=3), "bob": AccountLimit(max_cpus=8)}
    return Snapshot(nodes, busy, pending, NOW, lambda a: limits.get(a, NO_LIMIT))


def _after(snap: Snapshot, result: Plan) -> tuple[dict, list]:  # type: ignore[type-arg]
    by_id = {j.job_id: j for j in snap.pending}
    jobs = list(snap.running)
    for p in result.placements:
        j = by_id[p.job_id]
        end = NOW + j.time_limit if j.time_limit is not None else None
        jobs.append(
            RunningJob(
                j.job_id, p.node_id, j.cpus, j.memory_bytes, end, j.exclusive, j.account,
                j.array_job_id,
            )
        )  # fmt: skip
    return by_id, jobs


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_property_no_node_is_over_allocated(snap: Snapshot) -> None:
    result = plan(snap)
    _, jobs = _after(snap, result)
    for n in snap.nodes:
        mine = [j for j in jobs if j.node_id == n.node_id]
        new = [j for j in mine if j.job_id < 1000]
        if not new:
            continue
        old = [j for j in mine if j.job_id >= 1000]
        assert sum(j.cpus for j in mine) <= n.total_cpus
        assert sum(j.memory_bytes for j in mine) <= n.total_memory
        if any(j.exclusive for j in mine):
            assert len(mine) == 1, "独占作业所在节点只有它一个"
        assert not any(j.exclusive for j in old)


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_property_rules_hold_for_every_placement(snap: Snapshot) -> None:
    """放置的作业：依赖已满足、在自己的分区、账户上限与数组 %N 不被突破、顺序与队列一致。"""
    result = plan(snap)
    by_id, jobs = _after(snap, result)
    nodes = {n.node_id: n for n in snap.nodes}
    order = [j.job_id for j in snap.pending]
    ids = [p.job_id for p in result.placements]
    assert ids == sorted(ids, key=order.index)
    for p in result.placements:
        j = by_id[p.job_id]
        assert j.runnable
        assert j.partition in nodes[p.node_id].partitions
        assert p.job_id not in result.reasons
    new = [j for j in jobs if j.job_id < 1000]
    if any(j.account == "alice" for j in new):
        assert sum(1 for j in jobs if j.account == "alice") <= 3
    if any(j.account == "bob" for j in new):
        assert sum(j.cpus for j in jobs if j.account == "bob") <= 8
    if any(j.array_job_id == 1 for j in new):
        assert sum(1 for j in jobs if j.array_job_id == 1) <= 2
    assert set(by_id) == set(ids) | set(result.reasons)


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_property_backfill_never_delays_a_reservation(snap: Snapshot) -> None:
    """每个预留：在预留时刻，节点上仍在运行的作业（含本轮放置的）加上队首不超过容量。"""
    result = plan(snap)
    by_id, jobs = _after(snap, result)
    for r in result.reservations:
        head = by_id[r.job_id]
        n = next(n for n in snap.nodes if n.node_id == r.node_id)
        alive = [
            j for j in jobs
            if j.node_id == r.node_id and (j.expected_end is None or j.expected_end > r.start)
        ]  # fmt: skip
        if head.exclusive:
            assert alive == []
            continue
        assert not any(j.exclusive for j in alive)
        assert sum(j.cpus for j in alive) + head.cpus <= n.total_cpus
        assert sum(j.memory_bytes for j in alive) + head.memory_bytes <= n.total_memory


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_property_unknown_end_means_strict_order(snap: Snapshot) -> None:
    """没有任何时限（无法预计结束）时：算不出开始时间的分区队首能用的节点上，不再放后面的作业。"""
    pending = [
        PendingJob(j.job_id, j.cpus, j.memory_bytes, j.partition, None, j.exclusive)
        for j in snap.pending
    ]
    busy = [
        RunningJob(r.job_id, r.node_id, r.cpus, r.memory_bytes, None, r.exclusive)
        for r in snap.running
    ]
    snap = Snapshot(snap.nodes, busy, pending, NOW)
    result = plan(snap)
    blocked_nodes: set[str] = set()
    placed_at = {p.job_id: p.node_id for p in result.placements}
    reserved = {r.job_id for r in result.reservations}
    for j in pending:
        if j.job_id in placed_at:
            assert placed_at[j.job_id] not in blocked_nodes
        elif result.reasons.get(j.job_id) == "Resources" and j.job_id not in reserved:
            blocked_nodes |= {
                n.node_id for n in snap.nodes if j.partition in n.partitions and can_hold(j, n)
            }


@settings(max_examples=400, deadline=None)
@given(snapshots())
def test_property_a_partition_never_starts_more_jobs_than_its_free_cpus(snap: Snapshot) -> None:
    """调度器每个分区只读“该分区空闲 CPU + 余量”行的依据：一轮里一个分区启动的作业不多于它的空闲 CPU。"""
    total, by_partition = free_cpus(snap.nodes, snap.running, ["default", "gpu"])
    by_id = {j.job_id: j for j in snap.pending}
    started: dict[str, int] = {}
    for p in plan(snap).placements:
        name = by_id[p.job_id].partition
        started[name] = started.get(name, 0) + 1
    assert sum(started.values()) <= total
    assert all(n <= by_partition[name] for name, n in started.items())
