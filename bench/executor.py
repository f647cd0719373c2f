"""执行器本身的开销：同一个本地 Ray 上并排运行裸任务与 Conductor 的 run_job。

    python -m bench.executor [--tasks 2000]

不经过 API、数据库、调度器与节点代理：driver 直接提交 run_job（脚本为 `true`），
与“每个任务跑一个子进程 true”的裸 Ray 任务对比吞吐与 worker 进程的 CPU。
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import ray

from cluster.executor import run_job
from cluster.ray_auth import ensure_cluster_token
from cluster.spool import result_file
from conductor.jobspec import JobSpec
from conductor.proctree import new_token

CPUS = 8
REPO = Path(__file__).resolve().parents[1]


@ray.remote(num_cpus=1)
def run_true() -> int:
    return subprocess.run(["true"]).returncode


# run_job 在临时目录里留下结果文件（平时由节点代理删除）；这里没有代理，结束时自己删
TOKENS: list[str] = []


def _spec(job_id: int, wd: str) -> JobSpec:
    TOKENS.append(new_token())
    return JobSpec(
        job_id=job_id,
        name="bench",
        account="bench",
        partition="default",
        script="true\n",
        environment={},
        work_dir=wd,
        stdout_path="/dev/null",
        stderr_path="/dev/null",
        ntasks_per_node=1,
        cpus_per_task=1,
        cpus=1,
        memory_bytes=10 << 20,
        time_limit_seconds=10,
        node_name="bench",
        token=TOKENS[-1],
        kill_wait=1.0,
    )


def _worker_pids() -> list[int]:
    marks = ("ray::IDLE", "ray::run_", "ray::job-")
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(m in " ".join(p.info["cmdline"] or []) for m in marks)
    ]


def _cpu_seconds(pids: list[int]) -> float:
    """这些进程的 CPU 秒数（进程标题随任务变化，所以按 pid 而不是按名字）。"""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    wd = tempfile.mkdtemp(prefix="conductor-bench-executor-")
    ensure_cluster_token()  # 与 serve 相同：新集群开启令牌认证，令牌不存在时以 0600 生成
    ray.init(
        address="local",
        num_cpus=CPUS,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        variants = {
            "裸 Ray 任务（子进程 true）": lambda i: run_true.remote(),
            "run_job（bash 脚本 true）": lambda i: run_job.options(
                num_cpus=1, memory=10 << 20, name=f"job-{i}:bench"
            ).remote(_spec(i, wd)),
        }
        rates = []
        for name, submit in variants.items():
            ray.get([submit(i) for i in range(CPUS * 4)])  # 预热 worker
            pids = _worker_pids()
            cpu0, started = _cpu_seconds(pids), time.perf_counter()
            ray.get([submit(i) for i in range(args.tasks)])
            elapsed = time.perf_counter() - started
            per_task = (_cpu_seconds(pids) - cpu0) * 1000 / args.tasks
            rates.append(args.tasks / elapsed)
            print(f"{name:24s} {rates[-1]:7.1f} 个/秒  worker CPU {per_task:.2f} ms/任务")
        print(f"run_job / 裸任务：{rates[1] / rates[0]:.0%}")
    finally:
        ray.shutdown()
        for token in TOKENS:
            result_file(token).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
