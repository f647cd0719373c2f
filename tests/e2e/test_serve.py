"""端到端：真实的 `conductor serve` 子进程（内嵌 PostgreSQL + 本地 Ray）与真实的 CLI。"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import psutil

from harness.serve import ServeProcess
from harness.waiting import pid_alive, wait_for


def _submit(serve: ServeProcess, script: Path, *args: str) -> str:
    out = serve.cli("submit", str(script), *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["job_id"]


def _state(serve: ServeProcess, job_id: str) -> str:
    """作业状态；API 进程正在重启（连接被拒）或数据库暂不可用（503）时返回空串，让等待继续。"""
    try:
        return str(serve.query(job_id).get("state", ""))
    except httpx.HTTPError:
        return ""


def test_serve_submit_query_and_clean_shutdown(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "2")
    try:
        serve.wait_healthy()
        assert (
            httpx.get(serve.url + "/health").json()["dashboard_url"].endswith(f":{serve.dashboard}")
        )
        pg_pid = int((serve.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        assert pid_alive(pg_pid)

        script = tmp_path / "hello.sh"
        script.write_text('#!/bin/bash\necho "hello from $SLURM_JOB_ID"\n')
        work = tmp_path / "work"
        job_id = _submit(serve, script, "-A", "e2e", "-D", str(work), "-o", "hello.out")
        wait_for(lambda: _state(serve, job_id) == "COMPLETED", 60, what="CLI 提交的作业完成")
        assert (work / "hello.out").read_text() == f"hello from {job_id}\n"
        queried = serve.cli("query", job_id, "--json")
        assert (
            queried.returncode == 0 and json.loads(queried.stdout)["detail"]["exit_code"] == "0:0"
        )
        info = serve.cli("info")  # sinfo 式概览里有 Ray 仪表盘地址
        assert info.returncode == 0 and f":{serve.dashboard}" in info.stdout, info.stderr

        # 一个运行中的作业（带脱离会话的孙进程）：服务停止时也必须被清理
        long = tmp_path / "long.sh"
        long.write_text("setsid sleep 300 & echo $! > gchild.pid\nsleep 300\n")
        _submit(serve, long, "-D", str(work))
        wait_for(lambda: (work / "gchild.pid").exists(), 30)
        gchild = int((work / "gchild.pid").read_text())
        serve.note_descendants()
        assert len(serve.seen) > 3  # Ray 的各个进程都在本服务之下

        assert serve.stop() == 0, serve.log_tail()
        wait_for(
            lambda: not serve.alive_seen(),
            15,
            what=lambda: f"服务停止后仍有进程：{serve.alive_seen()}",
        )
        for pid in (pg_pid, gchild):
            wait_for(lambda p=pid: not pid_alive(p), 15, what=f"服务停止后进程 {pid} 已退出")
    finally:
        serve.cleanup()


def test_restart_keeps_queue_and_settles_running_jobs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    work = tmp_path / "work"
    long = tmp_path / "long.sh"
    long.write_text("touch started; sleep 300\n")
    quick = tmp_path / "quick.sh"
    quick.write_text("echo queued-and-ran\n")
    first = ServeProcess(tmp_path, data, "--num-cpus", "1")
    try:
        first.wait_healthy()
        running = _submit(first, long, "-D", str(work))
        wait_for(lambda: (work / "started").exists(), 30)
        pending = _submit(first, quick, "-D", str(work), "-o", "quick.out")
        assert _state(first, pending) == "PENDING"
        assert first.stop() == 0, first.log_tail()
    finally:
        first.cleanup()

    second = ServeProcess(tmp_path, data, "--num-cpus", "1")
    try:
        second.wait_healthy()
        wait_for(
            lambda: _state(second, pending) == "COMPLETED",
            60,
            what=lambda: (
                f"重启后排队作业运行：{second.query(pending)}\n"
                f"之前运行的作业：{second.query(running)}\n服务日志：\n{second.log_tail()}"
            ),
        )
        assert (work / "quick.out").read_text() == "queued-and-ran\n"
        body = second.query(running)
        assert body["state"] == "NODE_FAIL"
        assert "服务关闭" in body["error_msg"]
        assert second.stop() == 0
    finally:
        second.cleanup()


def test_ray_head_dies_under_the_service(tmp_path: Path) -> None:
    work = tmp_path / "work"
    long = tmp_path / "long.sh"
    long.write_text("setsid sleep 300 & echo $! > gchild.pid\ntouch started; sleep 300\n")
    quick = tmp_path / "quick.sh"
    quick.write_text("echo on-the-new-cluster\n")
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "1")
    try:
        serve.wait_healthy()
        running = _submit(serve, long, "-D", str(work))
        wait_for(lambda: (work / "started").exists(), 30)
        gchild = int((work / "gchild.pid").read_text())
        pending = _submit(serve, quick, "-D", str(work), "-o", "quick.out")
        assert _state(serve, pending) == "PENDING"

        os.kill(serve.child_pid("ray start"), signal.SIGKILL)  # Ray 集群在服务之下崩溃

        wait_for(
            lambda: _state(serve, pending) == "COMPLETED", 180, interval=0.5, what=serve.log_tail
        )
        assert (work / "quick.out").read_text() == "on-the-new-cluster\n"
        body = serve.query(running)
        assert body["state"] in ("NODE_FAIL", "FAILED")
        assert body["error_msg"]
        wait_for(lambda: not pid_alive(gchild), 30, what="旧集群上作业的孙进程被清理")
        assert serve.stop() == 0
    finally:
        serve.cleanup()


def test_supervisor_killed_takes_its_children_with_it(tmp_path: Path) -> None:
    """监督进程被 SIGKILL：Ray 头节点与 API 进程随之退出，不作为孤儿占着端口。

    内嵌 PostgreSQL 例外：它是 pg_ctl 启动的守护进程，按设计留下、下次启动复用（由 cleanup 结束）；
    它刚启动时短暂地是监督进程的后代，可能被记录下来，所以这里不算它。
    """
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "1")

    def orphans() -> list[psutil.Process]:
        return [p for p in serve.alive_seen() if p.pid != serve.proc.pid and not _is_postgres(p)]

    try:
        serve.wait_healthy()
        assert orphans()
        serve.proc.kill()
        serve.proc.wait()
        wait_for(lambda: not orphans(), 60, what=lambda: f"仍在运行：{orphans()}")
    finally:
        serve.cleanup()


def _is_postgres(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "postgres"
    except psutil.NoSuchProcess:
        return False


def test_embedded_postgres_killed_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    """内嵌 PostgreSQL 被 SIGKILL：监督进程在同一数据目录上重启它；运行中作业的结局照实记下，
    之后提交的作业照常运行。原先没人重启它，调度器与代理永远在重试连接。"""
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "2")
    try:
        serve.wait_healthy()
        work = tmp_path / "work"
        waiting = tmp_path / "waiting.sh"
        waiting.write_text("touch started\nwhile [ ! -e go ]; do sleep 0.1; done\necho done\n")
        running = _submit(serve, waiting, "-D", str(work), "-o", "waiting.out")
        wait_for(lambda: (work / "started").exists(), 60, what="作业开始运行")

        pg_pid = int((serve.data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(pg_pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pg_pid), 15, what="postmaster 已退出")
        (work / "go").touch()  # 作业在数据库不在时结束：结局要等数据库回来再写

        wait_for(
            lambda: _state(serve, running) == "COMPLETED", 120, what="数据库重启后记下作业结局"
        )
        assert (work / "waiting.out").read_text() == "done\n"
        assert "内嵌 PostgreSQL 已重新启动" in serve.log_path.read_text()
        quick = tmp_path / "quick.sh"
        quick.write_text("echo after-restart\n")
        after = _submit(serve, quick, "-D", str(work), "-o", "after.out")
        wait_for(lambda: _state(serve, after) == "COMPLETED", 60, what="之后提交的作业运行")
        assert (work / "after.out").read_text() == "after-restart\n"
    finally:
        serve.cleanup()
