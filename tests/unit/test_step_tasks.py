"""本节点任务的运行：真实进程，检查流式输出、文件、退出码与信号、取消与清理。"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conductor.step_tasks import LocalTask, run_node_tasks

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _task(rank: int, script: str, cwd: Path, **kw: object) -> LocalTask:
    return LocalTask(rank=rank, argv=("bash", "-c", script), env=dict(ENV), cwd=str(cwd), **kw)  # type: ignore[arg-type]


class _Sink:
    def __init__(self) -> None:
        self.chunks: list[tuple[int, int, bytes, float]] = []
        self.lock = threading.Lock()

    def __call__(self, rank: int, stream: int, data: bytes) -> None:
        with self.lock:
            self.chunks.append((rank, stream, data, time.monotonic()))

    def text(self, rank: int, stream: int) -> str:
        return b"".join(d for r, s, d, _ in self.chunks if r == rank and s == stream).decode()


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "等待超时"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # 僵尸也算不在了
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_streams_per_rank_in_order_before_exit(tmp_path: Path) -> None:
    sink = _Sink()
    script = "for i in 1 2 3; do echo $i-$SLURM_PROCID; sleep 0.2; done; echo err >&2"
    tasks = [
        LocalTask(r, ("bash", "-c", script), {**ENV, "SLURM_PROCID": str(r)}, str(tmp_path))
        for r in range(2)
    ]
    started = time.monotonic()
    results = run_node_tasks(tasks, sink, threading.Event())
    finished = time.monotonic()
    assert results == {0: (0, None), 1: (0, None)}
    for r in range(2):
        assert sink.text(r, 1) == f"1-{r}\n2-{r}\n3-{r}\n"
        assert sink.text(r, 2) == "err\n"
    # 流式：第一块输出远早于进程结束
    first = min(t for r, s, d, t in sink.chunks if d.startswith(b"1-"))
    assert first - started < (finished - started) / 2


def test_output_files_shared_and_per_task(tmp_path: Path) -> None:
    shared = tmp_path / "all.out"
    shared.write_text("旧内容要被截断\n")
    tasks = [
        _task(
            r,
            f"for i in $(seq 50); do echo rank{r}-$i; done; echo e{r} >&2",
            tmp_path,
            stdout_path="all.out",
            stderr_path=f"err.{r}",
        )
        for r in range(4)
    ]
    sink = _Sink()
    assert run_node_tasks(tasks, sink, threading.Event()) == {r: (0, None) for r in range(4)}
    lines = shared.read_text().splitlines()
    assert sorted(lines) == sorted(f"rank{r}-{i}" for r in range(4) for i in range(1, 51))
    for r in range(4):
        assert (tmp_path / f"err.{r}").read_text() == f"e{r}\n"
    assert sink.chunks == []


def test_exit_codes_and_signals(tmp_path: Path) -> None:
    tasks = [
        _task(0, "exit 0", tmp_path),
        _task(1, "exit 3", tmp_path),
        _task(2, "kill -SEGV $$", tmp_path),
        _task(3, "kill -9 $$", tmp_path),
    ]
    results = run_node_tasks(tasks, _Sink(), threading.Event())
    assert results == {0: (0, None), 1: (3, None), 2: (None, 11), 3: (None, 9)}


def test_command_not_found(tmp_path: Path) -> None:
    sink = _Sink()
    task = LocalTask(0, ("no-such-cmd-xyz", "a"), dict(ENV), str(tmp_path))
    ok = _task(1, "echo fine", tmp_path)
    assert run_node_tasks([task, ok], sink, threading.Event()) == {0: (2, None), 1: (0, None)}
    assert (
        sink.text(0, 2)
        == "slurmstepd: error: execve(): no-such-cmd-xyz: No such file or directory\n"
    )
    assert sink.text(1, 1) == "fine\n"


def test_command_not_found_into_error_file(tmp_path: Path) -> None:
    task = LocalTask(0, ("no-such-cmd-xyz",), dict(ENV), str(tmp_path), stderr_path="e")
    assert run_node_tasks([task], _Sink(), threading.Event()) == {0: (2, None)}
    assert (tmp_path / "e").read_text() == (
        "slurmstepd: error: execve(): no-such-cmd-xyz: No such file or directory\n"
    )


def test_path_lookup_uses_the_task_env(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text('#!/bin/sh\necho from-mytool "$@"\n')
    tool.chmod(0o755)
    sink = _Sink()
    task = LocalTask(0, ("mytool", "x"), {"PATH": f"{bindir}:{ENV['PATH']}"}, str(tmp_path))
    assert run_node_tasks([task], sink, threading.Event()) == {0: (0, None)}
    assert sink.text(0, 1) == "from-mytool x\n"


def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    cancelled = threading.Event()
    pids = [tmp_path / f"pid.{r}" for r in range(2)]
    tasks = [
        _task(r, f"trap '' TERM; sleep 300 & echo $! > {pids[r]}; wait", tmp_path) for r in range(2)
    ]
    result: dict[int, tuple[int | None, int | None]] = {}
    runner = threading.Thread(
        target=lambda: result.update(run_node_tasks(tasks, _Sink(), cancelled, grace=0.3))
    )
    runner.start()
    _wait_for(lambda: all(p.exists() and p.read_text().strip() for p in pids))
    children = [int(p.read_text()) for p in pids]
    assert all(_alive(pid) for pid in children)
    cancelled.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    # bash 与后台 sleep 都忽略 SIGTERM：grace 之后整组被 SIGKILL
    assert result == {0: (None, 9), 1: (None, 9)}
    assert not any(_alive(pid) for pid in children)


def test_background_children_are_cleaned_up_after_normal_exit(tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    # 后台进程占着 stdout 管道：不清理的话永远读不到 EOF
    task = _task(0, f"sleep 300 & echo $! > {pid_file}; echo done", tmp_path)
    sink = _Sink()
    started = time.monotonic()
    assert run_node_tasks([task], sink, threading.Event()) == {0: (0, None)}
    assert time.monotonic() - started < 10
    assert sink.text(0, 1) == "done\n"
    assert not _alive(int(pid_file.read_text()))


def test_kill_on_bad_exit(tmp_path: Path) -> None:
    tasks = [_task(0, "sleep 0.2; exit 4", tmp_path), _task(1, "sleep 300", tmp_path)]
    started = time.monotonic()
    results = run_node_tasks(tasks, _Sink(), threading.Event(), kill_on_bad_exit=True, grace=0.5)
    assert time.monotonic() - started < 10
    assert results == {0: (4, None), 1: (None, 15)}


def test_without_kill_on_bad_exit_others_finish(tmp_path: Path) -> None:
    tasks = [_task(0, "exit 4", tmp_path), _task(1, "sleep 0.3; echo ok", tmp_path)]
    sink = _Sink()
    assert run_node_tasks(tasks, sink, threading.Event()) == {0: (4, None), 1: (0, None)}
    assert sink.text(1, 1) == "ok\n"


def test_stdin_is_dev_null_and_cwd_is_used(tmp_path: Path) -> None:
    sink = _Sink()
    task = _task(0, "cat; pwd", tmp_path)
    assert run_node_tasks([task], sink, threading.Event()) == {0: (0, None)}
    assert sink.text(0, 1) == f"{tmp_path}\n"


def test_cancel_sigterm_reaches_background_children(tmp_path: Path) -> None:
    cancelled = threading.Event()
    pid_file = tmp_path / "bg.pid"
    task = _task(0, f"sleep 300 & echo $! > {pid_file}; wait", tmp_path)
    result: dict[int, tuple[int | None, int | None]] = {}
    runner = threading.Thread(
        target=lambda: result.update(run_node_tasks([task], _Sink(), cancelled, grace=5))
    )
    runner.start()
    _wait_for(lambda: pid_file.exists() and bool(pid_file.read_text().strip()))
    cancelled.set()
    runner.join(timeout=10)
    assert result == {0: (None, 15)}
    assert not _alive(int(pid_file.read_text()))
