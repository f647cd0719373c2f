"""`conductor serve` 的启动与停止时间：本地 Ray 停止时排空与不排空并排测。

    python -m bench.serve_lifecycle [--runs 3]

每轮各起一个 serve（内嵌 PostgreSQL + 本地 Ray，空 HOME），跑一个作业，量“启动到 /health 就绪”
与“SIGTERM 到进程退出”。两种设置交替运行：
- 默认：本地 Ray 头节点 RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0（我们先终止了全部作业，无需排空）；
- Ray 的默认 30 秒排空：常驻的调度器与代理 actor 的租约不归还，总是等满。
只打印数字，不做断言。
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness.serve import ServeProcess
from harness.waiting import wait_for

CASES = {
    "不排空（Conductor 默认）": {},
    "Ray 默认排空 30 秒": {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "30"},
}


def _one(env: dict[str, str]) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    start = time.perf_counter()
    serve = ServeProcess(tmp, tmp / "data", "--num-cpus", "1", env=env)
    try:
        serve.wait_healthy()
        ready = time.perf_counter() - start
        script = tmp / "one.sh"
        script.write_text("true\n")
        out = serve.cli("submit", str(script), "-D", str(tmp / "work"), "--json")
        job_id = json.loads(out.stdout)["job_id"]
        wait_for(lambda: serve.query(job_id).get("state") == "COMPLETED", 120)
        begin = time.perf_counter()
        serve.stop()
        return ready, time.perf_counter() - begin
    finally:
        serve.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for _ in range(args.runs):  # 交替运行：负载起伏均摊到两种设置
        for name, env in CASES.items():
            samples[name].append(_one(env))
    stops = {}
    for name, values in samples.items():
        ready = statistics.median(v[0] for v in values)
        stops[name] = statistics.median(v[1] for v in values)
        print(f"{name:<20} 启动到就绪 中位数 {ready:5.1f} s   停止 中位数 {stops[name]:5.1f} s")
    fast, slow = stops.values()
    print(f"停止时间之比（不排空 / 排空）：{fast / slow:.2f}")


if __name__ == "__main__":
    main()
