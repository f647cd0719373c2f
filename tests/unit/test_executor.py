"""执行器 execute() 的真实进程测试：脚本退出后不留任何进程，也不留僵尸。

execute() 会让所在进程成为孤儿的收养者，所以每个用例在独立的 Python 子进程里运行它，
不改变 pytest 进程本身。
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.executor import read_failure
from cluster.spool import (
    RESULT_MAX_BYTES,
    leave_result,
    prepare_spool,
    read_result,
    result_file,
    spool_location,
    write_script,
)
from conductor.exec_result import ExecResult
from conductor.jobspec import JobSpec
from conductor.proctree import new_token
from harness.waiting import pid_alive, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]

# 在子进程里运行一个作业，打印结局与之后仍挂在该进程下的子进程（含僵尸）
RUNNER = """
import json, os, sys
from cluster.executor import execute
from conductor.jobspec import JobSpec
from conductor.proctree import new_token

wd = sys.argv[1]
spec = JobSpec(job_id=1, name="t", account="a", partition="p", script=sys.stdin.read(),
               environment={}, work_dir=wd, stdout_path=wd + "/out", stderr_path=wd + "/out",
               ntasks_per_node=1, cpus_per_task=1, cpus=1, memory_bytes=256 << 20,
               time_limit_seconds=30, node_name="n", token=new_token(), kill_wait=1.0)
result = execute(spec)
children = open(f"/proc/self/task/{os.getpid()}/children").read().split()
print(json.dumps({"code": result.returncode, "error": result.error, "children": children}))
"""


def _run(script: str, wd: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(wd)],
        input=script,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _pids(wd: Path, *names: str) -> list[int]:
    return [int((wd / n).read_text()) for n in names]


def test_plain_script_leaves_nothing(tmp_path: Path) -> None:
    result = _run("echo hi\nexit 3\n", tmp_path)
    assert result == {"code": 3, "error": None, "children": []}
    assert (tmp_path / "out").read_text() == "hi\n"


@pytest.mark.parametrize(
    "escape",
    [
        "sleep 300 & echo $! > a.pid",
        "setsid sleep 300 & echo $! > a.pid",
        # 两次 fork：中间进程立即退出，孙进程成为孤儿
        "bash -c 'sleep 300 & echo $! > a.pid' &\nwait",
        "setsid bash -c 'trap \"\" TERM HUP; sleep 300 & echo $! > a.pid; wait' &\n"
        "while [ ! -s a.pid ]; do sleep 0.01; done",
    ],
)
def test_background_processes_killed_and_reaped(tmp_path: Path, escape: str) -> None:
    result = _run(escape + "\nexit 0\n", tmp_path)
    assert result["code"] == 0
    # 残留进程被杀掉且被回收：执行器进程下连僵尸都不剩
    assert result["children"] == []
    for pid in _pids(tmp_path, "a.pid"):
        wait_for(lambda p=pid: not pid_alive(p), 5, what=f"残留进程 {pid} 已被清理")


def test_result_file_round_trip_and_refuses_garbage(tmp_path: Path) -> None:
    """结果文件：原子写下、原样读回；FIFO、过大、内容不对的文件读作 None（读它从不阻塞）。"""
    token = new_token()
    spec = JobSpec(job_id=7, name="t", account="a", partition="p", script="true",
                   environment={}, work_dir=str(tmp_path), stdout_path="/dev/null",
                   stderr_path="/dev/null", ntasks_per_node=1, cpus_per_task=1, cpus=1,
                   memory_bytes=1 << 20, time_limit_seconds=30, node_name="n", token=token,
                   kill_wait=1.0)  # fmt: skip
    result = ExecResult(returncode=3, timed_out=False, error=None)
    leave_result(spec, result)
    try:
        assert read_result(result_file(token)) == (7, token, 30, result)
    finally:
        result_file(token).unlink()
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "big.json").write_bytes(b" " * (RESULT_MAX_BYTES + 1))
    (tmp_path / "bad.json").write_text('{"job_id": "x", "token": 1}')
    (tmp_path / "list.json").write_text("[1, 2]")
    for name in ("fifo.json", "big.json", "bad.json", "list.json", "missing.json"):
        assert read_result(tmp_path / name) is None, name


def test_spool_sits_where_no_other_user_can_create_it() -> None:
    """临时目录的每一级上层目录都只有属主可写：别的本地用户没法抢先建好它，让作业全都起不来。"""
    spool = prepare_spool()
    assert spool.stat().st_uid == os.geteuid()
    assert spool.stat().st_mode & 0o777 == (0o711 if os.geteuid() == 0 else 0o700)
    for parent in spool.parents:
        mode = parent.stat().st_mode
        assert not mode & 0o022, f"{parent} 别人可写（{oct(mode & 0o777)}）"


def test_spool_location_per_user() -> None:
    assert spool_location(0, "/root", None) == Path("/run/conductor-spool")
    assert spool_location(1000, "/home/u", "/run/user/1000") == Path(
        "/run/user/1000/conductor-spool"
    )
    assert spool_location(1000, "/home/u", None) == Path("/home/u/.cache/conductor/spool")


@pytest.mark.skipif(os.geteuid() != 0, reason="把目录交给别的用户需要 root")
def test_spool_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o777)
    spool.chmod(0o777)
    assert prepare_spool(spool) == spool
    assert spool.stat().st_mode & 0o777 == 0o711  # 别人可写的权限被收回
    os.chown(spool, 65534, 65534)  # 别的用户（nobody）建好的目录
    with pytest.raises(OSError, match="不属于服务用户"):
        prepare_spool(spool)


def test_script_is_created_private_and_never_follows_a_planted_link(tmp_path: Path) -> None:
    """脚本新建即 0600（从不以 0644 存在）；路径上预先放好的符号链接被换掉，不被跟随写穿。"""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    script = tmp_path / "job.sh"
    script.symlink_to(victim)
    write_script(script, "echo hi\n")
    assert victim.read_text() == "keep\n"
    assert not script.is_symlink()
    assert script.read_text() == "echo hi\n"
    assert script.stat().st_mode & 0o777 == 0o600


def test_failure_pipe_read_is_bounded_in_time_and_bytes() -> None:
    """引导脚本的失败管道：写端一直不关时按时返回 None；写得再多也只读 limit 字节。"""
    rfd, wfd = os.pipe()
    holder = subprocess.Popen(["sleep", "300"], pass_fds=(wfd,))
    os.close(wfd)
    try:
        start = time.monotonic()
        assert read_failure(rfd, timeout=0.3) is None
        assert time.monotonic() - start < 5
    finally:
        holder.kill()
        holder.wait()
        os.close(rfd)
    rfd, wfd = os.pipe()
    writer = subprocess.Popen(
        ["bash", "-c", "printf 'bad\\000' ; head -c 1000000 /dev/zero"], stdout=wfd
    )
    os.close(wfd)
    try:
        text = read_failure(rfd, timeout=10, limit=4096)
        assert text is not None and text.startswith("bad") and len(text) <= 4096
    finally:
        os.close(rfd)  # 读端关了，写的一方收到 SIGPIPE 退出
        writer.wait()
    rfd, wfd = os.pipe()
    os.close(wfd)
    assert read_failure(rfd, timeout=1) == ""  # 什么都没写就 EOF：重定向成功
    os.close(rfd)
