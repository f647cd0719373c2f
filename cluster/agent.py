"""节点代理：每个节点一个常驻（detached）actor，拥有本节点上作业的 Ray 任务。

Ray 中任务随其所有者一起死亡；让代理而不是调度器持有任务，
调度器就可以随时崩溃重启而不影响正在运行的作业。
代理记住每个作业直到其终态写入 PostgreSQL，因此“代理存活却不认识某作业”
意味着该作业从未交到它手里（或已记录终态）——对账据此判断能否重新排队。
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import NodeDiedError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sqlalchemy import text

from cluster.executor import (
    cancel_marker,
    read_result,
    result_file,
    run_job,
    script_path,
    spool_dir,
    started_marker,
    touch_marker,
)
from cluster.names import SCHEDULER_NAME
from conductor.db import make_engine, session_scope
from conductor.errors import ConductorError, DatabaseUnavailable, TransactionConflict
from conductor.exec_result import ExecResult, classify, node_lost_message
from conductor.jobspec import JobSpec
from conductor.logtail import owner_uid, read_range, read_tail
from conductor.proctree import find_job_pids, kill_job_tree, kill_job_tree_async
from conductor.settings import Settings
from conductor.states import JobState
from conductor.store import orphans, transitions
from conductor.store.transitions import Outcome
from conductor.timefmt import format_limit

log = logging.getLogger("conductor.agent")
T = TypeVar("T")

# 结局写入失败后的退避：0.1 秒起倍增，最长 5 秒，带抖动（与 with_retry 相同）
REPORT_FIRST_DELAY = 0.1
REPORT_MAX_DELAY = 5.0
# 整批写入失败后逐个写：连续这么多个都写不进，就是数据库本身的问题（只读、超时），
# 不是某个结局有毒，剩下的不必再逐个试，整批稍后重来
POISON_PROBE = 3
# 新代理上任时清理多久以内结束的、随前任丢失的作业的残留进程（秒）
ORPHAN_WINDOW = 3600.0


@dataclass
class Run:
    """代理手中一个作业的执行。"""

    spec: JobSpec
    ref: ray.ObjectRef
    stopping: bool = False
    # 服务关闭时代理主动终止的作业以 NODE_FAIL 结束，并写明原因
    stop_reason: str | None = None
    # 派发时刻（事件循环时钟）：代理的期限从这里算起
    launched: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.watcher is not None and self.watcher.done()


@dataclass
class ReporterHealth:
    """结局上报器的健康：调度器的 status()、API 的 /health 与 conductor doctor 据此发现
    “结局写不进数据库”，而不是看着作业一直 RUNNING。"""

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


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1000)
class NodeAgent:
    """本节点作业任务的所有者：启动、监视、终止作业并上报结局。"""

    def __init__(self, settings: Settings, node_id: str, epoch: int) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.node_id = node_id
        self.agent_id = uuid.uuid4().hex
        self.min_epoch = epoch
        self.engine = make_engine(settings.database_url or "", pool_size=2, pre_ping=False)
        # 数据库操作都在这一个线程里串行执行（见 _db）
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-db")
        self.runs: dict[int, Run] = {}
        # 尚未写入数据库的结局（每个作业至多一个）：写入成功才删除，失败的留着重试
        self.pending: dict[int, Outcome] = {}
        self.report_ready = asyncio.Event()
        self.reporter_health = ReporterHealth()
        self.cancelling: set[asyncio.Task[bool]] = set()
        self.scheduler: ray.actor.ActorHandle | None = None
        self.reporter = self._start_reporter()
        self.host = ray.util.get_node_ip_address()
        # 上任：补记前任留下的结局（完成后 ready），再清理前任留下的进程
        self.ready = asyncio.Event()
        self.starting = asyncio.get_running_loop().create_task(self._take_office())

    async def identity(self) -> str:
        """本代理实例的身份；派发时记入作业行。

        先补记前任留下的结果文件再答复：调度器拿到身份后才对账（把随前任丢失的作业记 FAILED），
        那时它看到的只剩真正丢失的作业。"""
        await self.ready.wait()
        return self.agent_id

    def holding(self) -> tuple[str, list[int]]:
        """只读：(代理身份, 手中的作业)。供 conductor doctor 使用，不改变纪元栅栏。"""
        return self.agent_id, sorted(self.runs)

    def health(self) -> dict[str, Any]:
        """只读：本代理与结局上报器的健康（调度器 status()、/health、conductor doctor 用）。

        reporter.ok 为假表示有结局写不进数据库：pending 个作业仍记为 RUNNING、占着 CPU。"""
        h = self.reporter_health
        alive = not self.reporter.done()
        return {
            "agent_id": self.agent_id,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "ready": self.ready.is_set(),
            "jobs": len(self.runs),
            "reporter": {
                "ok": alive and h.failures == 0,
                "alive": alive,
                "pending": len(self.pending),
                "failures": h.failures,
                "last_error": h.last_error,
                "error_kind": h.error_kind,
                "since": h.since,
                "last_ok": h.last_ok,
                "restarts": h.restarts,
            },
        }

    async def adopt(self, epoch: int) -> tuple[str, list[int], dict[str, Any]]:
        """调度器对账：提高纪元栅栏，返回 (代理身份, 仍在手中的作业, 健康)。"""
        self.min_epoch = max(self.min_epoch, epoch)
        return self.agent_id, sorted(self.runs), self.health()

    async def sweep(self, tokens: list[str]) -> None:
        """清理随旧代理死亡的作业留下的孤儿进程。"""
        await asyncio.gather(*(kill_job_tree_async(t, grace=0) for t in tokens))

    async def _take_office(self) -> None:
        try:
            await self._collect_results()
        except Exception:  # noqa: BLE001 - 补记只是兜底，失败也要开始工作
            log.exception("补记前任留下的结局失败")
        finally:
            self.ready.set()
        await self._sweep_orphans()

    async def _collect_results(self) -> None:
        """补记前任留下的结果文件：它们的脚本已经结束，结局却没来得及写进数据库。

        只写仍为 RUNNING 且令牌相同的作业（finish 的条件），写入后删除文件；不认识的令牌
        （同一台机器上别的 Conductor 实例）的文件不动。数据库不可用时一直等：此时调度器也无法对账。"""
        found = await asyncio.to_thread(_leftover_results)
        if not found:
            return
        jobs = await self._db_retrying(self._jobs_by_token, [r[1] for r in found])
        outcomes = []
        for job_id, token, limit, result in found:
            if jobs.get(token) != job_id:
                continue
            state, code, msg = classify(result, limit)
            outcomes.append(Outcome(job_id, state, code, msg, token))
        try:
            await self._db_retrying(self._record, outcomes)
        except Exception as exc:  # noqa: BLE001 - 写不进的交给上报循环逐个重试
            log.warning("补记前任留下的结局失败，交给上报循环：%s", describe_error(exc))
            for o in outcomes:
                self.pending[o.job_id] = o
            self.report_ready.set()
            return
        self._recorded(outcomes)
        log.info("补记了前任留下的 %d 个作业结局：%s", len(outcomes), [o.job_id for o in outcomes])

    async def _db_retrying(self, fn: Callable[..., T], *args: Any) -> T:
        """数据库不可用或事务冲突时退避重试（不占着数据库线程睡眠）；其他错误照常抛出。"""
        delay = REPORT_FIRST_DELAY
        while True:
            try:
                return await self._db(fn, *args)
            except (DatabaseUnavailable, TransactionConflict):
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, REPORT_MAX_DELAY)

    def _jobs_by_token(self, tokens: list[str]) -> dict[str, int]:
        with session_scope(self.engine) as session:
            return orphans.jobs_by_token(session, tokens)

    async def _sweep_orphans(self) -> None:
        """新代理上任：按令牌清理随前任死亡的作业留下的进程。

        调度器对账时也会让新代理清理，但那只覆盖它判为丢失的作业；作业若已由别人（如 doctor）
        判为丢失，或调度器的清理消息丢了，孤儿进程就没人管。这里从数据库找出这些令牌。"""
        try:
            tokens = await self._db_retrying(
                self._orphan_tokens, self.node_id, self.host, self.agent_id, ORPHAN_WINDOW
            )
        except Exception:  # noqa: BLE001 - 清理只是兜底，失败不影响代理工作
            log.exception("查找前任代理留下的作业失败，不清理")
            return
        if tokens:
            # 扫描 /proc 是阻塞的：放进线程，不占事件循环
            killed = await asyncio.to_thread(_kill_tokens, tokens)
            log.info(
                "新代理上任：检查前任留下的 %d 个作业，清理了 %d 个的残留进程", len(tokens), killed
            )

    def _orphan_tokens(self, node_id: str, host: str, agent_id: str, window: float) -> list[str]:
        with session_scope(self.engine) as session:
            return orphans.orphan_tokens(session, node_id, host, agent_id, window)

    async def launch(self, specs: list[JobSpec], epoch: int) -> list[int]:
        """启动作业任务（绑定本节点）。过期纪元的派发被拒绝，返回被接受的作业 id。"""
        if epoch < self.min_epoch:
            log.warning(
                "拒绝过期调度器（纪元 %s < %s）的派发：%s",
                epoch,
                self.min_epoch,
                [s.job_id for s in specs],
            )
            return []
        strategy = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        accepted = []
        for spec in specs:
            if spec.job_id in self.runs:  # 重复派发（消息重发）：已在运行
                accepted.append(spec.job_id)
                continue
            ref = run_job.options(
                num_cpus=spec.cpus,
                memory=spec.memory_bytes,
                name=f"job-{spec.job_id}:{spec.name}",
                scheduling_strategy=strategy,
            ).remote(spec)
            run = Run(spec, ref, launched=asyncio.get_running_loop().time())
            self.runs[spec.job_id] = run
            run.watcher = asyncio.get_running_loop().create_task(self._watch(run))
            accepted.append(spec.job_id)
        return accepted

    async def cancel(self, job_id: int) -> bool:
        """终止一个作业的整棵进程树：SIGTERM → 宽限 → SIGKILL。"""
        run = self.runs.get(job_id)
        if run is None or run.stopping:
            return False
        log.info("取消作业 %s：终止其进程树", job_id)
        await self._stop(run, self.settings.kill_wait)
        return True

    async def _stop(self, run: Run, grace: float) -> None:
        """终止一个执行直到它的任务结束。

        任务可能还在 Ray 的队列里、尚未启动脚本：先放取消标记让它不再启动，
        再反复按标记清理进程树，覆盖“检查标记之后、启动脚本之前”的窄窗口。
        """
        run.stopping = True
        marker = cancel_marker(run.spec.token)
        marker.parent.mkdir(parents=True, exist_ok=True)
        touch_marker(marker)
        while not run.finished:
            await kill_job_tree_async(run.spec.token, grace=grace)
            if run.watcher is not None:
                await asyncio.wait([run.watcher], timeout=0.2)

    async def stop_all(self, grace: float, reason: str, timeout: float = 30.0) -> int:
        """服务关闭（本地 Ray 即将停止）：终止本节点全部作业，等到结局写入数据库。"""
        runs = list(self.runs.values())
        for r in runs:
            r.stop_reason = reason
        await asyncio.gather(*(self._stop(r, grace) for r in runs if not r.stopping))
        deadline = asyncio.get_running_loop().time() + timeout
        while self.runs and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return len(runs)

    async def read_logs(
        self, stdout_path: str, stderr_path: str, owner: str | None = None
    ) -> dict[str, str | None]:
        """在本节点读取作业日志（不假设共享文件系统）。文件不存在时为 None。

        owner（作业的 Unix 用户）非空时，只读属于该用户的文件。读日志（连同查用户，可能经 NSS
        访问网络）都在默认线程池里做，不占事件循环，也不占数据库线程。"""

        def read() -> dict[str, str | None]:
            uid = owner_uid(owner)
            return {
                "stdout": read_tail(Path(stdout_path), uid),
                "stderr": read_tail(Path(stderr_path), uid),
            }

        return await asyncio.to_thread(read)

    async def read_log_range(
        self, path: str, offset: int | None, limit: int, owner: str | None = None
    ) -> dict:
        """按偏移读取一段日志（跟随输出用）。offset 为 None 时读最后 limit 字节。

        owner 非空时只读属于该用户的文件（同 read_logs）。"""
        return await asyncio.to_thread(
            lambda: read_range(Path(path), offset, limit, owner_uid(owner))
        )

    async def _watch(self, run: Run) -> None:
        """监视一个执行直到得出结局。这里无论出什么错，作业都要有结局，否则它永远 RUNNING。"""
        spec = run.spec
        outcome: tuple[JobState, str | None, str | None] = (
            JobState.FAILED,
            None,
            "节点代理在作业结束前停止了监视",
        )
        try:
            outcome = await self._supervise(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - 监视本身的任何错误（含 classify 的错误）
            log.exception("监视作业 %s 时出错，按失败记录并清理进程树", spec.job_id)
            with contextlib.suppress(Exception):
                await kill_job_tree_async(spec.token, grace=0)
            outcome = (
                JobState.FAILED,
                None,
                f"节点代理监视作业时出错（{type(exc).__name__}：{_first_line(exc)}），作业已被终止",
            )
        finally:
            self._settle(run, *outcome)

    async def _supervise(self, run: Run) -> tuple[JobState, str | None, str | None]:
        """等执行结束并得出结局。时限要到脚本启动后才开始计时，而启动前的步骤（Ray 排队、
        切换用户、进入工作目录、打开日志文件）可能永远卡住：代理另设期限——启动预算内
        脚本必须启动；有时限的作业还须在 启动预算 + 时限 + KillWait 内结束。超过就强制结束。"""
        spec = run.spec
        loop = asyncio.get_running_loop()
        done = asyncio.wrap_future(
            run.ref.future()
        )  # as_future() 已弃用，且每个作业都往日志里打一行警告
        budget = self.settings.launch_timeout
        if not await _wait(done, run.launched + budget - loop.time()):
            if not started_marker(spec.token).exists():
                return await self._abandon(
                    run,
                    JobState.FAILED,
                    f"作业在 {budget:g} 秒内没有启动（卡在启动前：Ray 排队、切换用户、进入工作目录"
                    "或打开日志文件），节点代理已强制结束它（CONDUCTOR_LAUNCH_TIMEOUT）",
                )
            limit = spec.time_limit_seconds
            if limit is not None:
                left = run.launched + budget + limit + spec.kill_wait - loop.time()
                if not await _wait(done, left):
                    return await self._abandon(
                        run,
                        JobState.TIMEOUT,
                        f"超过时间限制（{format_limit(limit)}），执行器在宽限期后仍未结束作业，"
                        "节点代理已强制终止它",
                    )
            await asyncio.wait([done])
        try:
            result = done.result()
        except Exception as exc:  # noqa: BLE001 - 执行进程死亡的各种 Ray 异常一并处理
            # 执行器所在的 worker 进程（或整个 raylet）死了：代理与作业在同一台机器上，
            # 脚本的子孙进程成了孤儿，由这里按标记清理
            await kill_job_tree_async(spec.token, grace=0)
            kept = await asyncio.to_thread(read_result, result_file(spec.token))
            if kept is not None and kept[1] == spec.token:
                # 执行器写下结果之后、返回之前死了：结果是真实的
                return _classify(kept[3], spec)
            if isinstance(exc, NodeDiedError):
                return JobState.NODE_FAIL, None, node_lost_message(spec.node_name)
            return (
                JobState.FAILED,
                None,
                f"执行作业的进程意外退出（{type(exc).__name__}）：{_first_line(exc)}",
            )
        return _classify(result, spec)

    async def _abandon(
        self, run: Run, state: JobState, reason: str
    ) -> tuple[JobState, str | None, str | None]:
        """过了期限：强制结束任务（SIGKILL 执行器所在的 worker），按标记杀掉整棵进程树。"""
        spec = run.spec
        log.warning("作业 %s：%s", spec.job_id, reason)
        try:
            ray.cancel(run.ref, force=True)
        except Exception as exc:  # noqa: BLE001 - 任务可能已结束；进程树照样清理
            log.warning("强制取消作业 %s 的任务失败：%s", spec.job_id, exc)
        # 之后任务若还返回结果，也只是被我们杀掉的结果（如 SIGKILL），不再采用
        await kill_job_tree_async(spec.token, grace=0)
        return state, None, reason

    def _settle(self, run: Run, state: JobState, code: str | None, msg: str | None) -> None:
        """记下结局，交给上报循环（不抛出：清理标记失败也不能丢掉结局）。"""
        spec = run.spec
        if run.stop_reason is not None and state is not JobState.COMPLETED:
            state, msg = JobState.NODE_FAIL, run.stop_reason
        # 执行器被强制结束时来不及删除它的脚本副本
        for path in (cancel_marker(spec.token), started_marker(spec.token), script_path(spec)):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("作业 %s 的临时文件 %s 无法删除：%s", spec.job_id, path, exc)
        self.pending[spec.job_id] = Outcome(spec.job_id, state, code, msg, spec.token)
        self.report_ready.set()

    # ---- 结局上报 ----

    def _start_reporter(self) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._report_loop())
        task.add_done_callback(self._reporter_stopped)
        return task

    def _reporter_stopped(self, task: asyncio.Task[None]) -> None:
        """监督：上报循环无论因何结束（被取消除外）都重新启动，并记入健康状况。"""
        if task.cancelled():
            return
        exc = task.exception() or RuntimeError("上报循环返回")
        log.error("结局上报循环意外退出（%s），重新启动", describe_error(exc))
        self.reporter_health.restarts += 1
        self.reporter_health.failed(exc)
        self.reporter = self._start_reporter()

    async def _report_loop(self) -> None:
        """批量把结局写入数据库，写入后才忘记作业。一批出任何错都不停下：
        结局留在 pending 里退避重试（新结局并入同一批），状况见 health()。"""
        loop = asyncio.get_running_loop()
        last_check = loop.time()
        retry_at = 0.0
        delay = REPORT_FIRST_DELAY
        while True:
            now = loop.time()
            due = bool(self.pending) and now >= retry_at
            if not due:
                wait = self.settings.idle_resync - (now - last_check)
                if self.pending:
                    wait = min(wait, retry_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.report_ready.wait(), max(0.0, wait))
            self.report_ready.clear()
            try:
                if loop.time() - last_check >= self.settings.idle_resync:
                    # 不论是否繁忙都定期执行：结局源源不断时也不能漏掉丢失的取消
                    await self._kill_cancelled()
                    last_check = loop.time()
                if not self.pending or loop.time() < retry_at:
                    continue
                if await self._flush():
                    delay = REPORT_FIRST_DELAY
                    continue
            except Exception as exc:  # noqa: BLE001 - 任何错误都不能让上报停下
                log.exception("上报结局时出错，稍后重试")
                self.reporter_health.failed(exc)
            retry_at = loop.time() + delay * (0.5 + random.random())
            delay = min(delay * 2, REPORT_MAX_DELAY)

    async def _flush(self) -> bool:
        """写入手中全部结局，返回是否都已写入。整批失败时逐个写：一个写不进的结局不拖住别的。"""
        batch = list(self.pending.values())
        try:
            await self._db(self._record, batch)
        except Exception as exc:  # noqa: BLE001 - 失败的批次留着重试，原因记入健康状况
            self.reporter_health.failed(exc)
            log.warning(
                "%d 个作业结局写入失败，稍后重试：%s", len(batch), self.reporter_health.last_error
            )
            if len(batch) == 1 or isinstance(exc, DatabaseUnavailable):
                return False
        else:
            self._recorded(batch)
            self.reporter_health.succeeded()
            return True
        done: list[Outcome] = []
        misses = 0
        for outcome in batch:
            try:
                await self._db(self._record, [outcome])
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
        self._recorded(done)
        return False

    def _recorded(self, outcomes: list[Outcome]) -> None:
        """结局已写入：忘记这些作业，并让调度器立刻用上释放的资源。"""
        for o in outcomes:
            if self.pending.get(o.job_id) is o:
                del self.pending[o.job_id]
            self.runs.pop(o.job_id, None)
            if o.token:
                try:
                    result_file(o.token).unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("作业 %s 的结果文件无法删除：%s", o.job_id, exc)
        if outcomes:
            self._notify_scheduler()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """在专用的数据库线程里执行一次数据库操作。不与读日志共用默认线程池：
        卡住的读（网络文件系统、FIFO）占满线程池时，结局照样写得进数据库。"""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_thread, functools.partial(fn, *args))

    def _record(self, batch: list[Outcome]) -> None:
        with session_scope(self.engine) as session:
            transitions.finish(session, batch)

    async def _kill_cancelled(self) -> None:
        """兜底：取消消息丢失时，从数据库发现已取消但仍在运行的作业并终止。"""
        live = [j for j, r in self.runs.items() if not r.stopping]
        if not live:
            return
        try:
            cancelled = await self._db(self._cancelled_among, live)
        except Exception as exc:  # noqa: BLE001 - 数据库暂不可用时下次再查
            log.warning("检查已取消作业失败：%s", exc)
            return
        for job_id in cancelled:
            # 不在这里等宽限期结束：上报循环不能被一次取消拖住
            task = asyncio.get_running_loop().create_task(self.cancel(job_id))
            self.cancelling.add(task)
            task.add_done_callback(self.cancelling.discard)

    def _cancelled_among(self, job_ids: list[int]) -> list[int]:
        with session_scope(self.engine) as session:
            rows = session.execute(
                text("SELECT id FROM jobs WHERE id = ANY(:ids) AND state = 'CANCELLED'"),
                {"ids": job_ids},
            )
            return [r[0] for r in rows]

    def _notify_scheduler(self) -> None:

        try:
            if self.scheduler is None:
                self.scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.settings.namespace)
            self.scheduler.wake.remote()
        except Exception:  # noqa: BLE001 - 调度器正在重启：它启动时会自行对账
            self.scheduler = None


def _leftover_results() -> list[tuple[int, str, int | None, ExecResult]]:
    """临时目录里的全部结果文件（读不出的跳过）。"""
    found = []
    for path in spool_dir().glob("result-*.json"):
        left = read_result(path)
        if left is not None and path.name == f"result-{left[1]}.json":
            found.append(left)
    return found


def _kill_tokens(tokens: list[str]) -> int:
    """按令牌 SIGKILL 各作业的进程树，顺带删掉前任来不及删的标记；返回确有残留进程的作业数。"""
    found = 0
    for token in tokens:
        if find_job_pids(token):
            found += 1
            kill_job_tree(token, grace=0)
        for marker in (cancel_marker(token), started_marker(token)):
            with contextlib.suppress(OSError):
                marker.unlink(missing_ok=True)
    return found


async def _wait(fut: asyncio.Future[Any], timeout: float) -> bool:
    """等 fut 完成，最多 timeout 秒（超时不取消它）；返回它是否已完成。"""
    if not fut.done() and timeout > 0:
        await asyncio.wait([fut], timeout=timeout)
    return fut.done()


def _classify(result: object, spec: JobSpec) -> tuple[JobState, str | None, str | None]:
    if not isinstance(result, ExecResult):
        # 例如 worker 被强制结束时 ray.get 可能返回 -9 而不是抛出异常（DESIGN.md）
        return JobState.FAILED, None, f"执行器返回了意外的结果（{type(result).__name__}）"
    return classify(result, spec.time_limit_seconds)


def describe_error(exc: BaseException) -> str:
    """一行说明错误（健康状况与日志用）：驱动错误取底层异常，不带 SQL 与参数。"""
    if isinstance(exc, ConductorError) and exc.__cause__ is not None:
        return f"{exc.message}（{describe_error(exc.__cause__)}）"
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0] if lines else ''}"[:500]


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[-1][:500] if text_ else ""
