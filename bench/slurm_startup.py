"""Slurm 替身命令的启动时间：sbatch、squeue、scancel、sacct、sinfo、scontrol 各自的 `--help`，
与同一解释器的空启动、只导入 httpx 并排测。

    python -m bench.slurm_startup [--runs 20]

每项跑 runs 次（各自一个新进程），打印中位数与 p90，以及每个命令比空启动多出的时间。
命令模块不导入 Ray、httpx、FastAPI、SQLAlchemy（tests/unit/test_slurm_commands_imports.py 检查）；
这里量它们到底多快（目标：远低于 0.3 秒）。只打印数字，不做断言。
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = ("sbatch", "squeue", "scancel", "sacct", "sinfo", "scontrol")
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import httpx'": [sys.executable, "-c", "import httpx"],
    **{f"{c} --help": [str(BIN / c), "--help"] for c in COMMANDS},
}


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for argv in CASES.values():
        _wall(argv)  # 预热页缓存与 .pyc
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    # 交替运行各项：机器负载的起伏均摊到每一项上
    for _ in range(args.runs):
        for name, argv in CASES.items():
            samples[name].append(_wall(argv))
    medians = {}
    for name, values in samples.items():
        values.sort()
        medians[name] = statistics.median(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"{name:<28} 中位数 {medians[name] * 1000:6.0f} ms   p90 {p90 * 1000:6.0f} ms")
    base = medians["python -c pass"]
    for c in COMMANDS:
        print(f"{c} --help 比空启动多 {(medians[f'{c} --help'] - base) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
