"""在本节点上运行作业步的任务（本地进程，不依赖 Ray）。

每个任务一个独立会话（进程组）；stdin 为 /dev/null；stdout/stderr 写文件或经管道逐块交给 emit。
结束时（正常结束、取消或 --kill-on-bad-exit）向每个任务的进程组发 SIGKILL，清掉后台子进程，
与 Slurm 在作业步结束时清理 cgroup 内全部进程一致。信号经 proctree.JobGroup（pidfd）发出：
首领在我们回收之前不会被复用，回收要等到最后。
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conductor.proctree import JobGroup, spawn
from conductor.usage import Probe, TaskUsage, wait_rusage

# 所有任务都结束后，等后台进程被杀、管道读完的最长时间：逃出进程组的进程（setsid）可能一直占着管道
_DRAIN_TIMEOUT = 2.0
_POLL = 0.05
_CHUNK = 65536

Emit = Callable[[int, int, bytes], None]


@dataclass(frozen=True)
class LocalTask:
    """本节点上的一个任务。stdout_path/stderr_path 为 None 时经 emit 送回 srun。"""

    rank: int
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    stdout_path: str | None = None
    stderr_path: str | None = None
    # 输出文件追加而不截断（srun --open-mode=append，或作业的 SLURM_OPEN_MODE=a）
    append: bool = False
    # 以哪个 Unix 身份运行：(uid, gid, 附加组)；None 为本进程的身份
    identity: tuple[int, int, tuple[int, ...]] | None = None


class _Files:
    """按路径只打开一次的输出文件：首次打开时截断（追加模式不截断），之后所有任务共用一个 O_APPEND 的 fd，
    互不覆盖。"""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def open(self, path: str, cwd: str, append: bool = False) -> int:
        full = os.path.abspath(os.path.join(cwd, path))
        if full not in self._fds:
            truncate = 0 if append else os.O_TRUNC
            self._fds[full] = os.open(
                full,
                os.O_WRONLY | os.O_CREAT | truncate | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY,
                0o644,
            )
        return self._fds[full]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _resolve(task: LocalTask) -> str | None:
    """argv[0] → 可执行文件：含斜杠的相对于任务目录，否则按任务环境的 PATH 查找。"""
    cmd = task.argv[0]
    if "/" in cmd:
        return os.path.join(task.cwd, cmd)
    return shutil.which(cmd, path=task.env.get("PATH", os.defpath))


class _Running:
    def __init__(
        self, task: LocalTask, proc: subprocess.Popen[bytes], probe: Probe | None = None
    ) -> None:
        self.task = task
        self.proc = proc
        self.group = JobGroup(proc.pid)
        self.probe = probe
        self.result: tuple[int | None, int | None] | None = None

    def check_exit(self) -> bool:
        """首领是否已退出；退出时记下结局但不回收（回收前进程组号不会被复用）。"""
        if self.result is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            # 已被别处回收（不应发生）：退回 Popen 的记录
            rc = self.proc.poll()
            if rc is None:
                return False
            self.result = (rc, None) if rc >= 0 else (None, -rc)
            return True
        if info is None:
            return False
        if info.si_code == os.CLD_EXITED:
            self.result = (info.si_status, None)
        else:
            self.result = (None, info.si_status)
        return True


def _stderr_message(task: LocalTask, text: str, emit: Emit, files: _Files) -> None:
    data = text.encode()
    if task.stderr_path is None:
        emit(task.rank, 2, data)
    else:
        os.write(files.open(task.stderr_path, task.cwd, task.append), data)


def run_node_tasks(
    tasks: Sequence[LocalTask],
    emit: Emit,
    cancelled: threading.Event,
    kill_on_bad_exit: bool = False,
    grace: float = 1.0,
    usage: TaskUsage | None = None,
) -> dict[int, tuple[int | None, int | None]]:
    """运行本节点的任务直到全部结束，返回 rank →（退出码, 信号），二者恰有一个不为 None。

    输出随到随交给 emit(rank, 1|2, data)（不等进程结束）。cancelled 被置位时：向每个任务的进程组
    发 SIGTERM，等 grace 秒，再 SIGKILL。kill_on_bad_exit 时一个任务非零退出（或被信号杀死）
    同样终止其余任务。命令找不到时该任务的 stderr 上是 Slurm 的原文，退出码为 errno（ENOENT 即 2）。
    返回时本函数启动的进程（及留在其进程组里的子孙）都已结束。
    给出 usage 时测量每个启动了的任务（进程树的峰值内存与 CPU），写进 usage.results。"""
    results: dict[int, tuple[int | None, int | None]] = {}
    files = _Files()
    sel = selectors.DefaultSelector()
    running: list[_Running] = []
    try:
        for task in tasks:
            started = _start(task, emit, files, sel, usage)
            if isinstance(started, tuple):
                results[task.rank] = started
            else:
                running.append(started)
        files.close()  # 子进程已继承；我们自己的写入（启动失败的消息）也已完成
        _supervise(running, sel, emit, cancelled, kill_on_bad_exit, grace, results)
    finally:
        for r in running:
            r.group.signal(signal.SIGKILL)
        _drain(sel, emit, time.monotonic() + _DRAIN_TIMEOUT)
        for r in running:
            # wait4 而不是 wait：要它的 rusage（含它等待过的子孙的 CPU 时间）
            ru = wait_rusage(r.proc, _DRAIN_TIMEOUT)
            r.group.wait_members_gone(_DRAIN_TIMEOUT)
            r.group.close()
            if r.probe is not None and usage is not None:
                usage.results[r.task.rank] = r.probe.finish(ru)
            if r.result is None and r.proc.returncode is not None:
                rc = r.proc.returncode
                r.result = (rc, None) if rc >= 0 else (None, -rc)
            if r.result is not None:
                results[r.task.rank] = r.result
        sel.close()
        files.close()
    return results


def _start(
    task: LocalTask,
    emit: Emit,
    files: _Files,
    sel: selectors.BaseSelector,
    usage: TaskUsage | None = None,
) -> _Running | tuple[int | None, int | None]:
    exe = _resolve(task)
    if exe is None:
        # Slurm slurmstepd 的原文（src/slurmd/slurmstepd/task.c），退出码为 errno
        _stderr_message(
            task,
            f"slurmstepd: error: execve(): {task.argv[0]}: No such file or directory\n",
            emit,
            files,
        )
        return (2, None)
    stdout = (
        files.open(task.stdout_path, task.cwd, task.append) if task.stdout_path else subprocess.PIPE
    )
    stderr = (
        files.open(task.stderr_path, task.cwd, task.append) if task.stderr_path else subprocess.PIPE
    )
    who: dict[str, object] = {}
    if task.identity is not None:
        uid, gid, groups = task.identity
        who = {"user": uid, "group": gid, "extra_groups": list(groups)}
    probe = usage.probe(task.rank) if usage is not None else None
    if probe is not None:
        # exec 之前进入任务自己的 cgroup 叶子（有 cgroup 时）：它的子孙一出生就在里面
        who["preexec_fn"] = probe.preexec()
    try:
        proc = spawn(
            [exe, *task.argv[1:]],
            executable=exe,
            env=task.env,
            cwd=task.cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            **who,
        )
    except subprocess.SubprocessError as exc:
        # preexec_fn 失败：进不了作业的 cgroup（不让任务逃出内存上限运行）
        if probe is not None:
            probe.finish(None)
        _stderr_message(task, f"slurmstepd: error: 任务无法放进作业的 cgroup：{exc}\n", emit, files)
        return (1, None)
    except OSError as exc:
        if probe is not None:
            probe.finish(None)  # 关掉事先打开的 cgroup.procs
        errno = exc.errno or 1
        if not os.path.isdir(task.cwd):
            # mgr.c 的原文
            text = f"slurmstepd: error: couldn't chdir to `{task.cwd}': {os.strerror(errno)}\n"
        else:
            text = f"slurmstepd: error: execve(): {exe}: {os.strerror(errno)}\n"
        _stderr_message(task, text, emit, files)
        return (errno, None)
    if probe is not None:
        probe.started(proc.pid)
    run = _Running(task, proc, probe)
    for stream, pipe in ((1, proc.stdout), (2, proc.stderr)):
        if pipe is not None:
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ, (task.rank, stream))
    return run


def _pump(sel: selectors.BaseSelector, emit: Emit, timeout: float) -> None:
    """读一轮就绪的管道，把数据交给 emit；读到 EOF 的管道关掉。"""
    if not sel.get_map():
        time.sleep(timeout)
        return
    for key, _ in sel.select(timeout):
        rank, stream = key.data
        try:
            data = os.read(key.fd, _CHUNK)
        except BlockingIOError:
            continue
        if data:
            emit(rank, stream, data)
        else:
            sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]


def _drain(sel: selectors.BaseSelector, emit: Emit, deadline: float) -> None:
    while sel.get_map() and time.monotonic() < deadline:
        _pump(sel, emit, _POLL)
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]


def _supervise(
    running: list[_Running],
    sel: selectors.BaseSelector,
    emit: Emit,
    cancelled: threading.Event,
    kill_on_bad_exit: bool,
    grace: float,
    results: dict[int, tuple[int | None, int | None]],
) -> None:
    bad_exit = kill_on_bad_exit and any(code != 0 for code, _ in results.values())
    term_at: float | None = None  # 已发 SIGTERM 的时刻
    killed = False
    while True:
        _pump(sel, emit, _POLL)
        for r in running:
            if r.check_exit() and kill_on_bad_exit and r.result != (0, None):
                bad_exit = True
        if all(r.result is not None for r in running):
            return
        if (cancelled.is_set() or bad_exit) and term_at is None:
            term_at = time.monotonic()
            for r in running:
                if r.result is None:
                    r.group.signal(signal.SIGTERM)
        if term_at is not None and not killed and time.monotonic() - term_at >= grace:
            killed = True
            for r in running:
                r.group.signal(signal.SIGKILL)
