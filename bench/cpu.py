"""端到端运行期间各进程用了多少 CPU：找出每个作业的 CPU 花在哪里。

    python -m bench.cpu [--jobs 2000]

启动一个真实的 conductor serve，经批量接口提交 `true` 作业，运行前后读取各进程的 CPU 时间，
按进程类别汇总，打印每类占用的核数与每个作业的 CPU 毫秒数，以及全机空闲核数。
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import psutil

from bench.run import Bench
from bench.session import job

# 进程类别：按进程名或命令行里的标志归类
KINDS = (
    ("postgres", "postgres"),
    ("ray::Scheduler", "调度器"),
    ("ray::NodeAgent", "节点代理"),
    ("ray::run_job", "执行器"),
    ("ray::IDLE", "执行器"),
    ("raylet", "raylet"),
    ("gcs_server", "GCS"),
    ("api.process", "API"),
)


def _kind(proc: psutil.Process) -> str:
    name = proc.info["name"] or ""
    cmd = " ".join(proc.info["cmdline"] or [])
    for marker, kind in KINDS:
        if marker in name or marker in cmd:
            return kind
    return "其他"


def cpu_by_kind() -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            out[_kind(proc)] += times.user + times.system
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conductor-cpu-") as tmp:
        bench = Bench(Path(tmp))
        try:
            payloads = [job("true", bench.wd) for _ in range(args.jobs)]
            bench.wait_terminal(bench.submit_batch(payloads[:100]))  # 预热 worker
            before, idle0, t0 = cpu_by_kind(), psutil.cpu_times().idle, time.perf_counter()
            ids: list[int] = []
            for i in range(0, len(payloads), 100):
                ids += bench.submit_batch(payloads[i : i + 100])
            bench.wait_terminal(ids)
            elapsed = time.perf_counter() - t0
            after, idle1 = cpu_by_kind(), psutil.cpu_times().idle
        finally:
            bench.close()
    rate = len(ids) / elapsed
    print(
        f"{len(ids)} 个作业，{elapsed:.2f} 秒，{rate:.1f} 个/秒；全机空闲 {(idle1 - idle0) / elapsed:.2f} 核"
    )
    for kind, seconds in sorted(
        ((k, after[k] - before.get(k, 0)) for k in after), key=lambda x: -x[1]
    ):
        print(
            f"{kind:8s} {seconds / elapsed:5.2f} 核  每个作业 {seconds * 1000 / len(ids):5.2f} ms CPU"
        )


if __name__ == "__main__":
    main()
