"""端到端：真实的 `conductor serve` 子进程（内嵌 PostgreSQL + 本地 Ray）与真实的 CLI。"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.helpers import pid_alive, wait_for

CONDUCTOR = str(Path(sys.executable).with_name("conductor"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONDUCTOR, *args, "--url", url], capture_output=True, text=True, timeout=60
    )


def _service_processes(root: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(root).children(recursive=True)} | {root}
    except psutil.NoSuchProcess:
        return set()


def test_serve_submit_query_and_clean_shutdown(tmp_path: Path) -> None:
    port, dash, ray_port = free_port(), free_port(), free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "RAY_ADDRESS"))}
    env["CONDUCTOR_DASHBOARD_PORT"] = str(dash)
    env["CONDUCTOR_RAY_PORT"] = str(ray_port)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [CONDUCTOR, "serve", "--port", str(port), "--data-dir", str(data_dir), "--num-cpus", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    seen: set[int] = set()
    try:

        def healthy() -> bool:
            seen.update(_service_processes(proc.pid))
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(url + "/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 180, interval=0.5, what="conductor serve 就绪")
        health = httpx.get(url + "/health").json()
        assert health["dashboard_url"].endswith(f":{dash}")
        pg_pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        assert pid_alive(pg_pid)

        script = tmp_path / "hello.sh"
        script.write_text('#!/bin/bash\necho "hello from $SLURM_JOB_ID"\n')
        work = tmp_path / "work"
        out = cli(
            url, "submit", str(script), "-A", "e2e", "-D", str(work), "-o", "hello.out", "--json"
        )
        assert out.returncode == 0, out.stderr
        job_id = json.loads(out.stdout)["job_id"]

        def state() -> str:
            return httpx.get(f"{url}/jobs/query/{job_id}").json()["state"]

        wait_for(lambda: state() == "COMPLETED", 60, what="CLI 提交的作业完成")
        assert (work / "hello.out").read_text() == f"hello from {job_id}\n"
        queried = cli(url, "query", job_id, "--json")
        assert (
            queried.returncode == 0 and json.loads(queried.stdout)["detail"]["exit_code"] == "0:0"
        )

        # 一个运行中的作业（带脱离会话的孙进程）：服务停止时也必须被清理
        long = tmp_path / "long.sh"
        long.write_text("setsid sleep 300 & echo $! > gchild.pid\nsleep 300\n")
        out = cli(url, "submit", str(long), "-D", str(work), "--json")
        long_id = json.loads(out.stdout)["job_id"]
        wait_for(lambda: (work / "gchild.pid").exists(), 30)
        gchild = int((work / "gchild.pid").read_text())
        seen.update(_service_processes(proc.pid))
        assert len(seen) > 3  # Ray 的各个进程都在本服务之下

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        for pid in [*seen, pg_pid, gchild]:
            wait_for(lambda p=pid: not pid_alive(p), 15, what=f"服务停止后进程 {pid} 已退出")
        assert long_id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # 失败时按记录下的 PID 逐个清理，不留下任何进程
        for pid in seen:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        pidfile = data_dir / "pg" / "postmaster.pid"
        if pidfile.exists():
            pg = int(pidfile.read_text().split()[0])
            if pid_alive(pg):
                os.kill(pg, signal.SIGTERM)
        log.close()
