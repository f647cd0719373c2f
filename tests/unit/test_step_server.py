"""作业内步服务的真实进程测试（单节点分配，不需要 Ray）：作业脚本里的 srun 经步服务启动任务。

同 test_executor：execute() 会让所在进程成为孤儿的收养者，每个用例在独立的 Python 子进程里运行。
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.test_executor import REPO_ROOT

# 在子进程里带着步服务运行一个作业（2 个任务、2 个 CPU），打印结局、作业步记录与残留子进程
RUNNER = """
import json, os, signal, sys
# 同 Ray 的 worker：主线程屏蔽了 SIGINT（作业进程会继承信号屏蔽字）
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
from cluster.executor import execute
from cluster.spool import prepare_spool
from cluster.step_server import StepServer, install_shim
from conductor.jobspec import JobSpec
from conductor.proctree import new_token

wd = sys.argv[1]
spec = JobSpec(job_id=12, name="t", account="a", partition="p", script=sys.stdin.read(),
               environment={}, work_dir=wd, stdout_path=wd + "/out", stderr_path=wd + "/err",
               ntasks_per_node=2, cpus_per_task=1, cpus=2, memory_bytes=256 << 20,
               time_limit_seconds=60, node_name="n1", token=new_token(), kill_wait=1.0, ntasks=2)
records = []
steps = StepServer(spec, "node-a", [], install_shim(prepare_spool()),
                   record=lambda *args: records.append(list(args)))
result = execute(spec, "node-a", [], steps)
children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
print(json.dumps({"code": result.returncode, "error": result.error, "children": children,
                  "records": records}))
"""


def _run(script: str, wd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(wd)],
        input=script,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["out"] = (wd / "out").read_text()
    result["err"] = (wd / "err").read_text()
    return result


def test_srun_runs_every_task_with_slurm_variables_and_labels(tmp_path: Path) -> None:
    r = _run(
        "srun -l bash -c 'echo $SLURM_PROCID $SLURM_NTASKS $SLURM_STEP_ID $CONDUCTOR_NODE_ID'\n"
        "echo rc=$?\n",
        tmp_path,
    )
    assert r["code"] == 0, r
    lines = r["out"].splitlines()
    assert sorted(lines[:2]) == ["0: 0 2 0 node-a", "1: 1 2 0 node-a"]
    assert lines[2] == "rc=0"
    start, finish = r["records"]
    assert start == ["start", 0, "bash", 2, "n1"]
    assert finish[:4] == ["finish", 0, "COMPLETED", "0:0"]
    # 作业步的用量：两个任务的峰值（最大、平均）与 CPU 时间之和
    used = finish[4]
    assert set(used) == {"max_rss_bytes", "ave_rss_bytes", "user_cpu_seconds", "system_cpu_seconds"}
    assert used["max_rss_bytes"] > 0 and 0 < used["ave_rss_bytes"] <= used["max_rss_bytes"]
    assert used["user_cpu_seconds"] >= 0 and used["system_cpu_seconds"] >= 0
    assert r["children"] == []


def test_jobs_and_tasks_do_not_inherit_the_workers_blocked_signals(tmp_path: Path) -> None:
    """Ray 的 worker 屏蔽 SIGINT：以前脚本与任务继承了它，kill -INT / Ctrl-C 永远到不了 srun。"""
    r = _run("grep SigBlk /proc/self/status\nsrun -n 1 grep SigBlk /proc/self/status\n", tmp_path)
    assert r["out"].splitlines() == ["SigBlk:\t0000000000000000"] * 2, r


def test_srun_exits_with_the_highest_task_code_and_reports_it(tmp_path: Path) -> None:
    r = _run("srun bash -c 'exit $((SLURM_PROCID + 3))'\necho rc=$?\n", tmp_path)
    assert "rc=4" in r["out"]
    assert "srun: error: n1: task 0: Exited with exit code 3" in r["err"]
    assert "srun: error: n1: task 1: Exited with exit code 4" in r["err"]
    assert r["records"][-1][:4] == ["finish", 0, "FAILED", "4:0"]


def test_a_step_larger_than_the_allocation_fails_with_slurms_message(tmp_path: Path) -> None:
    r = _run("srun -n 3 true\necho rc=$?\n", tmp_path)
    assert "rc=1" in r["out"]
    assert (
        "srun: error: Unable to create step for job 12: More processors requested than permitted"
        in r["err"]
    )
    assert r["records"] == []


def test_output_patterns_write_one_file_per_task(tmp_path: Path) -> None:
    r = _run("srun -o 'o-%j-%s-%t.txt' bash -c 'echo rank $SLURM_PROCID'\n", tmp_path)
    assert r["code"] == 0, r
    assert (tmp_path / "o-12-0-0.txt").read_text() == "rank 0\n"
    assert (tmp_path / "o-12-0-1.txt").read_text() == "rank 1\n"
    assert r["out"] == ""


def test_srun_output_follows_the_jobs_open_mode(tmp_path: Path) -> None:
    """--open-mode=append 的作业（SLURM_OPEN_MODE=a）里 srun -o 追加，不截断脚本或上一次运行写的内容；
    srun 自己的 --open-mode 优先；都没有时截断（同 Slurm）。submitit 重新排队后靠它保留第一次的日志。"""
    for name in ("env.txt", "opt.txt", "plain.txt"):
        (tmp_path / name).write_text("old\n")
    r = _run(
        "SLURM_OPEN_MODE=a srun -n 1 -o env.txt echo new\n"
        "SLURM_OPEN_MODE=t srun -n 1 --open-mode=append -o opt.txt echo new\n"
        "srun -n 1 -o plain.txt echo new\n",
        tmp_path,
    )
    assert r["code"] == 0, r
    assert (tmp_path / "env.txt").read_text() == "old\nnew\n"
    assert (tmp_path / "opt.txt").read_text() == "old\nnew\n"
    assert (tmp_path / "plain.txt").read_text() == "new\n"


def test_a_step_waits_while_the_allocation_is_busy(tmp_path: Path) -> None:
    """两个各要 2 个 CPU 的作业步在 2 个 CPU 的分配里：后来的等前一个结束，不超用分配。"""
    r = _run(
        "srun -n 2 bash -c 'sleep 1; echo first' &\n"
        "sleep 0.5\n"
        "srun -n 2 bash -c 'echo second'\n"
        "wait\n",
        tmp_path,
    )
    assert r["code"] == 0, r
    assert r["out"].splitlines() == ["first", "first", "second", "second"]
    assert "srun: Job 12 step creation temporarily disabled, retrying" in r["err"]
    assert "srun: Step created for StepId=12.1" in r["err"]


def test_interrupting_srun_kills_its_tasks(tmp_path: Path) -> None:
    r = _run(
        "srun bash -c 'echo $$ > task-$SLURM_PROCID.pid; exec sleep 300' &\n"
        "pid=$!\n"
        "while [ ! -s task-0.pid ] || [ ! -s task-1.pid ]; do sleep 0.05; done\n"
        "kill -INT $pid\n"
        "wait $pid\n"
        "echo rc=$?\n",
        tmp_path,
    )
    assert r["code"] == 0, r
    assert "rc=" in r["out"] and "rc=0" not in r["out"]
    assert r["records"][-1][:3] == ["finish", 0, "CANCELLED"]
    for name in ("task-0.pid", "task-1.pid"):
        pid = int((tmp_path / name).read_text())
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert r["children"] == []


def test_a_step_over_the_jobs_memory_is_out_of_memory(tmp_path: Path) -> None:
    """作业步的任务超出作业的内存（这里 256 MB）：有 cgroup 时被内核 OOM 杀掉，作业步记为
    OUT_OF_MEMORY、退出码 0:125（同 sacct）；批处理脚本本身照常结束。"""
    import pytest

    from conductor import usage

    if usage.detect() is None:
        pytest.skip("需要 root 与可写的 memory cgroup")
    r = _run("srun -n1 python3 -c 'b = bytearray(400 << 20)'\necho rc=$?\n", tmp_path)
    assert r["code"] == 0, r
    assert r["records"][-1][:4] == ["finish", 0, "OUT_OF_MEMORY", "0:125"]
    assert "rc=0" not in r["out"]
