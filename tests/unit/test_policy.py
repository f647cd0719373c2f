"""policy 的单元测试：严格 FIFO、最佳适配、不超额分配、永远放不下的作业不阻塞队列。"""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from conductor.policy import NodeView, PendingJob, Placement, can_ever_run, plan_fifo

GIB = 1024**3


def node(
    node_id: str,
    free_cpus: float,
    free_memory: float = 64 * GIB,
    *,
    total_cpus: float | None = None,
    total_memory: float | None = None,
    name: str | None = None,
) -> NodeView:
    """构造节点视图；未给总量时总量等于空闲量（空闲节点）。"""
    return NodeView(
        node_id=node_id,
        node_name=name if name is not None else node_id,
        total_cpus=total_cpus if total_cpus is not None else free_cpus,
        total_memory=total_memory if total_memory is not None else free_memory,
        free_cpus=free_cpus,
        free_memory=free_memory,
    )


def job(job_id: int, cpus: int, memory: int = GIB) -> PendingJob:
    return PendingJob(job_id, cpus, memory)


# ---------- can_ever_run ----------


def test_can_ever_run_uses_total_not_free() -> None:
    """按总容量判断：节点此刻满载也算“终究能运行”。"""
    busy = node("a", 0, 0, total_cpus=8, total_memory=16 * GIB)
    assert can_ever_run(8, 16 * GIB, [busy])
    assert not can_ever_run(9, 16 * GIB, [busy])
    assert not can_ever_run(8, 16 * GIB + 1, [busy])


def test_can_ever_run_needs_one_node_with_both() -> None:
    """作业不跨节点：CPU 与内存必须在同一节点上同时满足。"""
    nodes = [node("cpu", 16, 1 * GIB), node("mem", 2, 64 * GIB)]
    assert not can_ever_run(8, 8 * GIB, nodes)
    assert can_ever_run(16, 1 * GIB, nodes)
    assert can_ever_run(2, 64 * GIB, nodes)


def test_can_ever_run_no_nodes() -> None:
    assert not can_ever_run(1, 1, [])


# ---------- plan_fifo：确定性用例 ----------


def test_empty_inputs() -> None:
    assert plan_fifo([], [node("a", 4)]) == []
    assert plan_fifo([job(1, 1)], []) == []


def test_head_that_does_not_fit_blocks_later_jobs() -> None:
    """队首暂时放不下（但终究能放下）时，后面的小作业也必须等待。"""
    nodes = [node("a", 2, total_cpus=8)]
    pending = [job(1, 4), job(2, 1), job(3, 1)]
    assert plan_fifo(pending, nodes) == []


def test_blocking_after_some_placed() -> None:
    """前面的作业占满后，第一个放不下的作业之后全部停止放置。"""
    nodes = [node("a", 4)]
    pending = [job(1, 2), job(2, 2), job(3, 1), job(4, 1)]
    assert plan_fifo(pending, nodes) == [Placement(1, "a", "a"), Placement(2, "a", "a")]


def test_never_fitting_job_is_skipped_and_does_not_block() -> None:
    """超过任何节点总容量的作业被跳过，后面的作业照常放置。"""
    nodes = [node("a", 4), node("b", 2)]
    pending = [job(1, 5), job(2, 1, 65 * GIB), job(3, 2), job(4, 4)]
    assert plan_fifo(pending, nodes) == [Placement(3, "b", "b"), Placement(4, "a", "a")]


def test_best_fit_picks_fewest_free_cpus_that_fit() -> None:
    """选能放下且空闲 CPU 最少的节点，给大作业留整块空间。"""
    nodes = [node("big", 16), node("small", 2), node("mid", 4), node("tiny", 1)]
    assert plan_fifo([job(1, 2)], nodes) == [Placement(1, "small", "small")]
    assert plan_fifo([job(1, 3)], nodes) == [Placement(1, "mid", "mid")]
    assert plan_fifo([job(1, 1)], nodes) == [Placement(1, "tiny", "tiny")]


def test_best_fit_updates_free_between_jobs() -> None:
    """同一轮内前一个作业消耗的资源会影响后一个作业的选择。"""
    nodes = [node("a", 4), node("b", 3)]
    # 1 → b（3 最少），b 剩 1；2 需 2 → a（4）；a 剩 2；3 需 1 → b（剩 1 最少）
    pending = [job(1, 2), job(2, 2), job(3, 1)]
    assert plan_fifo(pending, nodes) == [
        Placement(1, "b", "b"),
        Placement(2, "a", "a"),
        Placement(3, "b", "b"),
    ]


def test_best_fit_tie_broken_by_name() -> None:
    """空闲 CPU 相同时按节点名排序，与节点在列表中的顺序无关。"""
    nodes = [
        node("id-1", 4, name="zeta"),
        node("id-2", 4, name="alpha"),
        node("id-3", 4, name="mike"),
    ]
    assert plan_fifo([job(1, 1)], nodes) == [Placement(1, "id-2", "alpha")]
    assert plan_fifo([job(1, 1)], list(reversed(nodes))) == [Placement(1, "id-2", "alpha")]


def test_best_fit_ignores_memory_for_ranking_but_respects_it() -> None:
    """排序只看空闲 CPU；但内存不够的节点不会被选中。"""
    nodes = [node("lowmem", 2, 1 * GIB), node("himem", 8, 32 * GIB)]
    assert plan_fifo([job(1, 1, 2 * GIB)], nodes) == [Placement(1, "himem", "himem")]
    assert plan_fifo([job(1, 1, 1 * GIB)], nodes) == [Placement(1, "lowmem", "lowmem")]


def test_memory_constraint_blocks_when_cpus_are_free() -> None:
    """CPU 充足而内存暂时不足时，队首同样阻塞后续作业。"""
    nodes = [node("a", 8, 4 * GIB, total_memory=16 * GIB)]
    pending = [job(1, 1, 3 * GIB), job(2, 1, 2 * GIB), job(3, 1, 1 * GIB)]
    assert plan_fifo(pending, nodes) == [Placement(1, "a", "a")]


def test_memory_exact_fit() -> None:
    nodes = [node("a", 2, 4 * GIB)]
    pending = [job(1, 1, 2 * GIB), job(2, 1, 2 * GIB), job(3, 0, 1)]
    # 内存恰好用尽；第三个作业需要 1 字节，放不下 → 阻塞
    assert plan_fifo(pending, nodes) == [Placement(1, "a", "a"), Placement(2, "a", "a")]


def test_fractional_free_cpus() -> None:
    """Ray 的空闲 CPU 可能是小数：3.5 放不下 4 个 CPU。"""
    nodes = [node("a", 3.5, total_cpus=8)]
    assert plan_fifo([job(1, 4)], nodes) == []
    assert plan_fifo([job(1, 3)], nodes) == [Placement(1, "a", "a")]


def test_placements_preserve_submit_order() -> None:
    nodes = [node("a", 3), node("b", 5)]
    pending = [job(7, 1), job(3, 2), job(9, 1), job(1, 3)]
    result = plan_fifo(pending, nodes)
    assert [p.job_id for p in result] == [7, 3, 9, 1]


def test_does_not_mutate_inputs() -> None:
    nodes = [node("a", 4)]
    pending = [job(1, 2), job(2, 2)]
    plan_fifo(pending, nodes)
    assert nodes == [node("a", 4)]
    assert pending == [job(1, 2), job(2, 2)]


# ---------- plan_fifo：性质测试 ----------


@st.composite
def cluster_and_queue(draw: st.DrawFn) -> tuple[list[NodeView], list[PendingJob]]:
    n_nodes = draw(st.integers(min_value=0, max_value=5))
    nodes = []
    for i in range(n_nodes):
        total_cpus = draw(st.integers(min_value=1, max_value=16))
        total_mem = draw(st.integers(min_value=1, max_value=64)) * GIB
        free_cpus = draw(st.integers(min_value=0, max_value=total_cpus))
        free_mem = draw(st.integers(min_value=0, max_value=total_mem // GIB)) * GIB
        name = draw(st.sampled_from(["n1", "n2", "n3"]))  # 故意制造同名，检验并列规则
        nodes.append(NodeView(f"id{i}", name, total_cpus, total_mem, free_cpus, free_mem))
    n_jobs = draw(st.integers(min_value=0, max_value=20))
    jobs = [
        PendingJob(
            i + 1,
            draw(st.integers(min_value=1, max_value=20)),
            draw(st.integers(min_value=1, max_value=70)) * GIB // 2,
        )
        for i in range(n_jobs)
    ]
    return nodes, jobs


@settings(max_examples=300, deadline=None)
@given(cluster_and_queue())
def test_property_never_over_allocates(case: tuple[list[NodeView], list[PendingJob]]) -> None:
    """任意节点与作业：每个节点上放置的 CPU 与内存之和不超过其空闲量。"""
    nodes, pending = case
    placements = plan_fifo(pending, nodes)
    by_id = {j.job_id: j for j in pending}
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in placements:
        used[p.node_id][0] += by_id[p.job_id].cpus
        used[p.node_id][1] += by_id[p.job_id].memory_bytes
    for n in nodes:
        assert used[n.node_id][0] <= n.free_cpus
        assert used[n.node_id][1] <= n.free_memory


@settings(max_examples=300, deadline=None)
@given(cluster_and_queue())
def test_property_fifo_structure(case: tuple[list[NodeView], list[PendingJob]]) -> None:
    """放置结果是队列的有序子序列；节点名与 id 对应；被跳过的只有“永远放不下”的，
    且第一个“能放下却未放置”的作业之后不再有任何放置。"""
    nodes, pending = case
    placements = plan_fifo(pending, nodes)
    names = {n.node_id: n.node_name for n in nodes}
    placed = [p.job_id for p in placements]
    order = [j.job_id for j in pending]
    assert placed == [j for j in order if j in set(placed)]
    assert len(set(placed)) == len(placed)
    for p in placements:
        assert names[p.node_id] == p.node_name
    placed_set = set(placed)
    blocked = False
    for j in pending:
        runnable = can_ever_run(j.cpus, j.memory_bytes, nodes)
        if j.job_id in placed_set:
            assert runnable
            assert not blocked, "队首阻塞之后不应再放置作业"
        elif runnable:
            blocked = True


@settings(max_examples=200, deadline=None)
@given(cluster_and_queue())
def test_property_best_fit_choice(case: tuple[list[NodeView], list[PendingJob]]) -> None:
    """逐个重放：每个放置都选中了当时能放下的节点中 (空闲 CPU, 名称, id) 最小者。"""
    nodes, pending = case
    placements = plan_fifo(pending, nodes)
    by_id = {j.job_id: j for j in pending}
    free = {n.node_id: [n.free_cpus, n.free_memory] for n in nodes}
    for p in placements:
        j = by_id[p.job_id]
        fitting = [
            n
            for n in nodes
            if j.cpus <= free[n.node_id][0] and j.memory_bytes <= free[n.node_id][1]
        ]
        best = min(fitting, key=lambda n: (free[n.node_id][0], n.node_name, n.node_id))
        assert p.node_id == best.node_id
        free[p.node_id][0] -= j.cpus
        free[p.node_id][1] -= j.memory_bytes
