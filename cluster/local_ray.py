"""内嵌模式下的本地 Ray 头节点：一个 `ray start --head --block` 子进程。

用子进程而不是在 API 进程里 ray.init()：API 进程崩溃或重启不会带走集群与作业；
停止时向这个子进程发 SIGTERM，它会停止自己启动的全部 Ray 进程（按句柄，不按名字）。
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from conductor.lifeline import die_with_parent
from conductor.settings import Settings
from conductor.startup import failure_cause

log = logging.getLogger("conductor.local_ray")

# `ray start --block` 在全部进程起来之后打印这一行
STARTED_MARKER = b"Ray runtime started."


class LocalRayHead:
    """本机上的单节点 Ray 集群（含仪表盘），仅监听 127.0.0.1。"""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.address = settings.local_ray_address()
        ray_cli = Path(sys.executable).with_name("ray")
        cmd = [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={settings.ray_port}",
            f"--num-cpus={settings.effective_num_cpus()}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={settings.dashboard_port}",
            "--disable-usage-stats",
        ]
        if (
            settings.num_gpus is not None
        ):  # 不给就让 Ray 自己探测（CUDA_VISIBLE_DEVICES、nvidia-smi）
            cmd.append(f"--num-gpus={settings.num_gpus}")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._offset = self._log.tell()  # 日志是追加的：只看本次启动写下的部分
        # Ray 2.60 收到 SIGTERM 先把节点标为排空，等全部租约归还、至多 30 秒（为 Ray Serve 设计）。
        # 我们停止之前已经终止并记录了全部作业，而调度器与代理是常驻 actor，租约永不归还：
        # 每次停止都白等满 30 秒。用户明确设了就照他的
        env = dict(os.environ)
        env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
        self.process = subprocess.Popen(
            cmd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # 自己的会话：终端里的 Ctrl-C 只送到监督进程，由它按序停止；
            # 监督进程若被 SIGKILL，它也随之收到 SIGTERM 而停止 Ray
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.info(
            "本地 Ray 头节点启动中：%s（pid %s，日志 %s）", self.address, self.process.pid, log_path
        )

    def _output(self) -> bytes:
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read()

    def wait_ready(self, timeout: float, stopping: threading.Event) -> str | None:
        """等头节点报告就绪：就绪返回 None；进程先退出或超时则返回原因（一行）。"""
        deadline = time.monotonic() + timeout
        while not stopping.is_set():
            if STARTED_MARKER in self._output():
                return None
            code = self.process.poll()
            if code is not None:
                cause = failure_cause(self._output().decode(errors="replace"))
                return f"ray start 退出（代码 {code}）：{cause or '没有输出'}"
            if time.monotonic() > deadline:
                return f"{timeout:.0f} 秒内没有就绪"
            stopping.wait(0.2)
        return "服务正在停止"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM：ray start --block 会停止它启动的全部进程；超时再 SIGKILL。"""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("本地 Ray 未在 %s 秒内退出，强制结束", timeout)
                self.process.kill()
                self.process.wait()
        self._log.close()
        log.info("本地 Ray 已停止")
