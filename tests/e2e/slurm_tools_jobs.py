"""test_slurm_tools 交给 submitit / dask 在作业里运行的函数。

单独成模块：两者都按引用 pickle 模块级函数，作业里只需导入这个轻量模块（不导入 pytest 与测试夹具）。
测试在项目根目录提交，作业的工作目录即项目根目录，`python -m …` 把它放在 sys.path 首位，所以导入得到。
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import submitit


def add(a: int, b: int) -> int:
    return a + b


def inc(x: int) -> int:
    return x + 1


def job_identity() -> dict[str, object]:
    """submitit 在作业里看到的自己：作业号、序号、任务数（来自 SLURM_* 环境变量）。"""
    env = submitit.JobEnvironment()
    return {
        "job_id": env.job_id,
        "global_rank": env.global_rank,
        "num_tasks": env.num_tasks,
        "executor": os.environ.get("SUBMITIT_EXECUTOR"),
        "mark": os.environ.get("SUBMIT_SIDE_MARK"),
    }


def square_with_index(x: int) -> tuple[int, str]:
    """数组任务：返回平方与自己的 SLURM_ARRAY_TASK_ID。"""
    return x * x, os.environ["SLURM_ARRAY_TASK_ID"]


def mark_and_sleep(marker: str, seconds: float) -> str:
    """写下标记（表示已在运行）后长睡，供取消。"""
    Path(marker).write_text(os.environ["SLURM_JOB_ID"])
    time.sleep(seconds)
    return "不该睡醒"


class ResumableCount(submitit.helpers.Checkpointable):
    """每次运行在 runs 文件里追加一行“作业号 重启次数”；第一次运行一直等到被 --signal
    打断（submitit 收到 USR2 后做检查点、scontrol requeue、退出），重新排队后的那次直接返回运行次数。"""

    def __call__(self, runs: str) -> int:
        path = Path(runs)
        with path.open("a") as f:
            f.write(f"{os.environ['SLURM_JOB_ID']} {os.environ.get('SLURM_RESTART_COUNT', '')}\n")
        count = len(path.read_text().splitlines())
        if count == 1:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # 等信号；睡眠可被信号处理函数打断
                time.sleep(0.5)
        return count
