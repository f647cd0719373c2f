"""调度器：常驻、具名、可重启的 Ray actor，决定什么作业在哪里运行。

循环（arq / Ray JobManager 的形状）：被事件唤醒或短超时醒来 → 对账（定期）
→ 读取空闲资源与队首 → 纯策略决定放置 → 认领（CAS）→ 交给节点代理执行。
它不持有任何作业任务：崩溃重启不影响正在运行的作业。
启动时先领取纪元并对账，之后才接受新工作。

这里只是外壳：actor 方法、主循环与看门狗。机群与对账在 fleet.py，一轮调度在
conductor/cycle.py（不碰 Ray），节奏在 conductor/pacing.py，派发在 dispatch.py。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

import ray

from cluster.autoscale import AutoscaleRequest
from cluster.dispatch import Dispatcher
from cluster.fleet import NODES_TIMEOUT, NODES_TTL, Fleet, Reconciler
from cluster.health import Liveness, fatal, problems
from cluster.metrics import SchedulerMetrics
from conductor.cycle import SchedulingCycle
from conductor.db import make_engine, session_scope, with_retry
from conductor.errors import DatabaseUnavailable, TransactionConflict
from conductor.node_types import cluster_config
from conductor.pacing import backoff
from conductor.settings import Settings
from conductor.store import epochs

log = logging.getLogger("conductor.scheduler")

# 看门狗线程检查主循环的间隔秒数
WATCHDOG_PERIOD = 1.0


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=100)
class Scheduler:
    """集群唯一的调度器（detached、具名；Ray 在它死亡后自动重启）。"""

    def __init__(self, settings: Settings) -> None:
        logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO)
        self.settings = settings
        self.engine = make_engine(settings.database_url or "", pool_size=3, pre_ping=False)
        self.wake_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.started = time.time()
        # 启动各阶段完成时距构造的秒数（领取纪元、代理就绪、对账完成），供观测恢复耗时
        self.startup: dict[str, float] = {}
        self.passes = 0
        # 最近若干轮调度的耗时（秒），供观测与基准测试；同一批数字也作为 Ray 指标导出
        self.pass_times: deque[float] = deque(maxlen=200)
        self.metrics = SchedulerMetrics(settings.namespace)
        self.timer: asyncio.TimerHandle | None = None
        # 服务关闭（shutdown_jobs）之后不再派发：终止作业释放出的资源不能再派给排队的作业，
        # 否则它们刚启动就随集群一起被杀。一轮调度在锁里进行，关闭等正在进行的那一轮做完
        self.closing = False
        self.pass_lock = asyncio.Lock()
        self.fleet = Fleet(settings, wake=self.wake_event.set)
        self.dispatcher = Dispatcher(self.engine, settings, self.fleet, wake=self.wake_event.set)
        self.reconciler = Reconciler(
            self.engine, settings, self.fleet, self.dispatcher.in_flight, self.metrics
        )
        self.autoscale = AutoscaleRequest(self.engine, settings)
        # 停放空闲节点的代理（fleet.park_idle）：只在自动扩缩容的集群里，固定集群的代理一直在
        self.park_after = (
            settings.agent_park_after
            if settings.agent_park_after > 0
            and settings.autoscale_max_bundles > 0
            and cluster_config(settings.autoscaler_config) is not None
            else None
        )
        # 活性（cluster/health.py）：主循环上一次转回顶端的时刻、上一次完成调度轮的时刻、主循环退出的原因
        self.progress = time.monotonic()
        self.pass_done: float | None = None
        self.main_error: str | None = None
        self.main = asyncio.get_running_loop().create_task(self._main())
        threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()

    # ---- 对外方法 ----

    def wake(self) -> None:
        """有新提交或资源释放：立刻开始下一轮调度。"""
        self.wake_event.set()

    async def status(self) -> dict:
        """健康检查与观测用的状态。healthy/problems 是活性判断（cluster/health.py）：
        能应答并不说明主循环还在干活。"""
        live = self._liveness()
        found = problems(live, self.settings.scheduler_stall_timeout, NODES_TIMEOUT)
        now = time.monotonic()
        fleet = self.fleet
        return {
            "healthy": not found,
            "problems": found,
            "main_alive": live.main_error is None,
            "main_error": live.main_error,
            "loop_idle_s": round(live.loop_idle, 3),
            "last_pass_s": None if self.pass_done is None else round(now - self.pass_done, 3),
            "gcs_reader": fleet.gcs_status(),
            "ready": self.ready.is_set(),
            "closing": self.closing,  # 服务关闭中：不再派发
            "epoch": fleet.epoch,
            "passes": self.passes,
            "reconciliations": self.reconciler.count,
            "uptime": time.time() - self.started,
            "agents": sorted(fleet.agents),
            "parked": sorted(fleet.parked),  # 代理因空闲已退出的节点（自动扩缩容的集群）
            "nodes": sorted(n.node_id for n in fleet.nodes[1]),
            "last_reconcile": self.reconciler.last_summary,
            "pending_sweeps": {host: len(tokens) for host, tokens in fleet.sweeps.items()},
            # 对 Ray 自动扩缩容器的请求：份额总数（含运行中的）与其中排队作业的份数
            "autoscale_request": {
                "bundles": len(self.autoscale.sent or []),
                "pending": self.autoscale.pending,
            },
            "pid": os.getpid(),
            "pass_ms_last": [round(t * 1000, 3) for t in self.pass_times],
            "startup_s": {k: round(v, 3) for k, v in self.startup.items()},
            # 各节点代理的健康（结局上报器是否写得进数据库），/health 据此报告
            "agents_health": await fleet.agents_health(),
        }

    async def wait_ready(self, timeout: float = 60.0) -> bool:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def shutdown_jobs(self, reason: str, grace: float) -> int:
        """服务关闭且本地 Ray 将停止：先停止派发（等正在进行的一轮做完），再让各节点代理终止并记录全部作业。
        排队的作业留在队列里，下次启动照常运行。"""
        self.closing = True
        async with self.pass_lock:
            log.info("服务关闭：不再派发，终止全部运行中的作业（%s）", reason)
        return await self.fleet.stop_all(reason, grace)

    # ---- 主循环 ----

    async def _main(self) -> None:
        try:
            epoch = await asyncio.to_thread(with_retry, self._new_epoch, what="领取调度器纪元")
            self.fleet.epoch = epoch
            self._mark("epoch")
            log.info("调度器启动，纪元 %s；先对账，再接受新工作", epoch)
            self.metrics.started(epoch)
            cycle = SchedulingCycle(self.engine, self.settings, epoch)
            await self._retrying(
                lambda: self.reconciler.run(startup=True, agents_ready=lambda: self._mark("agents"))
            )
            self._mark("ready")
            self.ready.set()
            self.wake_event.set()  # 对账完成立刻调度一轮：重启期间空出的资源不必等到空闲对账
            last_resync = last_demand = time.monotonic()
            # 空闲时也按时醒来：对账与更新扩容请求
            idle_wait = min(self.settings.idle_resync, self.settings.autoscale_period)
            while True:
                # 转回循环顶端即一次进展；空闲等待不算停滞，醒来再记一次
                self.progress = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake_event.wait(), idle_wait)
                self.progress = time.monotonic()
                self.wake_event.clear()
                if time.monotonic() - last_resync >= self.settings.idle_resync:
                    await self._retrying(lambda: self.reconciler.run(startup=False))
                    last_resync = time.monotonic()
                await self._retrying(lambda: self._schedule_pass(cycle))
                if time.monotonic() - last_demand >= self.settings.autoscale_period:
                    await self._retrying(self._request_capacity)
                    last_demand = time.monotonic()
        except Exception as exc:
            # 主循环不该退出（例如领取纪元遇到 with_retry 不重试的错误）：记下原因，
            # 健康检查据此报告，看门狗据此让进程退出、由 Ray 重启
            self.main_error = f"{type(exc).__name__}: {exc}"
            log.exception("调度器主循环退出")
            raise

    def _new_epoch(self) -> int:
        with session_scope(self.engine) as session:
            return epochs.new_epoch(session)

    def _mark(self, stage: str) -> None:
        """记下启动阶段 stage 完成的时刻（距构造的秒数）。"""
        self.startup[stage] = time.time() - self.started

    def _liveness(self) -> Liveness:
        """活性快照；看门狗线程也调用它，只读几个字段。"""
        error = (self.main_error or "主循环已结束") if self.main.done() else None
        return Liveness(
            ready=self.ready.is_set(),
            main_error=error,
            loop_idle=time.monotonic() - self.progress,
            gcs_timeouts=self.fleet.gcs_timeouts,
            gcs_busy=self.fleet.gcs_busy(),
        )

    def _watchdog(self) -> None:
        """独立线程：主循环已退出或停滞太久时让进程退出，Ray 随即重启调度器（max_restarts=-1）。
        放在线程里，事件循环本身被堵住时也看得见。"""
        while True:
            time.sleep(WATCHDOG_PERIOD)
            reason = fatal(self._liveness(), self.settings.scheduler_stall_timeout)
            if reason is not None:
                log.critical("看门狗：%s；退出调度器进程，由 Ray 重启", reason)
                os._exit(1)

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        """数据库不可用或事务冲突时退避重试同一步；其他错误记录后继续，循环永不退出。"""
        for delay in backoff():
            try:
                await step()
                return
            except (DatabaseUnavailable, TransactionConflict) as exc:
                log.warning("%s，%.1f 秒后重试", exc.message, delay)
            except Exception:
                log.exception("调度循环出错，%.1f 秒后重试", delay)
            await asyncio.sleep(delay)

    # ---- 一轮调度 ----

    async def _schedule_pass(self, cycle: SchedulingCycle) -> None:
        if self.closing:
            return
        async with self.pass_lock:
            await self._one_pass(cycle)

    async def _one_pass(self, cycle: SchedulingCycle) -> None:
        started = time.perf_counter()
        try:
            self.passes += 1
            nodes = await self.fleet.alive_nodes(max_age=NODES_TTL)
            # 句柄与代理身份一起取快照：决策在线程里进行期间 fleet.agents 可能被改（派发失败时丢弃死代理），
            # 认领记下的代理身份与随后派发所用的句柄必须出自同一份
            agents = dict(self.fleet.ensure_agents(nodes))
            ready = self.fleet.ready_nodes(nodes, agents)
            # 判定依赖、读快照、决策、认领在同一个线程、同一个事务里完成：每轮只切换一次线程、只提交一次
            result = await asyncio.to_thread(cycle.run, ready)
            if result.wake_at is not None:
                self._wake_at(result.wake_at)
            if result.again:
                self.wake_event.set()
            await self.dispatcher.dispatch(result.claimed, agents, ready)
            self.pass_done = time.monotonic()
        finally:
            self.pass_times.append(time.perf_counter() - started)
            self.metrics.scheduled(self.pass_times[-1], cycle.figures)

    async def _request_capacity(self) -> None:
        """告诉 Ray 的自动扩缩容器队列需要什么（cluster/autoscale.py），并按同一份需求停放或叫醒空闲节点。"""
        nodes = await self.fleet.alive_nodes(max_age=NODES_TTL)
        need = await asyncio.to_thread(self.autoscale.refresh, nodes)
        if self.park_after is not None and not self.closing:
            async with self.pass_lock:
                await self.fleet.park_idle(nodes, need, self.dispatcher.in_flight, self.park_after)

    def _wake_at(self, when: float) -> None:
        """在 time.monotonic() 时刻 when 唤醒一轮（事件循环的时钟就是它）；已有更早的定时则不动。"""
        loop = asyncio.get_running_loop()
        if self.timer is None or self.timer.when() <= loop.time() or self.timer.when() > when:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_at(when, self.wake_event.set)
