"""把 bench/run.py 的 JSON 结果画成 PNG（吞吐与延迟），供 docs/benchmarks.md 引用。

.venv/bin/python -m bench.plot bench/results/latest.json docs/benchmarks.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: Path, dst: Path) -> None:
    r = json.loads(src.read_text())
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))

    throughput = {
        "Ray tasks (ceiling)": r["ray_ceiling"]["per_second"],
        "Ray, 8 in flight (closed loop)": r["ray_closed_loop"]["per_second"],
        "E2E, batch submit": r["end_to_end_batch"]["per_second"],
        "E2E, 32 clients": r["end_to_end"]["per_second"],
        "Slurm 22.05 (DESIGN.md)": 9.5,
        "Ray Jobs (DESIGN.md)": 0.9,
    }
    colors = ["grey", "grey", "C0", "C0", "C3", "C3"]
    left.barh(list(throughput), list(throughput.values()), color=colors)
    left.set_xscale("log")
    left.set_xlabel("jobs/s, 2,000 trivial jobs, 8 logical CPUs (log scale)")
    left.set_title("Throughput")
    for y, v in enumerate(throughput.values()):
        left.text(v, y, f" {v:g}", va="center")

    lat = r["latency"]
    names = ["submit -> RUNNING", "exit -> recorded", "cancel -> tree gone"]
    p50 = [
        lat["submit_to_running_ms"]["p50"],
        lat["exit_to_recorded_ms"]["p50"],
        r["cancel"]["ms_p50"],
    ]
    p99 = [
        lat["submit_to_running_ms"]["p99"],
        lat["exit_to_recorded_ms"]["p99"],
        r["cancel"]["ms_max"],
    ]
    xs = range(len(names))
    right.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    right.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99 (cancel: max)")
    right.set_xticks(list(xs), names)
    right.set_ylabel("ms")
    right.set_title("Latency on an idle cluster")
    right.legend()
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
