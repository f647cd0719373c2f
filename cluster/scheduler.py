"""调度器：常驻、具名、可重启的 Ray actor，决定什么作业在哪里运行。

循环（arq / Ray JobManager 的形状）：被事件唤醒或短超时醒来 → 对账（定期）
→ 读取空闲资源与队首 → 纯策略决定放置 → 认领（CAS）→ 交给节点代理执行。
它不持有任何作业任务：崩溃重启不影响正在运行的作业。
启动时先领取纪元并对账，之后才接受新工作。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sqlmodel import Session

from cluster.agent import NodeAgent
from cluster.health import Liveness, fatal, problems
from cluster.metrics import SchedulerMetrics
from cluster.names import agent_name
from cluster.nodes import RayNode, alive_nodes
from cluster.reconcile import (
    AgentView,
    apply,
    decide,
    load_held_jobs,
    orphan_tokens,
    sweepers,
)
from conductor import resolver
from conductor.account_limits import limit_for
from conductor.db import make_engine, session_scope, with_retry
from conductor.errors import DatabaseUnavailable, TransactionConflict
from conductor.jobspec import JobSpec
from conductor.models import SchedulerEpoch
from conductor.policy import (
    NodeView,
    PendingJob,
    RunningJob,
    Snapshot,
    free_cpus,
    plan,
    saturated,
)
from conductor.proctree import new_token
from conductor.settings import Settings
from conductor.states import JobState
from conductor.store import dependencies, queue, transitions
from conductor.store.transitions import Outcome

log = logging.getLogger("conductor.scheduler")

# 队首窗口的余量（Slurm 的主调度与回填之分）：事件触发的快速轮每个分区只读“该分区空闲 CPU + QUICK_SLACK”行，
# 足以填满空闲 CPU；深轮读“+ QUEUE_SLACK”行，回填能看到这么深，并刷新更多等待原因
QUICK_SLACK = 8
QUEUE_SLACK = 100
# 深轮的周期秒数；快速轮读满窗口仍留下空闲 CPU 时（队首放不下），最快隔 DEEP_RETRY 秒补一次深轮
DEEP_INTERVAL = 0.5
DEEP_RETRY = 0.05
# 两次重新判定依赖的最短间隔秒数：大量作业等待依赖时不必每轮都读它们
DEPENDENCY_INTERVAL = 0.25
# 调度器记住的等待原因条数上限（只写变化了的原因）；超过即清空重来
REASON_CACHE = 50_000
# 调度轮之间复用节点列表的秒数；节点变化最迟在下一次对账（idle_resync）时发现
NODES_TTL = 1.0
# 等待节点代理应答的秒数：超时的节点本轮不判定，不拖住调度循环
AGENT_TIMEOUT = 5.0
# 新建代理要启动一个 worker 进程，给足时间
AGENT_START_TIMEOUT = 60.0
# 等待派发应答的上限：超时后不再算“派发途中”，由对账按代理是否持有来判定
LAUNCH_TIMEOUT = 60.0
# 读取 Ray 节点列表的时限秒数：超时的一轮沿用上次的结果
NODES_TIMEOUT = 10.0
# 看门狗线程检查主循环的间隔秒数
WATCHDOG_PERIOD = 1.0
# status() 询问各代理健康的超时秒数：健康检查不能被一个卡住的代理拖住
AGENT_HEALTH_TIMEOUT = 1.0


@dataclass(frozen=True)
class _PassOutcome:
    """一轮决策的结果：认领到的作业行与几个计数。"""

    resolved: bool
    rows: list[dict] = field(default_factory=list)
    read: int = 0
    placed: int = 0
    window_full: bool = False  # 窗口读满且仍有空闲 CPU


def _gcs_reader() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcs-nodes")


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=100)
class Scheduler:
    """集群唯一的调度器（detached、具名；Ray 在它死亡后自动重启）。"""

    def __init__(self, settings: Settings) -> None:
        logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO)
        self.settings = settings
        self.engine = make_engine(settings.database_url or "", pool_size=3, pre_ping=False)
        self.epoch = 0
        self.agents: dict[str, tuple[ray.actor.ActorHandle, str]] = {}
        # 各节点代理最近一次报告的健康（对账与 status() 时更新）
        self.agent_health: dict[str, dict] = {}
        self.wake_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.started = time.time()
        # 启动各阶段完成时距构造的秒数（领取纪元、代理就绪、对账完成），供观测恢复耗时
        self.startup: dict[str, float] = {}
        self.passes = 0
        self.nodes: tuple[float, list[RayNode]] = (0.0, [])
        # ray.nodes() 用的 GCS 访问器不宜并发：一个专用线程串行读取，卡住也不占用数据库线程
        self.gcs_reader = _gcs_reader()
        self.in_flight: set[int] = set()
        self.creating: dict[str, asyncio.Task[None]] = {}
        self.launches: set[asyncio.Task[None]] = set()
        # 主机 → 待清理孤儿进程的令牌：每次对账重试，直到那台主机上的代理确认清理完
        self.sweeps: dict[str, set[str]] = {}
        self.last_reconcile = ""
        # 最近若干轮调度的耗时（秒），供观测与基准测试
        self.pass_times: deque[float] = deque(maxlen=200)
        self.reconciliations = 0
        self.partitions = settings.partition_table()
        self.reasons: dict[int, str] = {}
        self.dependencies_checked = 0.0
        self.dependency_cursor = resolver.DependencyCursor()
        self.deep_at = 0.0
        self.deep_wanted = False
        self.timer: asyncio.TimerHandle | None = None
        # 同一批数字也作为 Ray 指标导出；figures 为本轮的 (CPU 总数, 已分配, 读到的排队数, 派发数)
        self.metrics = SchedulerMetrics(settings.namespace)
        self.figures: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)
        # 活性（cluster/health.py）：主循环上一次转回顶端的时刻、上一次完成调度轮的时刻、主循环退出的原因
        self.progress = time.monotonic()
        self.pass_done: float | None = None
        self.main_error: str | None = None
        # 正在进行的节点列表读取从何时开始（没在读为 None），自上次成功以来连续超时几次
        self.gcs_since: float | None = None
        self.gcs_timeouts = 0
        self.gcs_replaced = 0
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
        return {
            "healthy": not found,
            "problems": found,
            "main_alive": live.main_error is None,
            "main_error": live.main_error,
            "loop_idle_s": round(live.loop_idle, 3),
            "last_pass_s": None if self.pass_done is None else round(now - self.pass_done, 3),
            "gcs_reader": {
                "busy_s": round(live.gcs_busy, 3),
                "timeouts": self.gcs_timeouts,
                "replaced": self.gcs_replaced,
                "nodes_age_s": round(now - self.nodes[0], 3) if self.nodes[0] else None,
            },
            "ready": self.ready.is_set(),
            "epoch": self.epoch,
            "passes": self.passes,
            "reconciliations": self.reconciliations,
            "uptime": time.time() - self.started,
            "agents": sorted(self.agents),
            "nodes": sorted(n.node_id for n in self.nodes[1]),
            "last_reconcile": self.last_reconcile,
            "pending_sweeps": {host: len(tokens) for host, tokens in self.sweeps.items()},
            "pid": os.getpid(),
            "pass_ms_last": [round(t * 1000, 3) for t in self.pass_times],
            "startup_s": {k: round(v, 3) for k, v in self.startup.items()},
            # 各节点代理的健康（结局上报器是否写得进数据库），/health 据此报告
            "agents_health": await self._agents_health(),
        }

    async def wait_ready(self, timeout: float = 60.0) -> bool:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def shutdown_jobs(self, reason: str, grace: float) -> int:
        """服务关闭且本地 Ray 将停止：让各节点代理终止并记录全部作业。"""
        calls = [h.stop_all.remote(grace, reason) for h, _ in self.agents.values()]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return sum(r for r in results if isinstance(r, int))

    # ---- 主循环 ----

    async def _main(self) -> None:
        try:
            self.epoch = await asyncio.to_thread(with_retry, self._new_epoch, what="领取调度器纪元")
            self.startup["epoch"] = time.time() - self.started
            log.info("调度器启动，纪元 %s；先对账，再接受新工作", self.epoch)
            self.metrics.started(self.epoch)
            await self._retrying(lambda: self._reconcile(startup=True))
            self.startup["ready"] = time.time() - self.started
            self.ready.set()
            self.wake_event.set()  # 对账完成立刻调度一轮：重启期间空出的资源不必等到空闲对账
            last_resync = time.monotonic()
            while True:
                # 转回循环顶端即一次进展；空闲等待不算停滞，醒来再记一次
                self.progress = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake_event.wait(), self.settings.idle_resync)
                self.progress = time.monotonic()
                self.wake_event.clear()
                if time.monotonic() - last_resync >= self.settings.idle_resync:
                    await self._retrying(lambda: self._reconcile(startup=False))
                    last_resync = time.monotonic()
                await self._retrying(self._schedule_pass)
        except Exception as exc:
            # 主循环不该退出（例如领取纪元遇到 with_retry 不重试的错误）：记下原因，
            # 健康检查据此报告，看门狗据此让进程退出、由 Ray 重启
            self.main_error = f"{type(exc).__name__}: {exc}"
            log.exception("调度器主循环退出")
            raise

    def _liveness(self) -> Liveness:
        """活性快照；看门狗线程也调用它，只读几个字段。"""
        now = time.monotonic()
        error = (self.main_error or "主循环已结束") if self.main.done() else None
        return Liveness(
            ready=self.ready.is_set(),
            main_error=error,
            loop_idle=now - self.progress,
            gcs_timeouts=self.gcs_timeouts,
            gcs_busy=0.0 if self.gcs_since is None else now - self.gcs_since,
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

    async def _retrying(self, step) -> None:  # type: ignore[no-untyped-def]
        """数据库不可用或事务冲突时退避重试同一步；其他错误记录后继续，循环永不退出。"""
        delay = 0.1
        while True:
            try:
                await step()
                return
            except (DatabaseUnavailable, TransactionConflict) as exc:
                log.warning("%s，%.1f 秒后重试", exc.message, delay)
            except Exception:
                log.exception("调度循环出错，%.1f 秒后重试", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _new_epoch(self) -> int:
        with session_scope(self.engine) as session:
            row = SchedulerEpoch()
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    # ---- 节点与代理 ----

    async def _alive_nodes(self, max_age: float) -> list[RayNode]:
        """存活节点（缓存 max_age 秒）。GCS 调用放到线程里并限时，调度循环永不被它卡住。"""
        fetched, nodes = self.nodes
        if time.monotonic() - fetched <= max_age:
            return nodes
        reader = self.gcs_reader
        self.gcs_since = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
            nodes = await asyncio.wait_for(loop.run_in_executor(reader, alive_nodes), NODES_TIMEOUT)
        except TimeoutError:
            # 读取线程可能永远卡在这次调用里，线程又无法终止：弃用它，换一个新线程，
            # 之后的读取不再排在它后面（它若终于返回，会自行退出）
            self.gcs_reader = _gcs_reader()
            reader.shutdown(wait=False, cancel_futures=True)
            self.gcs_timeouts += 1
            self.gcs_replaced += 1
            log.warning(
                "读取 Ray 节点列表超时（连续 %d 次），换用新的读取线程；本轮沿用上次的结果",
                self.gcs_timeouts,
            )
            return nodes
        finally:
            self.gcs_since = None
        self.gcs_timeouts = 0
        self.nodes = (time.monotonic(), nodes)
        log.debug("节点列表：%s", [n.node_name for n in nodes])
        return nodes

    def _ensure_agents(self, nodes: list[RayNode]) -> dict[str, tuple[ray.actor.ActorHandle, str]]:
        """每个存活节点一个代理：缺的在后台取得或创建（不阻塞本轮），返回已就绪的。"""
        alive = {n.node_id for n in nodes}
        for node_id in list(self.agents):
            if node_id not in alive:
                log.debug("节点 %s 不再存活，丢弃其代理句柄", node_id)
                del self.agents[node_id]
        for node in nodes:
            if node.node_id not in self.agents and node.node_id not in self.creating:
                task = asyncio.get_running_loop().create_task(self._add_agent(node))
                self.creating[node.node_id] = task
        return self.agents

    async def _add_agent(self, node: RayNode) -> None:
        try:
            entry = await self._get_or_create_agent(node)
        finally:
            self.creating.pop(node.node_id, None)
        if entry is not None:
            self.agents[node.node_id] = entry
            self.wake_event.set()  # 新节点可以接活了

    def _forget_agent(self, node_id: str, handle: ray.actor.ActorHandle) -> None:
        """丢弃已退出的代理；期间该节点若已换上新代理，保留新的。"""
        entry = self.agents.get(node_id)
        if entry is not None and entry[0] == handle:
            del self.agents[node_id]

    async def _get_or_create_agent(self, node: RayNode) -> tuple[ray.actor.ActorHandle, str] | None:
        handle = NodeAgent.options(  # type: ignore[attr-defined]
            name=agent_name(node.node_id),
            namespace=self.settings.namespace,
            lifetime="detached",
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        ).remote(self.settings, node.node_id, self.epoch)
        try:
            agent_id = await asyncio.wait_for(handle.identity.remote(), AGENT_START_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - 节点消失、不可调度、超时：本轮放弃，下轮再试
            log.warning("节点 %s 的代理不可用：%s", node.node_name, exc)
            return None
        return handle, agent_id

    # ---- 对账 ----

    async def _reconcile(self, startup: bool) -> None:
        nodes = await self._alive_nodes(max_age=0)
        self._ensure_agents(nodes)
        if startup and self.creating:
            await asyncio.wait(list(self.creating.values()), timeout=AGENT_START_TIMEOUT)
        if startup:
            self.startup["agents"] = time.time() - self.started
        held = await asyncio.to_thread(load_held_jobs, self.engine)
        if not held and not startup:
            await self._sweep(nodes)
            return
        entries = list(self.agents.items())
        found = await asyncio.gather(*(self._adopt(node_id, h) for node_id, (h, _) in entries))
        views = {node_id: view for (node_id, _), view in zip(entries, found, strict=True)}
        plan = decide(
            held,
            {n.node_id for n in nodes},
            views,
            startup=startup,
            in_flight=self.in_flight,
            stranded_after=self.settings.stranded_after,
        )
        self.reconciliations += 1
        self.metrics.reconciled()
        log.debug(
            "对账：持有 %s；计划 %s", [(j.job_id, j.node_id[:8]) for j in held], plan.summary()
        )
        if startup or plan.changes_anything:
            self.last_reconcile = plan.summary()
            log.info(
                "对账（纪元 %s）：检查 %d 个占用资源的作业（RUNNING %d）；%s",
                self.epoch,
                len(held),
                sum(1 for j in held if j.state is JobState.RUNNING),
                self.last_reconcile,
            )
        if plan.changes_anything:
            freed = await asyncio.to_thread(apply, self.engine, plan)
            log.info("对账释放资源的作业：%s", freed)
            for host, tokens in orphan_tokens(plan, {n.node_id: n.host for n in nodes}).items():
                self.sweeps.setdefault(host, set()).update(tokens)
            self.wake_event.set()
        await self._sweep(nodes)

    async def _adopt(self, node_id: str, handle: ray.actor.ActorHandle) -> AgentView | None:
        """向代理提高纪元栅栏并取回它手中的作业；无响应时返回 None（本轮不判定）。"""
        try:
            agent_id, jobs, health = await asyncio.wait_for(
                handle.adopt.remote(self.epoch), AGENT_TIMEOUT
            )
        except RayActorError as exc:
            log.warning("节点 %s 的代理已退出：%s", node_id, exc)
            self._forget_agent(node_id, handle)  # 下一轮为该节点创建新代理
            return None
        except TimeoutError:
            log.warning("节点 %s 的代理 %s 秒内无响应，本轮不判定其作业", node_id, AGENT_TIMEOUT)
            return None
        self._note_health(node_id, health)
        return AgentView(agent_id, frozenset(jobs), health)

    def _note_health(self, node_id: str, health: dict) -> None:
        """记下代理的健康；结局上报器出问题时记日志（作业会一直 RUNNING、占着 CPU）。"""
        reporter = health["reporter"]
        if not reporter["ok"]:
            log.warning(
                "节点 %s 的代理有 %s 个作业结局写不进数据库（连续失败 %s 次）：%s",
                node_id,
                reporter["pending"],
                reporter["failures"],
                reporter["last_error"],
            )
        self.agent_health[node_id] = health

    async def _agents_health(self) -> dict[str, dict]:
        """各节点代理的健康，现问现答；AGENT_HEALTH_TIMEOUT 秒内不答的记为无响应。"""
        entries = list(self.agents.items())

        async def ask(node_id: str, handle: ray.actor.ActorHandle) -> dict:
            try:
                health = await asyncio.wait_for(handle.health.remote(), AGENT_HEALTH_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - 无响应或已退出：照实报告
                error = f"{type(exc).__name__}: {exc}"[:300]
                return {"reachable": False, "error": error, "last": self.agent_health.get(node_id)}
            self.agent_health[node_id] = health
            return {"reachable": True, **health}

        found = await asyncio.gather(*(ask(node_id, h) for node_id, (h, _) in entries))
        return {node_id: h for (node_id, _), h in zip(entries, found, strict=True)}

    async def _sweep(self, nodes: list[RayNode]) -> None:
        """让各主机上的代理按令牌清理丢失的执行留下的孤儿进程（代理换了的节点、失联的节点）。

        等代理确认才算完成：代理无响应、清理途中死亡、那台主机上还没有存活节点与代理时，
        令牌留着，下次对账再试。"""
        if not self.sweeps:
            return
        agents = dict(self.agents)
        chosen = sweepers(self.sweeps, {n.node_id: n.host for n in nodes if n.node_id in agents})
        await asyncio.gather(
            *(self._sweep_on(host, node_id, agents[node_id][0]) for host, node_id in chosen.items())
        )

    async def _sweep_on(self, host: str, node_id: str, handle: ray.actor.ActorHandle) -> None:
        tokens = set(self.sweeps[host])
        try:
            await asyncio.wait_for(handle.sweep.remote(sorted(tokens)), AGENT_TIMEOUT)
        except RayActorError as exc:
            log.warning("节点 %s 的代理在清理孤儿进程时已退出，下次对账再试：%s", node_id, exc)
            self._forget_agent(node_id, handle)
            return
        except Exception as exc:  # noqa: BLE001 - 超时等：令牌留着，下次对账再试
            log.warning("节点 %s 的代理没有确认清理孤儿进程（%s），下次对账再试", node_id, exc)
            return
        remaining = self.sweeps.get(host, set()) - tokens  # 清理期间可能又有新的令牌加入
        if remaining:
            self.sweeps[host] = remaining
        else:
            self.sweeps.pop(host, None)
        log.info("主机 %s 上的孤儿进程已清理（%d 个作业的令牌）", host, len(tokens))

    # ---- 调度 ----

    async def _schedule_pass(self) -> None:
        started = time.perf_counter()
        try:
            await self._plan_and_launch()
            self.pass_done = time.monotonic()
        finally:
            self.pass_times.append(time.perf_counter() - started)
            self.metrics.scheduled(self.pass_times[-1], *self.figures)

    async def _plan_and_launch(self) -> None:
        self.passes += 1
        nodes = await self._alive_nodes(max_age=NODES_TTL)
        # 句柄与代理身份一起取快照：决策在线程里进行期间 self.agents 可能被改（派发失败时丢弃死代理），
        # 认领记下的代理身份与随后派发所用的句柄必须出自同一份
        agents = dict(self._ensure_agents(nodes))
        views = [
            NodeView(
                n.node_id,
                n.node_name,
                n.total_cpus,
                n.total_memory,
                self.partitions.node_partitions(n.labels, n.resources),
            )
            for n in nodes
            if n.node_id in agents
        ]
        now = time.monotonic()
        check_dependencies = now - self.dependencies_checked >= DEPENDENCY_INTERVAL
        if check_dependencies:
            self.dependencies_checked = now
        else:
            # 本轮跳过依赖判定：稍后补一轮，刚结束的作业的依赖者不必等到空闲对账
            self._wake_at(self.dependencies_checked + DEPENDENCY_INTERVAL)
        since_deep = now - self.deep_at
        deep = since_deep >= DEEP_INTERVAL or (self.deep_wanted and since_deep >= DEEP_RETRY)
        if deep:
            self.deep_at, self.deep_wanted = now, False
        elif self.deep_wanted:
            self._wake_at(self.deep_at + DEEP_RETRY)
        # 读快照、决策、认领在同一个线程、同一个事务里完成：每轮只切换一次线程、只提交一次
        hosts = {n.node_id: n.host for n in nodes}
        outcome = await asyncio.to_thread(
            self._decide,
            views,
            {node_id: entry[1] for node_id, entry in agents.items()},
            hosts,
            check_dependencies,
            QUEUE_SLACK if deep else QUICK_SLACK,
        )
        if outcome.resolved:
            self.wake_event.set()  # 刚满足依赖的作业可能不在本轮窗口里
        if outcome.window_full and not deep:
            # 窗口读满、仍有空闲 CPU：窗口之后可能有能回填的作业，尽快补一次深轮
            self.deep_wanted = True
            self._wake_at(self.deep_at + DEEP_RETRY)
        by_node: dict[str, list[JobSpec]] = defaultdict(list)
        unbuildable: list[Outcome] = []
        node_cpus = {v.node_id: int(v.total_cpus) for v in views}
        for row in outcome.rows:
            try:
                spec = JobSpec.from_row(
                    row,
                    token=row["token"],
                    kill_wait=self.settings.kill_wait,
                    node_cpus=node_cpus.get(row["node_id"]),
                )
            except Exception as exc:  # noqa: BLE001 - 库里的坏值只让这一个作业失败，不拖累同轮其他作业
                reason = f"无法由作业行构造执行规格（{exc}），作业不会运行；请修正后重新提交"
                unbuildable.append(Outcome(row["id"], JobState.FAILED, None, reason, row["token"]))
                continue
            by_node[row["node_id"]].append(spec)
        for node_id, specs in by_node.items():
            # 派发在后台进行：一个卡住的节点不拖住整个调度循环
            self.in_flight.update(s.job_id for s in specs)
            handle = agents[node_id][0]
            task = asyncio.get_running_loop().create_task(self._launch(node_id, handle, specs))
            self.launches.add(task)
            task.add_done_callback(self.launches.discard)
        if unbuildable:
            # 判 FAILED 而不是留给对账：重新排队只会再认领、再失败，永远循环
            log.error(
                "作业行无法构造执行规格，判 FAILED：%s",
                [(o.job_id, o.error_msg) for o in unbuildable],
            )
            await asyncio.to_thread(self._finish, unbuildable)
        if outcome.placed and outcome.placed == outcome.read:
            self.wake_event.set()  # 读到的都放下了：可能还有空闲，马上再来一轮

    def _decide(
        self,
        views: list[NodeView],
        agent_ids: dict[str, str],
        hosts: dict[str, str],
        check_dependencies: bool,
        slack: int,
    ) -> _PassOutcome:
        """一个事务：判定依赖 → 读占用与队首窗口 → 纯策略决策 → 写等待原因并认领。"""
        with session_scope(self.engine) as session:
            resolved: dict[int, str] = {}
            if check_dependencies:
                # 游标在提交前就前进：本轮若回滚，漏掉的判定由回看与轮转复查补上
                resolved, self.dependency_cursor = resolver.resolve_dependencies(
                    session, self.dependency_cursor
                )
            dependencies.set_dependency_states(session, resolved)
            running = queue.load_running(session)
            total = sum(v.total_cpus for v in views)
            allocated = sum(r.cpus for r in running)
            pending, free, window_full = self._read_window(session, views, running, slack)
            self.figures = (total, allocated, len(pending), 0)
            if not pending:
                return _PassOutcome(bool(resolved))
            decision = plan(
                Snapshot(
                    views,
                    running,
                    pending,
                    now=time.time(),
                    account_limits=lambda account: limit_for(self.settings.account_limits, account),
                    exceeds_partition_max=self.partitions.exceeds_max,
                )
            )
            placements = decision.placements
            self.figures = (total, allocated, len(pending), len(placements))
            queue.set_reasons(session, self._changed_reasons(decision.reasons))
            if placements:
                log.debug("放置：%s；预留：%s", placements, decision.reservations)
            rows = transitions.claim(
                session,
                placements,
                [new_token() for _ in placements],
                [agent_ids[p.node_id] for p in placements],
                self.epoch,
                [hosts[p.node_id] for p in placements],
            )
        placed = {p.job_id for p in placements}
        idle = free - sum(j.cpus for j in pending if j.job_id in placed)
        return _PassOutcome(
            bool(resolved),
            rows,
            len(pending),
            len(placements),
            window_full and idle > 0,
        )

    def _read_window(
        self, session: Session, views: list[NodeView], running: list[RunningJob], slack: int
    ) -> tuple[list[PendingJob], int, bool]:
        """各分区的队首窗口、空闲 CPU 总数，以及是否有还空着 CPU 的分区读满了窗口。

        每个作业至少 1 个 CPU：一个分区最多放得下“该分区空闲 CPU”个，每个分区只读这么多（加余量 slack），
        一个分区排着再多放不下的作业也挡不住别的分区。没有空闲 CPU 的分区（占满、没有存活节点）
        也读 slack 行：它们的队首照样预留、等待原因照样刷新。集群占满时不读。"""
        free, by_partition = free_cpus(views, running, self.partitions.names)
        if free == 0:
            return [], free, False
        running_arrays = sorted({r.array_job_id for r in running if r.array_job_id})
        skip_accounts, skip_arrays = saturated(
            running, self.settings.account_limits, queue.array_limits(session, running_arrays)
        )
        windows = {name: idle + slack for name, idle in by_partition.items()}
        pending = queue.load_pending(session, windows, skip_accounts, skip_arrays)
        read = Counter(j.partition for j in pending)
        full = any(read[name] == windows[name] for name, idle in by_partition.items() if idle)
        return pending, free, full

    def _wake_at(self, when: float) -> None:
        """在 time.monotonic() 时刻 when 唤醒一轮（事件循环的时钟就是它）；已有更早的定时则不动。"""
        loop = asyncio.get_running_loop()
        if self.timer is None or self.timer.when() <= loop.time() or self.timer.when() > when:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_at(when, self.wake_event.set)

    def _changed_reasons(self, reasons: dict[int, str]) -> dict[int, str]:
        """只写与上次不同的等待原因，避免每轮重写整个窗口。"""
        if len(self.reasons) > REASON_CACHE:
            self.reasons.clear()
        changed = {j: r for j, r in reasons.items() if self.reasons.get(j) != r}
        self.reasons.update(changed)
        return changed

    async def _launch(
        self, node_id: str, handle: ray.actor.ActorHandle, specs: list[JobSpec]
    ) -> None:
        ids = [s.job_id for s in specs]
        try:
            accepted = set(
                await asyncio.wait_for(handle.launch.remote(specs, self.epoch), LAUNCH_TIMEOUT)
            )
        except RayActorError as exc:
            # 代理在派发途中死亡：任务（若已提交）随之死亡，下一次对账判定
            log.warning("向节点 %s 派发作业 %s 失败：%s", node_id, ids, exc)
            self._forget_agent(node_id, handle)
            self.wake_event.set()
            return
        except RayTaskError as exc:
            # 代理活着，处理派发时出错：找出出错的作业，只让它失败
            await self._launch_failed(node_id, handle, specs, exc)
            return
        except Exception as exc:  # noqa: BLE001 - 超时、序列化失败……一律不能让认领搁浅
            # 不知道代理收下了哪些：代理持有每个作业直到结局写入，对账据此判定
            # （同一代理不持有的，认领超过 stranded_after 秒后重新排队）
            log.warning(
                "向节点 %s 派发作业 %s 的结果不明（%s: %s），交给对账判定",
                node_id,
                ids,
                type(exc).__name__,
                exc,
            )
            return
        finally:
            self.in_flight.difference_update(ids)
        rejected = [(s.job_id, s.token) for s in specs if s.job_id not in accepted]
        if rejected:
            await asyncio.to_thread(self._requeue, rejected)

    async def _launch_failed(
        self, node_id: str, handle: ray.actor.ActorHandle, specs: list[JobSpec], exc: RayTaskError
    ) -> None:
        """代理的 launch 抛出异常。同样的规格重派多半还会出错：出错的作业判 FAILED，不循环。"""
        if len(specs) > 1:
            # 代理对已收下的作业去重，逐个重派是安全的：只有出错的那个会失败
            for spec in specs:
                await self._launch(node_id, handle, [spec])
            return
        spec = specs[0]
        view = await self._adopt(node_id, handle)
        if view is None or spec.job_id in view.jobs:
            return  # 代理无响应或已收下了它：交给对账
        cause = getattr(exc, "cause", None) or exc
        reason = (
            f"节点代理无法启动作业（{type(cause).__name__}: {str(cause).strip()[:500]}），"
            "作业不会运行；请修正后重新提交"
        )
        log.error("作业 %s 派发到节点 %s 时代理报错，判 FAILED：%s", spec.job_id, node_id, reason)
        await asyncio.to_thread(
            self._finish, [Outcome(spec.job_id, JobState.FAILED, None, reason, spec.token)]
        )

    def _requeue(self, claims: list[tuple[int, str]]) -> None:
        with session_scope(self.engine) as session:
            transitions.requeue(session, claims)

    def _finish(self, outcomes: list[Outcome]) -> None:
        with session_scope(self.engine) as session:
            transitions.finish(session, outcomes)
