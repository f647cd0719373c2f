"""集群规模模拟（issue 20 第 4、5 项）：不启动 Ray，用合成数据量调度轮与对账在大集群上的耗时。

    python -m bench.scale_sim            # 完整规模（1,000 节点、10,000 运行中、100,000 排队）
    python -m bench.scale_sim --quick    # 小规模冒烟（轮数少，不跑全队列的最坏情形与 10 万行的扫描）

集群：节点 × 64 CPU × 8 GPU × 512 GiB，平均分到 5 个分区；每个节点 10 个运行中作业正好占满 CPU 与 GPU，
其中 1% 刚结束（空出约 650 个 CPU，调度轮有事可做）。排队作业混合：1 CPU、GPU 作业、4 节点的 gang、
数组任务（%10）、等待依赖的作业，20 个账户（acct00 已到作业数上限、acct01 接近 CPU 上限）。

1. 纯策略：conductor.policy.plan 在调度轮真实会读的窗口上（各分区“空闲 CPU + 余量”，同 SchedulingCycle._read_window），
   以及（最坏情形，仅作记录）整个队列一次交给策略；
2. 整轮：临时的内嵌 PostgreSQL 里写入同样的行，计时 SchedulingCycle.run（判定依赖、读窗口、决策、等待原因、认领，
   一个事务）；每轮之后把认领到的作业改回排队（不计时），各轮状态相同；
3. 扫描：节点数 10 / 100 / 1,000 × 排队数 1k / 10k / 100k；
4. 恢复：10,000 个运行中作业的 load_held_jobs、decide（代理视图是纯数据）、apply（无变化与丢失 1%），
   再加一轮调度。Ray actor 重启本身的时间见 bench.run --only recovery，这里不启动 Ray。

结果写到 bench/results/scale_sim.json，图写到 docs/benchmarks-scale.png（--quick 写到 bench/results/scale_sim_quick.png）。只打印数字，不做断言。
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import json
import pstats
import random
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

import conductor.cycle as cycle_module
from cluster.reconcile import AgentView, HeldJob, apply, decide, load_held_jobs
from conductor.account_limits import AccountLimit, limit_for
from conductor.cycle import ReadyNode, SchedulingCycle
from conductor.db import make_engine
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from conductor.pacing import QUEUE_SLACK, QUICK_SLACK
from conductor.partitions import PartitionConfig
from conductor.policy import (
    NodeView,
    PendingJob,
    Plan,
    RunningJob,
    Snapshot,
    free_cpus,
    plan,
    saturated,
)
from conductor.settings import Settings

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scale_sim.json"
PLOT = ROOT.parent / "docs" / "benchmarks-scale.png"

GIB = 1 << 30
NODE_CPUS, NODE_GPUS, NODE_MEMORY = 64, 8, 512 * GIB
PARTITIONS = tuple(f"p{i}" for i in range(5))
ACCOUNTS = tuple(f"acct{i:02d}" for i in range(20))
# acct00 已到作业数上限（读窗口时整体跳过）；acct01 离 CPU 上限只差一点（策略里逐个挡住）
LIMITS = {
    "acct00": AccountLimit(max_running_jobs=400),
    "acct01": AccountLimit(max_cpus=3100),
}
PER_NODE = 10  # 每个节点的运行中作业数
FINISHED = 0.01  # 刚结束、空出资源的运行中作业比例
ARRAY_SIZE, ARRAY_MAX = 100, 10
PENDING_BASE = 1_000_000  # 排队作业的编号从这里起（运行中作业为 1 … 10,000）
ARRAY_BASE = 5_000_000  # 数组主作业号
NOW = time.time()


# ---------------------------------------------------------------- 合成数据


def cluster(n: int) -> list[NodeView]:
    """n 个节点，按编号轮流分到 5 个分区。"""
    return [
        NodeView(
            f"node{i:05d}",
            f"n{i:05d}",
            NODE_CPUS,
            NODE_MEMORY,
            frozenset({PARTITIONS[i % len(PARTITIONS)]}),
            gpus=NODE_GPUS,
        )
        for i in range(n)
    ]


def running_jobs(nodes: Sequence[NodeView], rng: random.Random) -> list[RunningJob]:
    """每个节点 10 个作业：4 个 7 CPU + 2 GPU，6 个 6 CPU，正好占满 64 CPU、8 GPU；
    数组 0–49 各有 10 个任务在运行（到了 %10），50–99 各 5 个。预计结束在 1 分钟到 1 天之后，1% 不限时。"""
    jobs: list[RunningJob] = []
    arrays = [a for a in range(50) for _ in range(ARRAY_MAX)] + [
        a for a in range(50, 100) for _ in range(ARRAY_MAX // 2)
    ]
    for node in nodes:
        for slot in range(PER_NODE):
            i = len(jobs) + 1
            array = ARRAY_BASE + arrays[i - 1] if i <= len(arrays) else None
            end = None if rng.random() < 0.01 else NOW + rng.uniform(60, 86_400)
            jobs.append(
                RunningJob(
                    i,
                    node.node_id,
                    7 if slot < 4 else 6,
                    32 * GIB,
                    end,
                    account=ACCOUNTS[i % len(ACCOUNTS)],
                    array_job_id=array,
                    gpus=2 if slot < 4 else 0,
                )
            )
    return jobs


def pending_jobs(n: int, rng: random.Random) -> list[PendingJob]:
    """n 个排队作业，已按队列顺序（编号）：50% 1 CPU、20% GPU、5% 4 节点 gang、20% 数组任务、5% 等待依赖。"""
    jobs: list[PendingJob] = []
    array_task = 0
    kinds = rng.choices(range(5), weights=(50, 20, 5, 20, 5), k=n)
    for k, kind in enumerate(kinds):
        i = PENDING_BASE + k
        account = rng.choice(ACCOUNTS)
        partition = rng.choice(PARTITIONS)
        if kind == 0:
            job = PendingJob(i, 1, 2 * GIB, partition, 3600, account=account)
        elif kind == 1:
            job = PendingJob(
                i, 4, 32 * GIB, partition, 4 * 3600, account=account, gpus=rng.choice((1, 2))
            )
        elif kind == 2:
            job = PendingJob(
                i, 32, 256 * GIB, partition, 12 * 3600, account=account, gpus=8, nodes=4
            )
        elif kind == 3:
            array = array_task // ARRAY_SIZE
            array_task += 1
            job = PendingJob(
                i,
                2,
                4 * GIB,
                PARTITIONS[array % len(PARTITIONS)],
                2 * 3600,
                account=ACCOUNTS[array % len(ACCOUNTS)],
                array_job_id=ARRAY_BASE + array,
                array_max_running=ARRAY_MAX,
            )
        else:
            job = PendingJob(i, 1, 2 * GIB, partition, 3600, account=account, runnable=False)
        jobs.append(job)
    return jobs


class World:
    """一个合成集群：节点、运行中作业（其中 1% 已结束）、排队作业。"""

    def __init__(self, nodes: int, pending: int, seed: int = 20) -> None:
        rng = random.Random(seed)
        self.nodes = cluster(nodes)
        everything = running_jobs(self.nodes, rng)
        gone = set(rng.sample(range(len(everything)), int(len(everything) * FINISHED)))
        self.finished = [r for k, r in enumerate(everything) if k in gone]
        self.running = [r for k, r in enumerate(everything) if k not in gone]
        self.pending = pending_jobs(pending, rng)

    def array_limits(self) -> dict[int, int]:
        return {r.array_job_id: ARRAY_MAX for r in self.running if r.array_job_id}

    def window(self, slack: int) -> list[PendingJob]:
        """调度轮会读到的队首（纯 Python 重现 _read_window 与 load_pending：只读可调度的作业，
        跳过已到上限的账户与数组，每个分区读“空闲 CPU + slack”个，合并为队列顺序）。"""
        free, by_partition = free_cpus(self.nodes, self.running, PARTITIONS)
        if free == 0:
            return []
        accounts, arrays = saturated(self.running, LIMITS, self.array_limits())
        skip_accounts, skip_arrays = set(accounts), set(arrays)
        room = {name: idle + slack for name, idle in by_partition.items()}
        read: Counter[str] = Counter()
        out = []
        for job in self.pending:
            if not job.runnable or job.account in skip_accounts:
                continue
            if job.array_job_id in skip_arrays or read[job.partition] >= room[job.partition]:
                continue
            read[job.partition] += 1
            out.append(job)
        return out

    def snapshot(self, pending: Sequence[PendingJob]) -> Snapshot:
        table = settings().partition_table()
        return Snapshot(
            self.nodes,
            self.running,
            pending,
            now=NOW,
            account_limits=lambda account: limit_for(LIMITS, account),
            exceeds_partition_max=table.exceeds_max,
        )


def settings() -> Settings:
    partitions = {name: PartitionConfig(default=name == PARTITIONS[0]) for name in PARTITIONS}
    return Settings(partitions=partitions, account_limits=LIMITS)


# ---------------------------------------------------------------- 计时与内存


def figures(samples: Sequence[float]) -> dict[str, float]:
    """毫秒：p50、p99（样本少时即最大值）、最大、轮数。"""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "passes": len(ordered),
    }


def timed(step: Callable[[], Any], passes: int, budget: float = 20.0) -> dict[str, float]:
    """预热一次，再计时 passes 次（总时间超过 budget 秒即停，轮数照实记下）。"""
    step()
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(passes):
        t0 = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() - started > budget:
            break
    return figures(samples)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def traced_peak(build: Callable[[], Any]) -> float:
    """build() 期间 Python 分配的峰值（MiB，tracemalloc）：快照的对象加一轮 plan 的临时对象。"""
    gc.collect()
    tracemalloc.start()
    try:
        kept = build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return round(peak / (1 << 20), 1)


def hotspots(step: Callable[[], Any], top: int = 6) -> list[str]:
    """cProfile 下跑一次，按自身耗时列出最重的几个函数（文件:行 函数 自身秒数 调用次数）。"""
    gc.collect()  # 前面测量留下的垃圾不要算进这一轮
    profile = cProfile.Profile()
    profile.runcall(step)
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (file, line, name), (_cc, calls, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((own, f"{Path(file).name}:{line} {name}", calls))
    rows.sort(reverse=True)
    return [f"{where}  {own:.2f} s  {calls} 次" for own, where, calls in rows[:top]]


# ---------------------------------------------------------------- 1 纯策略


def policy_pass(world: World, pending: Sequence[PendingJob]) -> Plan:
    return plan(world.snapshot(pending))


def measure_policy(world: World, passes: int, whole_queue: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, slack in (("deep", QUEUE_SLACK), ("quick", QUICK_SLACK)):
        window = world.window(slack)
        result = policy_pass(world, window)
        out[f"window_{label}"] = {
            "read": len(window),
            "placed": len(result.placements),
            "reservations": len(result.reservations),
            **timed(lambda w=window: policy_pass(world, w), passes),  # type: ignore[misc]
        }
    deep = world.window(QUEUE_SLACK)
    out["window_deep"]["traced_peak_mib"] = traced_peak(
        lambda: (world.snapshot(deep), policy_pass(world, deep))
    )
    if whole_queue:
        # 一轮就要几十秒：只计一轮，内存取这一轮前后进程 RSS 峰值之差（tracemalloc 会再慢几倍）
        before = rss_mib()
        t0 = time.perf_counter()
        result = policy_pass(world, world.pending)
        elapsed = time.perf_counter() - t0
        out["whole_queue"] = {
            "read": len(world.pending),
            "placed": len(result.placements),
            **figures([elapsed]),
            "rss_peak_growth_mib": round(rss_mib() - before, 1),
        }
    return out


# ---------------------------------------------------------------- 2 数据库里的行


def insert_rows(engine: Engine, world: World) -> None:
    """把合成集群写进 jobs 表：运行中作业（含 1% 已结束、已归还资源的）与排队作业，编号与快照一致。"""
    held = [(r, "RUNNING") for r in world.running] + [(r, "COMPLETED") for r in world.finished]
    held.sort(key=lambda pair: pair[0].job_id)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, account, partition, script, environment, work_dir, "
                "stdout_path, stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, "
                "exclusive, state, submit_time, eligible_time, data_source, gpus, "
                "time_limit_seconds, start_time, end_time, released_at, node_id, node_name, "
                "node_ids, node_names, agent_id, token, node_host, epoch, array_job_id) "
                "SELECT v.id, 'running', v.account, 'p0', 'true', '{}', '/tmp', '/dev/null', "
                "'/dev/null', 1, v.cpus, v.cpus, v.mem, false, v.state, now(), now(), 'API', v.gpus, "
                "v.lim, to_timestamp(v.start_at), "
                "CASE WHEN v.state = 'COMPLETED' THEN now() END, "
                "CASE WHEN v.state = 'COMPLETED' THEN now() END, v.node, v.node, "
                "jsonb_build_array(v.node), jsonb_build_array(v.node), 'agent-' || v.node, "
                "'tok-' || v.id, 'host-' || v.node, 1, v.arr "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:accounts AS text[]), "
                "CAST(:cpus AS int[]), CAST(:mem AS bigint[]), CAST(:states AS text[]), "
                "CAST(:gpus AS int[]), CAST(:lims AS int[]), CAST(:starts AS float8[]), "
                "CAST(:nodes AS text[]), CAST(:arrays AS bigint[])) "
                "AS v(id, account, cpus, mem, state, gpus, lim, start_at, node, arr)"
            ),
            {
                "ids": [r.job_id for r, _ in held],
                "accounts": [r.account for r, _ in held],
                "cpus": [r.cpus for r, _ in held],
                "mem": [r.memory_bytes for r, _ in held],
                "states": [s for _, s in held],
                "gpus": [int(r.gpus) for r, _ in held],
                # 不限时的作业 time_limit 为空，预计结束即为空
                "lims": [None if r.expected_end is None else 86_400 for r, _ in held],
                "starts": [
                    NOW - 3600 if r.expected_end is None else r.expected_end - 86_400
                    for r, _ in held
                ],
                "nodes": [r.node_id for r, _ in held],
                "arrays": [r.array_job_id for r, _ in held],
            },
        )
        # 等待依赖的作业依赖一个运行中的作业（本轮判定仍为等待）
        target = world.running[0].job_id
        jobs = world.pending
        conn.execute(
            text(
                "INSERT INTO jobs (id, name, account, partition, script, environment, work_dir, "
                "stdout_path, stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, "
                "exclusive, state, submit_time, eligible_time, data_source, gpus, nodes, "
                "time_limit_seconds, array_job_id, array_max_running, dependency, dependency_ids, "
                "dependency_state) "
                "SELECT v.id, 'queued', v.account, v.part, 'true', '{}', '/tmp', '/dev/null', "
                "'/dev/null', 1, v.cpus, v.cpus, v.mem, false, 'PENDING', now(), now(), 'API', "
                "v.gpus, v.nodes, v.lim, v.arr, v.arr_max, "
                "CASE WHEN v.waiting THEN 'afterok:' || :target END, "
                "CASE WHEN v.waiting THEN ARRAY[CAST(:target AS bigint)] END, "
                "CASE WHEN v.waiting THEN 'WAITING' ELSE 'NONE' END "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:accounts AS text[]), "
                "CAST(:parts AS text[]), CAST(:cpus AS int[]), CAST(:mem AS bigint[]), "
                "CAST(:gpus AS int[]), CAST(:nodes AS int[]), CAST(:lims AS int[]), "
                "CAST(:arrays AS bigint[]), CAST(:arr_max AS int[]), CAST(:waiting AS bool[])) "
                "AS v(id, account, part, cpus, mem, gpus, nodes, lim, arr, arr_max, waiting)"
            ),
            {
                "target": target,
                "ids": [j.job_id for j in jobs],
                "accounts": [j.account for j in jobs],
                "parts": [j.partition for j in jobs],
                "cpus": [j.cpus for j in jobs],
                "mem": [j.memory_bytes for j in jobs],
                "gpus": [int(j.gpus) for j in jobs],
                "nodes": [j.nodes for j in jobs],
                "lims": [j.time_limit for j in jobs],
                "arrays": [j.array_job_id for j in jobs],
                "arr_max": [j.array_max_running for j in jobs],
                "waiting": [not j.runnable for j in jobs],
            },
        )
        conn.execute(text("ANALYZE jobs"))


def ready(world: World) -> list[ReadyNode]:
    return [ReadyNode(v, f"agent-{v.node_id}", f"host-{v.node_id}") for v in world.nodes]


_UNCLAIM = text(
    "UPDATE jobs SET state = 'PENDING', start_time = NULL, node_id = NULL, node_name = NULL, "
    "node_ids = NULL, node_names = NULL, token = NULL, agent_id = NULL, node_host = NULL, "
    "epoch = NULL WHERE id = ANY(:ids)"
)


class Ticking:
    """注入调度轮的时钟：每次读取前进 step 秒（1 s：每轮都是深轮、都判定依赖；0：首轮之后都是快速轮）。"""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def cycle_passes(
    engine: Engine, world: World, passes: int, deep: bool, split: bool = True
) -> dict[str, Any]:
    """计时 SchedulingCycle.run；每轮之后（不计时）把认领到的作业改回排队，各轮状态相同。
    split：另计每轮里纯策略（plan）的时间，SQL 与其余部分即两者之差。"""
    cycle = SchedulingCycle(engine, settings(), epoch=1, clock=Ticking(1.0 if deep else 0.0))
    nodes = ready(world)
    policy_times: list[float] = []
    real_plan = cycle_module.plan

    def measured_plan(snap: Snapshot) -> Plan:
        t0 = time.perf_counter()
        try:
            return real_plan(snap)
        finally:
            policy_times.append(time.perf_counter() - t0)

    samples: list[float] = []
    last: dict[str, int] = {}
    cycle_module.plan = measured_plan
    try:
        for k in range(passes + 1):  # 第一轮预热（写满等待原因），不计
            t0 = time.perf_counter()
            result = cycle.run(nodes)
            elapsed = time.perf_counter() - t0
            if result.claimed:
                with engine.begin() as conn:
                    conn.execute(_UNCLAIM, {"ids": [r["id"] for r in result.claimed]})
            if k:
                samples.append(elapsed)
            else:
                policy_times.clear()
            last = {"read": result.read, "placed": result.placed, "claimed": len(result.claimed)}
    finally:
        cycle_module.plan = real_plan
    out: dict[str, Any] = {**last, **figures(samples)}
    if split and policy_times:
        out["policy_p50_ms"] = round(statistics.median(policy_times) * 1000, 2)
        out["sql_and_rest_p50_ms"] = round(out["p50_ms"] - out["policy_p50_ms"], 2)
    return out


def measure_cycle(engine: Engine, world: World, passes: int) -> dict[str, Any]:
    out = {
        "deep": cycle_passes(engine, world, passes, deep=True),
        "quick": cycle_passes(engine, world, passes, deep=False),
    }
    # 集群占满：把已结束的 1% 暂时算作仍占用（不读队首，只读运行中作业）
    ids = [r.job_id for r in world.finished]
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET released_at = NULL WHERE id = ANY(:ids)"), {"ids": ids})
    out["full"] = cycle_passes(engine, world, passes, deep=True, split=False)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET released_at = now() WHERE id = ANY(:ids)"), {"ids": ids})
    return out


# ---------------------------------------------------------------- 4 恢复


def measure_recovery(engine: Engine, world: World, passes: int) -> dict[str, Any]:
    """调度器重启后：读占用资源的作业 → 与代理手中的比对 → 写回 → 第一轮调度。"""
    held = load_held_jobs(engine)
    out: dict[str, Any] = {"held": len(held)}
    out["load_held_jobs"] = timed(lambda: load_held_jobs(engine), passes)
    alive = {v.node_id for v in world.nodes}

    def views(lost: set[int]) -> dict[str, AgentView | None]:
        by_node: dict[str, set[int]] = {v.node_id: set() for v in world.nodes}
        for job in held:
            if job.job_id not in lost:
                by_node[job.node_id].add(job.job_id)
        return {n: AgentView(f"agent-{n}", frozenset(ids)) for n, ids in by_node.items()}

    intact = views(set())
    out["decide"] = timed(lambda: decide(held, alive, intact, startup=True), passes)
    unchanged = decide(held, alive, intact, startup=True)
    out["decide_unchanged"] = {"reattach": len(unchanged.reattach)}
    # 无变化：Reconciler.run 只在 changes_anything 时调 apply；这里照样调一次，量空事务的代价
    out["apply_unchanged"] = timed(lambda: apply(engine, unchanged), passes)
    # 约 1% 的作业代理不再持有（启动对账：从未交到代理手里 → 重新排队）
    rng = random.Random(5)
    lost = set(rng.sample([j.job_id for j in held], len(held) // 100))
    lossy = views(lost)
    plan_lost = decide(held, alive, lossy, startup=True)
    out["decide_lost_1pct"] = {"requeue": len(plan_lost.requeue)}
    t0 = time.perf_counter()
    freed = apply(engine, plan_lost)
    out["apply_lost_1pct_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    out["freed"] = len(freed)
    # 重新排队的作业之后第一轮调度（新调度器：等待原因缓存为空）
    cycle = SchedulingCycle(engine, settings(), epoch=2, clock=Ticking(1.0))
    t0 = time.perf_counter()
    result = cycle.run(ready(world))
    out["first_pass_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    out["first_pass"] = {"read": result.read, "placed": result.placed}
    parts = (
        out["load_held_jobs"]["p50_ms"]
        + out["decide"]["p50_ms"]
        + out["apply_lost_1pct_ms"]
        + out["first_pass_ms"]
    )
    out["total_ms"] = round(parts, 1)
    # 还原：重新排队的作业回到运行中（后续测量用同一份数据）
    with engine.begin() as conn:
        if result.claimed:
            conn.execute(_UNCLAIM, {"ids": [r["id"] for r in result.claimed]})
        back = [j for j in held if j.job_id in lost]
        _restore_running(conn, back)
    return out


def _restore_running(conn: Any, jobs: Sequence[HeldJob]) -> None:
    conn.execute(
        text(
            "UPDATE jobs SET state = 'RUNNING', node_id = v.node, node_name = v.node, "
            "node_ids = jsonb_build_array(v.node), node_names = jsonb_build_array(v.node), "
            "agent_id = v.agent, token = v.token, node_host = 'host-' || v.node, epoch = 1, "
            "released_at = NULL, end_time = NULL, start_time = COALESCE(start_time, now()), "
            "restart_count = 0 "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:nodes AS text[]), "
            "CAST(:agents AS text[]), CAST(:tokens AS text[])) AS v(id, node, agent, token) "
            "WHERE jobs.id = v.id"
        ),
        {
            "ids": [j.job_id for j in jobs],
            "nodes": [j.node_id for j in jobs],
            "agents": [j.agent_id for j in jobs],
            "tokens": [j.token for j in jobs],
        },
    )


# ---------------------------------------------------------------- 主程序


class Database:
    """临时的内嵌 PostgreSQL（同 bench.queue_sql）；每个 (节点数, 排队数) 换一份数据。"""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="conductor-scale-sim-"))
        self.server = EmbeddedPostgres(self.root)
        upgrade(self.server.url)
        self.engine = make_engine(self.server.url)

    def load(self, world: World) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE jobs CASCADE"))
        insert_rows(self.engine, world)

    def close(self) -> None:
        self.engine.dispose()
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="小规模冒烟")
    args = parser.parse_args()
    passes = 3 if args.quick else 10
    nodes_sweep = (10, 100, 1000)
    pending_sweep = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    top_pending = pending_sweep[-1]
    report: dict[str, Any] = {"quick": args.quick, "passes": passes}

    started = time.perf_counter()
    world = World(1000, top_pending)
    report["world"] = {
        "nodes": len(world.nodes),
        "running": len(world.running),
        "finished": len(world.finished),
        "pending": len(world.pending),
        "rss_mib_after_build": round(rss_mib(), 1),
    }
    print(
        f"合成集群：{len(world.nodes)} 节点 × {NODE_CPUS} CPU × {NODE_GPUS} GPU，"
        f"{len(world.running)} 个运行中（另 {len(world.finished)} 个刚结束），"
        f"{len(world.pending)} 个排队（构造 {time.perf_counter() - started:.1f} s）"
    )

    print("\n1. 纯策略 plan()：")
    policy = measure_policy(world, passes, whole_queue=not args.quick)
    report["policy"] = policy
    for key, name in (("window_deep", "深轮窗口"), ("window_quick", "快速轮窗口")):
        f = policy[key]
        print(
            f"  {name}：读 {f['read']} 个、放置 {f['placed']}、预留 {f['reservations']}；"
            f"p50 {f['p50_ms']} ms、p99 {f['p99_ms']} ms（{f['passes']} 轮）"
        )
    print(
        f"  深轮窗口的快照 + 一轮 plan：tracemalloc 峰值 {policy['window_deep']['traced_peak_mib']} MiB"
    )
    if "whole_queue" in policy:
        f = policy["whole_queue"]
        print(
            f"  整个队列（最坏情形）：{f['read']} 个、放置 {f['placed']}；"
            f"{f['p50_ms']} ms（1 轮），进程 RSS 峰值增加 {f['rss_peak_growth_mib']} MiB"
        )
    window = world.window(QUEUE_SLACK)
    report["policy"]["hotspots_window_deep"] = hotspots(lambda: policy_pass(world, window))
    print("  深轮窗口的热点（cProfile，自身耗时）：")
    for line in report["policy"]["hotspots_window_deep"]:
        print(f"    {line}")
    report["rss_mib_peak_policy"] = round(rss_mib(), 1)
    print(f"  进程 RSS 峰值 {report['rss_mib_peak_policy']} MiB")

    db = Database()
    try:
        print("\n2. 整轮 SchedulingCycle.run（内嵌 PostgreSQL）：")
        t0 = time.perf_counter()
        db.load(world)
        print(
            f"  写入 {len(world.running) + len(world.finished) + len(world.pending)} 行："
            f"{time.perf_counter() - t0:.1f} s"
        )
        cycle = measure_cycle(db.engine, world, passes)
        report["cycle"] = cycle
        for key, name in (("deep", "深轮"), ("quick", "快速轮"), ("full", "集群占满")):
            f = cycle[key]
            split = (
                f"；其中策略 {f['policy_p50_ms']} ms，SQL 等 {f['sql_and_rest_p50_ms']} ms"
                if "policy_p50_ms" in f
                else ""
            )
            print(
                f"  {name}：读 {f['read']}、放置 {f['placed']}、认领 {f['claimed']}；"
                f"p50 {f['p50_ms']} ms、p99 {f['p99_ms']} ms{split}"
            )

        print("\n4. 恢复（10,000 个运行中作业，不启动 Ray）：")
        recovery = measure_recovery(db.engine, world, passes)
        report["recovery"] = recovery
        print(
            f"  load_held_jobs {recovery['load_held_jobs']['p50_ms']} ms；"
            f"decide {recovery['decide']['p50_ms']} ms；"
            f"apply（无变化）{recovery['apply_unchanged']['p50_ms']} ms；"
            f"apply（丢失 1%，重新排队 {recovery['decide_lost_1pct']['requeue']} 个）"
            f"{recovery['apply_lost_1pct_ms']} ms；"
            f"第一轮调度 {recovery['first_pass_ms']} ms（放置 {recovery['first_pass']['placed']}）"
        )
        print(f"  合计 {recovery['total_ms']} ms（目标 ≤ 2,000 ms）")

        print("\n3. 扫描（每个格子 p50，ms）：")
        sweep = []
        for n_nodes, n_pending in itertools.product(nodes_sweep, pending_sweep):
            small = World(n_nodes, n_pending)
            deep = small.window(QUEUE_SLACK)
            cell: dict[str, Any] = {"nodes": n_nodes, "pending": n_pending, "window": len(deep)}
            cell["policy"] = timed(lambda s=small, d=deep: policy_pass(s, d), passes)["p50_ms"]  # type: ignore[misc]
            db.load(small)
            cell["cycle"] = cycle_passes(db.engine, small, max(3, passes // 3), deep=True)["p50_ms"]
            sweep.append(cell)
            print(
                f"  {n_nodes:5d} 节点 {n_pending:7d} 排队：窗口 {cell['window']:5d}，"
                f"策略 {cell['policy']:8.2f}，整轮 {cell['cycle']:8.2f}"
            )
        report["sweep"] = sweep
    finally:
        db.close()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, ensure_ascii=False, indent=2))
    print(f"\n结果：{RESULTS}")
    # 冒烟的图不覆盖文档里完整规模的那张
    target = RESULTS.with_name("scale_sim_quick.png") if args.quick else PLOT
    plot(report, target)
    print(f"图：{target}")


def plot(report: dict[str, Any], dst: Path) -> None:
    """扫描结果画成两幅：纯策略（窗口）与整轮，横轴排队数，每个节点数一条线。"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in (
        (axes[0], "policy", "policy.plan() on the cycle's window"),
        (axes[1], "cycle", "SchedulingCycle.run() (deep pass, PostgreSQL)"),
    ):
        for n_nodes in sorted({c["nodes"] for c in report["sweep"]}):
            cells = [c for c in report["sweep"] if c["nodes"] == n_nodes]
            ax.plot(
                [c["pending"] for c in cells],
                [c[key] for c in cells],
                marker="o",
                label=f"{n_nodes} nodes ({n_nodes * PER_NODE} running)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pending jobs")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("ms per pass (p50)")
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
