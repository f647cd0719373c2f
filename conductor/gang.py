"""为作业挑出它的一组节点（纯函数，policy.plan 使用）：单节点作业是 nodes=1 的特例。

多节点作业（gang）全有或全无：nodes 个不同的节点同时放得下每节点的向量才放，绝不先占一部分再等其余的。
-w 列出的节点都要在分配里（同 Slurm），其余按最佳适配（placement.best_fit_key）补齐；
分配按节点名排序，第一个运行批处理脚本（Slurm 的批处理节点也是分配里的第一个节点）。
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conductor.backfill import Ledger, Slot
from conductor.placement import PendingJob, best_fit_key

Key = Callable[[Ledger], tuple[object, ...]]


def _by_name(ledger: Ledger) -> tuple[str, str]:
    return (ledger.view.node_name, ledger.view.node_id)


def _choose(job: PendingJob, nodes: Sequence[Ledger], key: Key) -> list[Ledger] | None:
    """-w 的每个节点各取 key 最小的一个，再按 key 从其余节点补足 nodes 个；凑不齐返回 None。"""
    ranked = sorted(nodes, key=key)
    chosen: list[Ledger] = []
    for name in sorted(set(job.required_nodes)):
        match = next((n for n in ranked if n.view.node_name == name), None)
        if match is None:
            return None
        chosen.append(match)
    taken = {id(n) for n in chosen}
    rest = [n for n in ranked if id(n) not in taken]
    chosen += rest[: job.nodes - len(chosen)]
    if len(chosen) < job.nodes:
        return None
    return sorted(chosen, key=_by_name)


def lacks_required(job: PendingJob, nodes: Sequence[Ledger]) -> bool:
    """-w 列出的节点有不在 nodes 里的（不在集群、不在分区，或被 -x/-C 筛掉）。"""
    present = {n.view.node_name for n in nodes}
    return any(name not in present for name in job.required_nodes)


def pick_now(job: PendingJob, candidates: Sequence[Ledger]) -> list[Ledger] | None:
    """此刻放得下作业的节点里选出它的分配（每个节点按最佳适配）；凑不齐 nodes 个则 None，什么也不占。"""
    return _choose(job, candidates, lambda n: best_fit_key(job, n.view, n.used))


def earliest_start(
    job: PendingJob, eligible: Sequence[Ledger], now: float
) -> list[tuple[Ledger, Slot]] | None:
    """队首最早能开始的时刻与届时的那组节点，每个节点一个预留；有节点算不出时只在其余节点里凑。

    节点上的作业只会陆续结束，一个节点某时刻放得下，之后也放得下；所以 gang 的开始时刻是所选节点
    各自最早时刻中最晚的那个：按（最早时刻、节点名）选，-w 的节点必选。凑不齐 nodes 个返回 None。"""
    starts = {id(n): n.start_for(job, now) for n in eligible}
    known = [n for n in eligible if starts[id(n)] is not None]

    def moment(n: Ledger) -> float:
        slot = starts[id(n)]
        return slot.start if slot is not None else float("inf")

    chosen = _choose(job, known, lambda n: (moment(n), *_by_name(n)))
    if chosen is None:
        return None
    start = max(moment(n) for n in chosen)
    return [(n, n.slot_at(job, start, now)) for n in chosen]
