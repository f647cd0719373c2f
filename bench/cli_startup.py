"""客户端命令的启动时间：`conductor queue --help` 与同一解释器的空启动、只导入 typer 并排测。

    python -m bench.cli_startup [--runs 20]

每项跑 runs 次（各自一个新进程），打印中位数与 p90，以及 queue --help 减去空启动的差。
客户端路径不导入 Ray 与服务端（tests/unit/test_client_imports.py 检查）；这里量它到底多快。
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONDUCTOR = str(Path(sys.executable).with_name("conductor"))
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    "conductor queue --help": [CONDUCTOR, "queue", "--help"],
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
    medians = {}
    # 交替运行各项：机器负载的起伏均摊到每一项上
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, argv in CASES.items():
            samples[name].append(_wall(argv))
    for name, values in samples.items():
        values.sort()
        medians[name] = statistics.median(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"{name:<28} 中位数 {medians[name] * 1000:6.0f} ms   p90 {p90 * 1000:6.0f} ms")
    extra = medians["conductor queue --help"] - medians["python -c pass"]
    print(f"queue --help 比空启动多 {extra * 1000:.0f} ms")


if __name__ == "__main__":
    main()
