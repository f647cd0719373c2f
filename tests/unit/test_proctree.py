"""proctree 的真实进程测试（不使用 mock）。"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conductor.proctree import (
    TOKEN_VAR,
    JobGroup,
    find_job_pids,
    kill_job_tree,
    kill_job_tree_async,
    new_token,
    signal_job,
    signal_listed,
)
from harness.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

# 覆盖各种逃逸方式：普通子进程、setsid 新会话、嵌套 bash、忽略 SIGTERM 的进程。
TREE_SCRIPT = """
sleep 300 &
setsid sleep 300 &
bash -c 'sleep 300 & wait' &
bash -c 'trap "" TERM; sleep 300' &
wait
"""


def _stat_fields(pid: int) -> list[bytes]:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rindex(b")") + 1 :].split()


def is_alive(pid: int) -> bool:
    """/proc 中存在且不是僵尸才算存活。"""
    try:
        return _stat_fields(pid)[0] != b"Z"
    except FileNotFoundError:
        return False


def cmd_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except FileNotFoundError:
        return ""


def session_id(pid: int) -> int:
    # stat 中 ')' 之后依次为 state ppid pgrp session。
    return int(_stat_fields(pid)[3])


def ignores_term(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def sleeps(pids: list[int]) -> list[int]:
    return [p for p in pids if os.path.basename(cmd_name(p)) == "sleep"]


@contextlib.contextmanager
def job(script: str, token: str | None = None) -> Iterator[tuple[subprocess.Popen, str, JobGroup]]:
    """启动带标记的作业；无论测试成败都按标记 SIGKILL 并回收。"""
    token = token or new_token()
    env = dict(os.environ, **{TOKEN_VAR: token})
    proc = subprocess.Popen(["bash", "-c", script], start_new_session=True, env=env)
    group = JobGroup(proc.pid)
    try:
        yield proc, token, group
    finally:
        signal_job(token, signal.SIGKILL, group)
        proc.wait(timeout=5)
        group.close()
        wait_for(lambda: not find_job_pids(token))


def tree_ready(proc: subprocess.Popen, token: str) -> Callable[[], bool]:
    """全部 4 个 sleep 都已 exec，说明所有 fork 已完成、进程数稳定。"""

    def ready() -> bool:
        pids = find_job_pids(token)
        s = sleeps(pids)
        return (
            proc.pid in pids
            and len(s) >= 4
            and any(session_id(p) != proc.pid for p in s)
            and any(ignores_term(p) for p in s)
        )

    return ready


def test_new_token_unique() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 32 for t in tokens)


def test_invalid_token_rejected() -> None:
    with pytest.raises(ValueError):
        find_job_pids("")
    with pytest.raises(ValueError):
        kill_job_tree("a\0b", grace=0)


def test_kill_whole_tree_including_setsid_and_term_ignoring() -> None:
    with job(TREE_SCRIPT) as (proc, token, group):
        wait_for(tree_ready(proc, token))
        before = find_job_pids(token)
        # 至少：外层 bash、4 个 sleep、嵌套 bash。
        assert len(before) >= 6

        grace = 0.5
        start = time.monotonic()
        assert kill_job_tree(token, grace=grace, group=group) is True
        elapsed = time.monotonic() - start

        assert [p for p in before if is_alive(p)] == []
        assert find_job_pids(token) == []
        # 忽略 TERM 的进程只能靠宽限期后的 SIGKILL 清掉。
        assert elapsed >= grace
        proc.wait(timeout=5)
        assert proc.returncode == -signal.SIGTERM


def test_other_token_untouched() -> None:
    with (
        job("sleep 300") as (victim, token, victim_group),
        job("sleep 300") as (other, other_token, _),
    ):
        wait_for(lambda: len(find_job_pids(token)) >= 1 and len(find_job_pids(other_token)) >= 1)
        other_pids = find_job_pids(other_token)

        assert kill_job_tree(token, grace=0.2, group=victim_group) is True
        victim.wait(timeout=5)

        assert other.poll() is None
        assert all(is_alive(p) for p in other_pids)
        assert find_job_pids(other_token) == other_pids


def test_marker_match_is_exact() -> None:
    token = new_token()
    # 更长的标记、其他变量值中包含标记文本，都不能被匹配。
    with (
        job("sleep 300", token=token + "d") as (longer, _, _),
        job("sleep 300", token="X" + token) as (prefixed, _, _),
    ):
        env = dict(os.environ, FOO=f"{TOKEN_VAR}={token}")
        env.pop(TOKEN_VAR, None)
        embedded = subprocess.Popen(["sleep", "300"], env=env)
        try:
            wait_for(lambda: is_alive(embedded.pid))
            assert find_job_pids(token) == []
            assert find_job_pids(token + "d") != []
            assert kill_job_tree(token, grace=0) is True
            assert longer.poll() is None
            assert prefixed.poll() is None
            assert embedded.poll() is None
        finally:
            embedded.kill()
            embedded.wait(timeout=5)


def test_async_variant() -> None:
    with job(TREE_SCRIPT) as (proc, token, group):
        wait_for(tree_ready(proc, token))
        before = find_job_pids(token)

        ok = asyncio.run(kill_job_tree_async(token, grace=0.2, group=group))

        assert ok is True
        assert [p for p in before if is_alive(p)] == []
        proc.wait(timeout=5)


def test_grace_zero_goes_straight_to_sigkill() -> None:
    with job("trap '' TERM; sleep 300 & wait") as (proc, token, group):
        wait_for(lambda: len(sleeps(find_job_pids(token))) == 1)
        start = time.monotonic()
        assert kill_job_tree(token, grace=0, group=group) is True
        assert time.monotonic() - start < 1.0
        proc.wait(timeout=5)
        assert proc.returncode == -signal.SIGKILL


def test_unreaped_zombie_is_not_remaining() -> None:
    with job("exit 0") as (proc, token, group):
        # 不回收子进程，让它停留在僵尸状态。
        wait_for(lambda: not is_alive(proc.pid))
        assert os.path.exists(f"/proc/{proc.pid}")
        assert find_job_pids(token) == []
        start = time.monotonic()
        assert kill_job_tree(token, grace=1.0, group=group) is True
        assert time.monotonic() - start < 0.5


def test_never_kills_caller() -> None:
    """调用者自身带同一标记时（作业内自清理），只杀其他进程。"""
    token = new_token()
    code = (
        "import subprocess, sys\n"
        "from conductor.proctree import kill_job_tree, find_job_pids\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "tok = sys.argv[1]\n"
        "import time\n"
        "while child.pid not in find_job_pids(tok): time.sleep(0.01)\n"
        "ok = kill_job_tree(tok, grace=0.2)\n"
        "child.wait(timeout=5)\n"
        "print(ok, child.returncode)\n"
    )
    env = dict(os.environ, **{TOKEN_VAR: token})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, token],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["True", str(-signal.SIGTERM)]
    finally:
        signal_job(token, signal.SIGKILL)


def _process_at_pid(target: int, args: list[str]) -> subprocess.Popen:
    """让新进程恰好拿到 target 这个 pid：写 ns_last_pid 再 fork，真实复现 pid 复用。"""
    last_pid = Path("/proc/sys/kernel/ns_last_pid")
    if os.geteuid() != 0:
        pytest.skip("写 ns_last_pid 需要 root")
    for _ in range(500):  # 别的进程可能抢先 fork 拿走这个 pid：重试
        last_pid.write_text(str(target - 1))
        proc = subprocess.Popen(args, start_new_session=True)
        if proc.pid == target:
            return proc
        proc.kill()
        proc.wait()
    pytest.fail(f"500 次都没能让新进程拿到 pid {target}")


def test_group_signal_after_reap_spares_the_process_that_reused_the_pid() -> None:
    token = new_token()
    leader = subprocess.Popen(
        ["true"], start_new_session=True, env=dict(os.environ, **{TOKEN_VAR: token})
    )
    with JobGroup(leader.pid) as group:
        leader.wait()  # 首领被回收：它的 pid（也是组号）空出来
        bystander = _process_at_pid(leader.pid, ["sleep", "300"])  # 新会话：组号也是它
        try:
            assert kill_job_tree(token, grace=0, group=group) is True
            assert is_alive(bystander.pid)
        finally:
            bystander.kill()
            bystander.wait()


def test_scanned_pid_reused_before_the_signal_is_spared() -> None:
    token = new_token()
    victim = subprocess.Popen(["sleep", "300"], env=dict(os.environ, **{TOKEN_VAR: token}))
    pids = wait_for(lambda: find_job_pids(token))
    victim.kill()
    victim.wait()  # 扫描之后、发信号之前，进程退出，pid 被别人复用
    bystander = _process_at_pid(victim.pid, ["sleep", "300"])
    try:
        assert signal_listed(token, pids, signal.SIGKILL) == 0
        assert is_alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()
