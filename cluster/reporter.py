"""结局上报器：节点代理把作业结局批量写入 PostgreSQL，写入之后代理才忘记作业。

写不进的结局留在手里退避重试（新结局并入同一批）；整批失败时逐个写，一个有毒的结局不拖住别的。
健康状况供调度器 status()、API 的 /health 与 conductor doctor 发现“结局写不进数据库”，
而不是看着作业一直 RUNNING。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cluster.agent_db import FIRST_DELAY, MAX_DELAY, AgentDb
from cluster.spool import result_file
from conductor.errors import ConductorError, DatabaseUnavailable
from conductor.store import transitions
from conductor.store.transitions import Outcome

log = logging.getLogger("conductor.agent")

# 整批写入失败后逐个写：连续这么多个都写不进，就是数据库本身的问题（只读、超时），
# 不是某个结局有毒，剩下的不必再逐个试，整批稍后重来
POISON_PROBE = 3


@dataclass
class ReporterHealth:
    """结局上报器的健康（见模块说明）。"""

    failures: int = 0  # 连续失败的次数；0 表示最近一次写入成功
    last_error: str | None = None
    # 错误的类名（不含消息）：/health 不需认证，只报告它，不泄露数据库地址等细节
    error_kind: str | None = None
    since: float | None = None  # 本轮连续失败开始的时刻（Unix 秒）
    last_ok: float | None = None
    restarts: int = 0  # 上报循环意外退出后被重新启动的次数

    def failed(self, exc: BaseException) -> None:
        if self.failures == 0:
            self.since = time.time()
        self.failures += 1
        self.last_error = describe_error(exc)
        self.error_kind = type(getattr(exc, "orig", None) or exc).__name__

    def succeeded(self) -> None:
        self.failures, self.since, self.last_ok = 0, None, time.time()


class Reporter:
    """把结局写入数据库的常驻循环（在代理的事件循环里运行，退出了就重新启动）。

    resync 是不论繁忙与否每 idle_resync 秒执行一次的兜底；recorded 在一批结局写入后被调用，
    代理据此忘记作业、叫醒调度器。"""

    def __init__(
        self,
        db: AgentDb,
        idle_resync: float,
        resync: Callable[[], Awaitable[None]],
        recorded: Callable[[list[Outcome]], None],
    ) -> None:
        self.db = db
        self.idle_resync = idle_resync
        self.resync = resync
        self.on_recorded = recorded
        # 尚未写入数据库的结局（每个作业至多一个）：写入成功才删除，失败的留着重试
        self.pending: dict[int, Outcome] = {}
        self.wakeup = asyncio.Event()
        self.health = ReporterHealth()
        self.task = self._start()

    def submit(self, outcome: Outcome) -> None:
        """交来一个结局：立刻叫醒上报循环。"""
        self.pending[outcome.job_id] = outcome
        self.wakeup.set()

    def summary(self) -> dict[str, Any]:
        """健康状况：ok 为假表示有结局写不进数据库，pending 个作业仍记为 RUNNING、占着 CPU。"""
        h = self.health
        alive = not self.task.done()
        return {
            "ok": alive and h.failures == 0,
            "alive": alive,
            "pending": len(self.pending),
            "failures": h.failures,
            "last_error": h.last_error,
            "error_kind": h.error_kind,
            "since": h.since,
            "last_ok": h.last_ok,
            "restarts": h.restarts,
        }

    def recorded(self, outcomes: list[Outcome]) -> None:
        """结局已写入：不再重试，删掉执行器留下的结果文件，交给代理忘记这些作业。"""
        for o in outcomes:
            if self.pending.get(o.job_id) is o:
                del self.pending[o.job_id]
            if o.token:
                try:
                    result_file(o.token).unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("作业 %s 的结果文件无法删除：%s", o.job_id, exc)
        if outcomes:
            self.on_recorded(outcomes)

    def _start(self) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._loop())
        task.add_done_callback(self._stopped)
        return task

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """监督：上报循环无论因何结束（被取消除外）都重新启动，并记入健康状况。"""
        if task.cancelled():
            return
        exc = task.exception() or RuntimeError("上报循环返回")
        log.error("结局上报循环意外退出（%s），重新启动", describe_error(exc))
        self.health.restarts += 1
        self.health.failed(exc)
        self.task = self._start()

    async def _loop(self) -> None:
        """批量写入结局。一批出任何错都不停下：结局留在 pending 里退避重试。"""
        loop = asyncio.get_running_loop()
        last_check = loop.time()
        retry_at = 0.0
        delay = FIRST_DELAY
        while True:
            now = loop.time()
            due = bool(self.pending) and now >= retry_at
            if not due:
                wait = self.idle_resync - (now - last_check)
                if self.pending:
                    wait = min(wait, retry_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), max(0.0, wait))
            self.wakeup.clear()
            try:
                if loop.time() - last_check >= self.idle_resync:
                    # 不论是否繁忙都定期执行：结局源源不断时也不能漏掉丢失的取消
                    await self.resync()
                    last_check = loop.time()
                if not self.pending or loop.time() < retry_at:
                    continue
                if await self._flush():
                    delay = FIRST_DELAY
                    continue
            except Exception as exc:  # noqa: BLE001 - 任何错误都不能让上报停下
                log.exception("上报结局时出错，稍后重试")
                self.health.failed(exc)
            retry_at = loop.time() + delay * (0.5 + random.random())
            delay = min(delay * 2, MAX_DELAY)

    async def _flush(self) -> bool:
        """写入手中全部结局，返回是否都已写入。整批失败时逐个写：一个写不进的结局不拖住别的。"""
        batch = list(self.pending.values())
        try:
            await self.db.run(transitions.finish, batch)
        except Exception as exc:  # noqa: BLE001 - 失败的批次留着重试，原因记入健康状况
            self.health.failed(exc)
            log.warning("%d 个作业结局写入失败，稍后重试：%s", len(batch), self.health.last_error)
            if len(batch) == 1 or isinstance(exc, DatabaseUnavailable):
                return False
        else:
            self.recorded(batch)
            self.health.succeeded()
            return True
        done: list[Outcome] = []
        misses = 0
        for outcome in batch:
            try:
                await self.db.run(transitions.finish, [outcome])
            except DatabaseUnavailable:
                break
            except Exception as exc:  # noqa: BLE001
                log.warning("作业 %s 的结局写入失败：%s", outcome.job_id, describe_error(exc))
                misses += 1
                if misses >= POISON_PROBE:
                    break
                continue
            done.append(outcome)
            misses = 0
        self.recorded(done)
        return False


def describe_error(exc: BaseException) -> str:
    """一行说明错误（健康状况与日志用）：驱动错误取底层异常，不带 SQL 与参数。"""
    if isinstance(exc, ConductorError) and exc.__cause__ is not None:
        return f"{exc.message}（{describe_error(exc.__cause__)}）"
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0] if lines else ''}"[:500]
