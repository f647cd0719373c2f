"""把真实的 `conductor serve` 作为子进程运行、等待就绪、停止，并记录它的全部后代进程。"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from harness.waiting import wait_for

CONDUCTOR = str(Path(sys.executable).with_name("conductor"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONDUCTOR, *args, "--url", url], capture_output=True, text=True, timeout=60, env=env
    )


class ServeProcess:
    """一次 `conductor serve`；seen 记录见过的全部后代进程，供检查与兜底清理。"""

    def __init__(
        self,
        workdir: Path,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        ray_port: int | None = None,
    ):
        self.port, self.dashboard = port or free_port(), free_port()
        self.ray_port = ray_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = workdir / f"serve-{self.port}.log"
        # 每次都像在一台新机器上第一次启动：空的 HOME（没有 ~/.ray、~/.config）。
        # 自己启动本地 Ray 时连测试会话的 Ray 令牌设置也不带：令牌必须由 serve 自己准备
        self.home = workdir / f"home-{self.port}"
        self.home.mkdir()
        own_ray = "--ray-address" not in args
        dropped = (
            "CONDUCTOR_",
            "RAY_ADDRESS",
            "XDG_CONFIG_HOME",
            *(("RAY_AUTH",) if own_ray else ()),
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        base["HOME"] = str(self.home)
        base.update(
            CONDUCTOR_DASHBOARD_PORT=str(self.dashboard),
            CONDUCTOR_RAY_PORT=str(self.ray_port),
            CONDUCTOR_KILL_WAIT="2",
            CONDUCTOR_IDLE_RESYNC="0.5",
            # 测试以 root 运行：作业以服务的用户（root）运行须明确允许（生产默认不允许）
            CONDUCTOR_ALLOW_ROOT_JOBS="true",
        )
        base.update(env or {})
        self._log = self.log_path.open("w")
        cmd = [CONDUCTOR, "serve", "--port", str(self.port), "--data-dir", str(data_dir), *args]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=base, start_new_session=True
        )
        # 记 psutil.Process 而不是裸 PID：它带着进程创建时间，PID 被复用后不会误认、误杀
        self.seen: dict[int, psutil.Process] = {}

    @property
    def token_path(self) -> Path:
        """serve 第一次启动时为本机用户写入的管理员令牌（在它的 HOME 里，CLI 的默认位置）。"""
        return self.home / ".config" / "conductor" / "token"

    @property
    def headers(self) -> dict[str, str]:
        """带上 serve 写入的令牌（认证默认开启）。"""
        return {"Authorization": f"Bearer {self.token_path.read_text().strip()}"}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """以服务的用户在本机运行 conductor 命令（同一个 HOME）：不带任何令牌设置，
        靠 serve 写入的令牌文件认证——这正是“第一次启动之后本机 CLI 直接可用”。"""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONDUCTOR_", "XDG_CONFIG_HOME"))
        }
        env["HOME"] = str(self.home)
        return cli(self.url, *args, env=env)

    @property
    def ray_token_path(self) -> Path:
        """serve 为本地 Ray 生成的令牌（在它的 HOME 里，Ray 的默认位置）。"""
        return self.home / ".ray" / "auth_token"

    def log_tail(self) -> str:
        """日志的最后一段，不含 uvicorn 的访问日志（等待循环的轮询会把别的都挤出去）。"""
        lines = self.log_path.read_text().splitlines(keepends=True)
        return "".join(ln for ln in lines if not ln.startswith("INFO:     127.0.0.1:"))[-4000:]

    def note_descendants(self) -> set[int]:
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return set()
        for p in procs:
            self.seen.setdefault(p.pid, p)
        return {p.pid for p in procs[1:]}

    def exited(self) -> bool:
        """serve 是否已退出；还在运行时顺便记下它的后代，退出后可以逐个核对。"""
        self.note_descendants()
        return self.proc.poll() is not None

    def alive_seen(self) -> list[psutil.Process]:
        """见过的进程里仍然活着的（同一个进程，而不是复用了 PID 的别人）。"""
        alive = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue
        return alive

    def healthy(self) -> bool:
        self.note_descendants()
        assert self.proc.poll() is None, self.log_tail()
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout: float = 180) -> None:
        wait_for(
            self.healthy,
            timeout,
            interval=0.5,
            what=lambda: f"conductor serve 就绪\n{self.log_tail()}",
        )

    def child_pid(self, needle: str) -> int:
        for pid in self.note_descendants():
            try:
                if needle in " ".join(psutil.Process(pid).cmdline()):
                    return pid
            except psutil.NoSuchProcess:
                continue
        raise AssertionError(f"找不到子进程 {needle}")

    def query(self, job_id: str | int) -> dict:
        return httpx.get(f"{self.url}/jobs/query/{job_id}", headers=self.headers, timeout=30).json()

    def stop(self, timeout: float = 150) -> int:
        self.note_descendants()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def cleanup(self) -> None:
        """测试失败时兜底：按记录下的 PID 逐个结束，不留下任何进程。"""
        self.note_descendants()  # 先记下最新的后代（例如监督进程刚重启的 Ray 与 API）
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in self.alive_seen():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        pidfile = self.data_dir / "pg" / "postmaster.pid"
        if pidfile.exists():
            # 只结束确实是这个数据目录的 postmaster（PID 文件可能是崩溃后留下的旧文件）
            with contextlib.suppress(psutil.NoSuchProcess, ValueError):
                pg = psutil.Process(int(pidfile.read_text().split()[0]))
                if str(self.data_dir / "pg") in " ".join(pg.cmdline()):
                    pg.terminate()
        if not self._log.closed:
            self._log.close()
