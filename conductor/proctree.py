"""按环境标记查找并终止作业进程树（仅限 Linux）。

作业脚本在独立会话中启动，但子孙进程可能 setsid 逃出进程组，
启动者也可能先于作业死亡；因此以所有子孙都会继承的环境变量
CONDUCTOR_JOB_TOKEN=<token> 为准，扫描 /proc 找回整棵树。

信号一律经 pidfd 发出：pid 在进程被回收后会复用，按数字发信号可能打中不相干的进程。
扫描到的进程先取 pidfd 再核对标记；进程组由首领的 pidfd 指定（JobGroup），首领被回收后
也只指向原来那组进程。
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import select
import signal
import subprocess
import threading
import time
from collections.abc import Generator
from typing import Any

TOKEN_VAR = "CONDUCTOR_JOB_TOKEN"
# 作业步任务的标记（步服务强制写入任务的环境，值为 作业号.步号）：scancel --signal 与 --signal
# 只发给带它的进程（作业步的任务及其子孙），不发给批处理 shell 与 srun
STEP_VAR = "CONDUCTOR_STEP_TASK"

_PROC = "/proc"
# SIGKILL 之后最多再等这么久：正常情况下内核很快回收，超时说明有 D 状态等异常。
_KILL_WAIT = 2.0
# 进程消失或无权访问都属正常竞争，静默跳过。
_SKIP_ERRORS = (FileNotFoundError, ProcessLookupError, PermissionError)

# 共享的终止计划：产出“需要等待的秒数”，结束时返回是否已清理干净。
_Plan = Generator[float, None, bool]


def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen，但子进程不继承本线程的信号屏蔽字（fork 的那一刻临时解除全部屏蔽）。

    Ray 的 worker 在主线程屏蔽 SIGINT，线程与子进程都继承它：不解除的话，作业脚本和作业步任务
    收不到 SIGINT（kill -INT、srun 的 Ctrl-C 永远挂起）。"""
    old = signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        return subprocess.Popen(*args, **kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def new_token() -> str:
    """生成不可猜测的作业标记，避免误杀其他作业。"""
    return secrets.token_hex(16)


def _marker(token: str) -> bytes:
    # 空标记会匹配所有带空值变量的进程，含 NUL 则永远无法匹配，都视为调用错误。
    if not token or "\0" in token:
        raise ValueError("作业标记不能为空且不能包含 NUL")
    return b"\0" + f"{TOKEN_VAR}={token}".encode() + b"\0"


# prctl(PR_SET_CHILD_SUBREAPER)：本进程的子孙成为孤儿时挂到本进程下，而不是 init
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """让本进程收养子孙中的孤儿（含 setsid、两次 fork 逃出的）。成功返回 True。

    收养之后，“本进程已没有子进程”就证明作业的进程全部结束，不必扫描整个 /proc。"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def live_children() -> list[int] | None:
    """本进程仍存活的子进程；顺手回收已成僵尸的（收养来的孤儿退出后由我们回收）。

    子进程挂在创建它的线程名下，收养来的孤儿挂在主线程（线程组首领）名下，只需读这两处。
    内核不提供 /proc/<pid>/task/<tid>/children 时返回 None（调用者改为按标记扫描）。"""
    children: list[int] = []
    try:
        for tid in {os.getpid(), threading.get_native_id()}:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                children += map(int, f.read().split())
    except OSError:
        return None
    alive = []
    for pid in children:
        try:
            zombie = _is_zombie(pid)
        except (*_SKIP_ERRORS, ValueError):
            continue
        if zombie:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        else:
            alive.append(pid)
    return alive


def _is_zombie(pid: int) -> bool:
    with open(f"{_PROC}/{pid}/stat", "rb") as f:
        data = f.read()
    # comm 字段可能含空格和括号，状态字段必须从最后一个 ')' 之后解析。
    rest = data[data.rindex(b")") + 1 :].split()
    return bool(rest) and rest[0] == b"Z"


def _group_has_live(pgid: int) -> bool:
    """进程组 pgid 里是否还有不是僵尸的进程（扫描 /proc）。"""
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{_PROC}/{entry.name}/stat", "rb") as f:
                data = f.read()
            rest = data[data.rindex(b")") + 1 :].split()
        except (*_SKIP_ERRORS, ValueError):
            continue
        # 字段：状态、父进程、进程组……
        if len(rest) > 2 and rest[2] == str(pgid).encode() and rest[0] != b"Z":
            return True
    return False


def _protected_pids() -> set[int]:
    # 调用者自身及其父进程可能也带同一标记（如作业内自杀），绝不能误杀。
    return {os.getpid(), os.getppid()}


def find_job_pids(token: str) -> list[int]:
    """返回环境中精确含有该作业标记的存活进程 pid（跳过僵尸与自身/父进程）。"""
    marker = _marker(token)
    protected = _protected_pids()
    found: list[int] = []
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in protected:
            continue
        try:
            if not _has_marker(pid, marker):
                continue
            # 僵尸已无法被信号影响，只待父进程回收，不算“残留”。
            if _is_zombie(pid):
                continue
        except (*_SKIP_ERRORS, ValueError):
            # ValueError：stat 内容异常（进程正在退出），同样跳过。
            continue
        found.append(pid)
    return found


def find_step_pids(token: str) -> list[int]:
    """作业步的任务（及其子孙）：带本作业标记、也带 STEP_VAR 的存活进程。"""
    step = b"\0" + STEP_VAR.encode() + b"="
    return [pid for pid in find_job_pids(token) if _has_marker_safe(pid, step)]


def _has_marker_safe(pid: int, marker: bytes) -> bool:
    try:
        return _has_marker(pid, marker)
    except (*_SKIP_ERRORS, ValueError):
        return False


def _start_ticks(pid: int) -> int:
    """进程的启动时刻（开机以来的时钟滴答，/proc/<pid>/stat 第 22 列）。"""
    with open(f"{_PROC}/{pid}/stat", "rb") as f:
        data = f.read()
    return int(data[data.rindex(b")") + 1 :].split()[19])


def batch_shell_pid(token: str) -> int | None:
    """本节点上作业的批处理 shell：带本作业标记、不是作业步任务的会话首领中最早启动的那个
    （执行器以新会话启动脚本；脚本之后 setsid 出来的进程都比它晚）。不在本节点时 None。"""
    step = b"\0" + STEP_VAR.encode() + b"="
    leaders = []
    for pid in find_job_pids(token):
        try:
            if os.getsid(pid) != pid or _has_marker(pid, step):
                continue
            leaders.append((_start_ticks(pid), pid))
        except (*_SKIP_ERRORS, ValueError, IndexError):
            continue
    return min(leaders)[1] if leaders else None


def _has_marker(pid: int, marker: bytes) -> bool:
    with open(f"{_PROC}/{pid}/environ", "rb") as f:
        data = f.read()
    # 前补 NUL 保证整条匹配；末尾缺 NUL（环境区被改写）时补上，避免漏掉最后一条。
    hay = b"\0" + data if data.endswith(b"\0") else b"\0" + data + b"\0"
    return marker in hay


def signal_listed(token: str, pids: list[int], sig: int) -> int:
    """向扫描得到的进程发信号，返回发送成功的个数。

    扫描与发信号之间进程可能退出、pid 被别的进程复用：先取 pidfd 钉住“此刻这个 pid 的进程”，
    再核对它仍带本作业的标记，最后经 pidfd 发信号，打不中别人。"""
    marker = _marker(token)
    sent = 0
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except _SKIP_ERRORS:
            continue
        try:
            if _has_marker(pid, marker):
                signal.pidfd_send_signal(fd, sig)
                sent += 1
        except _SKIP_ERRORS:
            continue
        finally:
            os.close(fd)
    return sent


# pidfd_send_signal 的标志：发给 pidfd 所指进程为首领的进程组（Linux 6.9 起）
_PIDFD_SIGNAL_PROCESS_GROUP = 1 << 2


class JobGroup:
    """作业的进程组，由首领的 pidfd 指定：首领被回收、pid 被复用之后，信号仍只到原来那组。

    首领必须是调用者的子进程，且在它被回收之前创建（Popen 之后立即创建）。"""

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self._fd = os.pidfd_open(leader)

    def wait_exit(self, timeout: float | None) -> bool:
        """等首领退出（不回收它），返回是否在 timeout 内退出。pidfd 让退出立即唤醒，不靠轮询。"""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if poller.poll(None if remaining is None else remaining * 1000):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def signal(self, sig: int) -> None:
        """向整组发信号；组里已没有进程时什么也不做。"""
        try:
            signal.pidfd_send_signal(self._fd, sig, None, _PIDFD_SIGNAL_PROCESS_GROUP)
        except _SKIP_ERRORS:
            pass
        except OSError:
            # 旧内核不认这个标志：首领尚未被回收时 pid 不会复用，killpg 才安全
            if self._leader_unreaped():
                with contextlib.suppress(*_SKIP_ERRORS):
                    os.killpg(self.leader, sig)

    def wait_members_gone(self, timeout: float) -> bool:
        """等组里除僵尸外的进程都消失（刚被 SIGKILL 的进程要过一小会儿才真正退出），最多 timeout 秒。"""
        deadline = time.monotonic() + timeout
        while _group_has_live(self.leader):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _leader_unreaped(self) -> bool:
        try:
            os.waitid(os.P_PIDFD, self._fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> JobGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def signal_job(token: str, sig: int, group: JobGroup | None = None) -> int:
    """向进程组（若给出）及所有带标记的进程发送信号，返回成功发送的进程数。"""
    if group is not None:
        group.signal(sig)
    return signal_listed(token, find_job_pids(token), sig)


def _wait_gone(token: str, timeout: float, poll: float, resend: int | None) -> _Plan:
    deadline = time.monotonic() + timeout
    while True:
        pids = find_job_pids(token)
        if not pids:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if resend is not None:
            # 补发给扫描与信号之间新 fork 出来的进程。
            signal_listed(token, pids, resend)
        yield min(poll, remaining)


def _kill_plan(token: str, grace: float, group: JobGroup | None, poll: float) -> _Plan:
    """同步与异步版本共用的终止流程：先 TERM 宽限，再 KILL 兜底。"""
    if grace < 0 or poll <= 0:
        raise ValueError("grace 不能为负，poll 必须为正")
    _marker(token)  # 先校验标记，避免在发出信号后才报错
    # 一次扫描就发现已无进程（作业正常结束的常见情形）时不再等待，省掉第二次扫描
    if grace > 0:
        if signal_job(token, signal.SIGTERM, group) == 0:
            return True
        if (yield from _wait_gone(token, grace, poll, None)):
            return True
    if signal_job(token, signal.SIGKILL, group) == 0:
        return True
    return (yield from _wait_gone(token, _KILL_WAIT, poll, signal.SIGKILL))


def _run_sync(plan: _Plan) -> bool:
    try:
        while True:
            time.sleep(next(plan))
    except StopIteration as stop:
        return stop.value


async def _run_async(plan: _Plan) -> bool:
    try:
        while True:
            await asyncio.sleep(next(plan))
    except StopIteration as stop:
        return stop.value


def kill_job_tree(
    token: str, grace: float, group: JobGroup | None = None, poll: float = 0.05
) -> bool:
    """终止整棵作业树；grace=0 直接 SIGKILL。全部消失返回 True。"""
    return _run_sync(_kill_plan(token, grace, group, poll))


async def kill_job_tree_async(
    token: str, grace: float, group: JobGroup | None = None, poll: float = 0.05
) -> bool:
    """kill_job_tree 的 asyncio 版本，等待期间不阻塞事件循环。"""
    return await _run_async(_kill_plan(token, grace, group, poll))


def signal_scope(token: str, sig: int, scope: str) -> int:
    """本节点上按范围给作业发信号，返回收到的进程数：steps 为作业步的任务（及其子孙），
    batch 为批处理 shell 本身，full 为作业的全部进程（同 scancel 的默认、-b 与 -f）。"""
    if scope == "steps":
        pids = find_step_pids(token)
    elif scope == "batch":
        pid = batch_shell_pid(token)
        pids = [] if pid is None else [pid]
    elif scope == "full":
        pids = find_job_pids(token)
    else:
        raise ValueError(f"未知的信号范围：{scope}")
    return signal_listed(token, pids, sig)
