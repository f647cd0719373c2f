"""Conductor 基准测试：一条命令跑完全部项目，打印表格并写出 JSON。

    .venv/bin/python -m bench.run                # 完整规模（约 12 分钟；吞吐项目重复 3 轮取中位数）
    .venv/bin/python -m bench.run --quick        # 小规模冒烟（约 2 分钟）
    .venv/bin/python -m bench.run --only realistic insert_ceiling memory   # 现实路径（issue 20）

在同一次运行里、同一个 Ray 集群上（conductor serve 启动的本地集群，8 个逻辑 CPU）
并排测量：Conductor 端到端吞吐与“每个任务跑一个子进程”的裸 Ray 任务（天花板）。
只打印数字与比值，不做断言。
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from bench import realistic
from bench.session import CPUS, Session, job, pct
from harness.rows import insert_pending
from harness.waiting import pid_alive, wait_for

ROOT = Path(__file__).resolve().parent
# 轮流重复、取中位数的吞吐项目
THROUGHPUT = ("ray_ceiling", "ray_actor_owned", "ray_closed_loop", "end_to_end", "end_to_end_batch")


class Bench(Session):
    """各项测量；每个方法返回一组数字（不做断言）。"""

    def ray_ceiling(self, n: int) -> dict:
        @ray.remote(num_cpus=1)
        def run_true() -> int:
            return subprocess.run(["true"]).returncode

        ray.get([run_true.remote() for _ in range(CPUS * 2)])  # 预热 worker
        started = time.perf_counter()
        ray.get([run_true.remote() for _ in range(n)])
        elapsed = time.perf_counter() - started
        return {"tasks": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed, 1)}

    def ray_actor_owned(self, n: int, width: int | None = None) -> dict:
        """对照：由一个异步 actor 拥有、带节点亲和与内存需求的任务（Conductor 节点代理的做法）。

        width 为 None：一次提交全部（Ray 在 owner 里排队，租到的 worker 连续执行多个任务）；
        width = CPU 数：闭环，任何时刻只有 width 个任务，结束一个才提交下一个——这正是
        “资源空出后才决定下一个作业”的调度器能给 Ray 的负载，每个任务都要重新租一次 worker。"""

        @ray.remote(num_cpus=1)
        def run_true() -> int:
            return subprocess.run(["true"]).returncode

        @ray.remote(num_cpus=0)
        class Owner:
            async def run(self, count: int, width: int | None) -> float:
                node = ray.get_runtime_context().get_node_id()
                strategy = NodeAffinitySchedulingStrategy(node, soft=False)
                names = iter(range(count))

                def submit(i: int) -> ray.ObjectRef:
                    return run_true.options(
                        memory=10 << 20, scheduling_strategy=strategy, name=f"job-{i}"
                    ).remote()

                async def lane() -> None:
                    for i in names:
                        await submit(i)

                started = time.perf_counter()
                if width is None:
                    await asyncio.gather(*(submit(i) for i in names))
                else:
                    await asyncio.gather(*(lane() for _ in range(width)))
                return time.perf_counter() - started

        owner = Owner.remote()
        ray.get(owner.run.remote(CPUS * 2, width))  # 预热
        elapsed = ray.get(owner.run.remote(n, width))
        ray.kill(owner)
        return {"tasks": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed, 1)}

    def end_to_end(self, n: int, clients: int = 32, batch: int = 0) -> dict:
        """batch=0：clients 个并发客户端逐个提交；batch>0：经批量接口每次提交 batch 个。"""
        payloads = [job("true", self.wd) for _ in range(n)]
        started = time.time()
        if batch:
            chunks = [payloads[i : i + batch] for i in range(0, n, batch)]
            ids = [j for chunk in chunks for j in self.submit_batch(chunk)]
        else:
            with ThreadPoolExecutor(clients) as pool:
                ids = list(pool.map(self.submit, payloads))
        submitted = time.time()
        self.wait_terminal(ids)
        last_end = self.sql(
            "SELECT EXTRACT(EPOCH FROM MAX(end_time)) FROM jobs WHERE id BETWEEN :lo AND :hi",
            lo=min(ids),
            hi=max(ids),
        )[0][0]
        states = dict(
            self.sql(
                "SELECT state, COUNT(*) FROM jobs WHERE id BETWEEN :lo AND :hi GROUP BY state",
                lo=min(ids),
                hi=max(ids),
            )
        )
        elapsed = float(last_end) - started
        return {
            "jobs": n,
            "submission": f"batch of {batch}" if batch else f"{clients} clients",
            "submit_seconds": round(submitted - started, 2),
            "seconds": round(elapsed, 2),
            "per_second": round(n / elapsed, 1),
            "states": states,
        }

    def submission(self, per_client: int, client_counts: tuple[int, ...], batch: int) -> dict:
        blocker = self.block_cluster()
        results = {}
        try:
            for clients in client_counts:
                n = per_client * clients
                payloads = [job("true", self.wd, cpus_per_task=CPUS) for _ in range(n)]
                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    list(pool.map(self.submit, payloads))
                elapsed = time.perf_counter() - started
                results[f"clients_{clients}"] = round(n / elapsed, 1)
                self.drain_pending()
            payloads = [job("true", self.wd, cpus_per_task=CPUS) for _ in range(batch)]
            rounds = 5
            started = time.perf_counter()
            for _ in range(rounds):
                self.submit_batch(payloads)
            elapsed = time.perf_counter() - started
            results[f"batch_{batch}"] = round(rounds * batch / elapsed, 1)
            self.drain_pending()
        finally:
            self.cancel(blocker)
        return results

    def latency(self, n: int) -> dict:
        to_running, to_recorded = [], []
        for _ in range(n):
            job_id = self.submit(job('date +%s.%N > "$SLURM_JOB_ID.exit"', self.wd))
            wait_for(
                lambda j=job_id: self.sql("SELECT end_time FROM jobs WHERE id=:i", i=j)[0][0],
                30,
                0.005,
            )
            submit_t, start_t, end_t = self.sql(
                "SELECT EXTRACT(EPOCH FROM submit_time), EXTRACT(EPOCH FROM start_time), "
                "EXTRACT(EPOCH FROM end_time) FROM jobs WHERE id=:i",
                i=job_id,
            )[0]
            exited = float((Path(self.wd) / f"{job_id}.exit").read_text())
            to_running.append((float(start_t) - float(submit_t)) * 1000)
            to_recorded.append((float(end_t) - exited) * 1000)
            time.sleep(0.05)
        return {
            "jobs": n,
            "submit_to_running_ms": {
                "p50": round(pct(to_running, 50), 1),
                "p99": round(pct(to_running, 99), 1),
            },
            "exit_to_recorded_ms": {
                "p50": round(pct(to_recorded, 50), 1),
                "p99": round(pct(to_recorded, 99), 1),
            },
        }

    def queue_scale(self, sizes: tuple[int, ...]) -> dict:
        blocker = self.block_cluster()
        results = {}
        try:
            sched_pid = self.scheduler_status()["pid"]
            base_rss = psutil.Process(sched_pid).memory_info().rss
            template = self.sql("SELECT * FROM jobs WHERE id=:i", i=blocker)[0]._mapping
            for size in sizes:
                with self.db.begin() as conn:
                    insert_pending(conn, size, template["work_dir"])
                ids = [
                    r[0]
                    for r in self.sql(
                        "SELECT id FROM jobs WHERE state='PENDING' ORDER BY random() LIMIT 200"
                    )
                ]
                # 每次提交都唤醒一轮调度：测量此时的调度轮耗时
                for _ in range(20):
                    self.submit(job("true", self.wd))
                    time.sleep(0.05)
                time.sleep(1)
                passes = self.scheduler_status()["pass_ms_last"][-20:]
                latencies = []
                for job_id in ids:
                    t = time.perf_counter()
                    self.client().get(f"/jobs/query/{job_id}").raise_for_status()
                    latencies.append((time.perf_counter() - t) * 1000)
                rss = psutil.Process(sched_pid).memory_info().rss
                dispatching = self._dispatching_passes(blocker)
                self.drain_pending()
                blocker = self.block_cluster()
                results[f"pending_{size}"] = {
                    "pass_ms_full_cluster_p50": round(statistics.median(passes), 2),
                    "pass_ms_dispatching_p50": round(statistics.median(dispatching), 2),
                    "pass_ms_dispatching_max": round(max(dispatching), 2),
                    "query_ms_p50": round(pct(latencies, 50), 2),
                    "query_ms_p99": round(pct(latencies, 99), 2),
                    "scheduler_rss_mb": round(rss / 2**20, 1),
                    "scheduler_rss_growth_mb": round((rss - base_rss) / 2**20, 1),
                }
        finally:
            self.drain_pending()
            self.cancel(blocker)
        return results

    def _dispatching_passes(self, blocker: int) -> list[float]:
        """放开集群：调度轮从大队列的队首持续派发作业时的耗时。

        先放开 3 秒再量 2 秒：刚放开时 Ray 要为 8 个 CPU 重新启动被回收的空闲 worker 进程
        （每个约 0.5 秒 CPU），那段时间量到的是进程启动的争用，不是调度轮。"""
        self.cancel(blocker)
        time.sleep(3)
        before = self.scheduler_status()["passes"]
        time.sleep(2)
        status = self.scheduler_status()
        new = status["passes"] - before
        # 派发出去的作业（true）很快结束；剩余队列保持不动，下一轮测量继续用
        return status["pass_ms_last"][-max(1, min(new, len(status["pass_ms_last"]))) :]

    def cancel_latency(self, n: int) -> dict:
        times = []
        script = "sleep 300 & echo $! > $SLURM_JOB_ID.pids\nsetsid sleep 300 & echo $! >> $SLURM_JOB_ID.pids\nsleep 300\n"
        for _ in range(n):
            job_id = self.submit(job(script, self.wd))
            pids_file = Path(self.wd) / f"{job_id}.pids"
            wait_for(lambda f=pids_file: f.exists() and len(f.read_text().split()) == 2, 30, 0.01)
            pids = [int(p) for p in pids_file.read_text().split()]
            started = time.perf_counter()
            self.cancel(job_id)
            wait_for(lambda p=pids: not any(pid_alive(x) for x in p), 30, 0.002)
            times.append((time.perf_counter() - started) * 1000)
        return {"jobs": n, "ms_p50": round(pct(times, 50), 1), "ms_max": round(max(times), 1)}

    def recovery(self, pending: int) -> dict:
        """集群占满（CPUS 个运行中作业）且有排队作业时杀调度器：到重新派发所需时间。"""
        running = [self.submit(job("sleep 30", self.wd, time_limit="5")) for _ in range(CPUS)]
        wait_for(
            lambda: (
                self.sql(
                    "SELECT COUNT(*) FROM jobs WHERE state='RUNNING' AND id = ANY(:ids)",
                    ids=running,
                )[0][0]
                == CPUS
            ),
            60,
        )
        queued = self.submit_batch([job("true", self.wd) for _ in range(pending)])
        status = self.scheduler_status()
        killed = time.time()
        os.kill(status["pid"], 9)
        # 调度器不在时腾出一个 CPU：新调度器对账之后的第一轮就应派发排队作业
        self.cancel(running[0])
        wait_for(lambda: self._epoch() > status["epoch"], 60, 0.01)
        # 时刻都取自同一台机器的时钟：新进程的创建时刻、actor 构造时刻（status 的 uptime 反推）、
        # 构造后各启动阶段的耗时，以及第一个排队作业在数据库里的开始时刻
        after = self.scheduler_status()
        spawned = psutil.Process(after["pid"]).create_time()
        constructed = time.time() - after["uptime"]
        reconciled = constructed + after["startup_s"]["ready"]
        first_start = wait_for(
            lambda: self.sql(
                "SELECT MIN(EXTRACT(EPOCH FROM start_time)) FROM jobs WHERE id = ANY(:ids)",
                ids=queued,
            )[0][0],
            60,
            0.01,
        )
        for job_id in running[1:]:
            self.cancel(job_id)
        self.wait_terminal(queued)
        return {
            "running_jobs": CPUS,
            "pending_jobs": pending,
            "kill_to_reconciled_s": round(reconciled - killed, 2),
            "kill_to_dispatching_s": round(float(first_start) - killed, 2),
            "kill_to_new_process_s": round(spawned - killed, 2),
            "kill_to_actor_constructed_s": round(constructed - killed, 2),
            "startup_phases_s": after["startup_s"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="小规模冒烟运行")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "latest.json")
    parser.add_argument("--only", nargs="*", help="只运行这些项目")
    parser.add_argument("--repeat", type=int, default=3, help="吞吐项目重复的轮数（取中位数）")
    args = parser.parse_args()
    q = args.quick
    plan: dict[str, Callable[[Bench], dict]] = {
        "ray_ceiling": lambda b: b.ray_ceiling(300 if q else 2000),
        "ray_actor_owned": lambda b: b.ray_actor_owned(300 if q else 2000),
        "ray_closed_loop": lambda b: b.ray_actor_owned(300 if q else 2000, width=CPUS),
        "end_to_end": lambda b: b.end_to_end(300 if q else 2000),
        "end_to_end_batch": lambda b: b.end_to_end(300 if q else 2000, batch=100),
        "submission": lambda b: b.submission(50 if q else 200, (1, 8, 32), 500 if q else 1000),
        "latency": lambda b: b.latency(20 if q else 100),
        "cancel": lambda b: b.cancel_latency(5 if q else 20),
        "recovery": lambda b: b.recovery(200 if q else 1000),
        "queue_scale": lambda b: b.queue_scale((1000, 10_000) if q else (10_000, 100_000)),
        # 现实路径（issue 20）：每个请求新建连接 / 32 个保持连接的客户端，与最小 FastAPI 天花板并排
        "realistic": lambda b: realistic.realistic(b, 200 if q else 500),
        "insert_ceiling": lambda b: realistic.insert_ceiling(b, 200 if q else 500),
        "memory": realistic.memory,
    }
    selected = args.only or list(plan)
    # 吞吐项目轮流重复 --repeat 次（天花板、对照与端到端在同一轮里相邻），报告中位数；
    # 比值按轮计算再取中位数，不拿不同时刻的数字相除
    rounds = [name for name in selected if name in THROUGHPUT]
    once = [name for name in selected if name not in THROUGHPUT]
    runs: dict[str, list[dict]] = {name: [] for name in rounds}
    results: dict[str, object] = {
        "cpus": CPUS,
        "quick": q,
        "python": sys.version.split()[0],
        "repeat": args.repeat,
    }
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            for i in range(args.repeat if rounds else 0):
                for name in rounds:
                    print(f"== {name}（第 {i + 1}/{args.repeat} 轮）...", flush=True)
                    runs[name].append(plan[name](bench))
                    print(json.dumps(runs[name][-1], ensure_ascii=False), flush=True)
            for name in once:
                print(f"== {name} ...", flush=True)
                results[name] = plan[name](bench)
                print(json.dumps(results[name], ensure_ascii=False), flush=True)
        finally:
            bench.close()
    for name, values in runs.items():
        rates = [v["per_second"] for v in values]
        results[name] = {
            **values[0],
            "per_second": round(statistics.median(rates), 1),
            "runs": rates,
        }
    # 比值：端到端（逐个 / 批量提交）对天花板与对闭环对照
    for run in ("end_to_end", "end_to_end_batch"):
        for base in ("ray_ceiling", "ray_closed_loop"):
            if run in runs and base in runs:
                ratios = [
                    a["per_second"] / b["per_second"]
                    for a, b in zip(runs[run], runs[base], strict=True)
                ]
                results[f"{run}_vs_{base.removeprefix('ray_')}"] = round(
                    statistics.median(ratios), 3
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2))
    print(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    random.seed(0)
    main()
