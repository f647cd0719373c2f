"""调度器眼中的机群：存活节点（限时读取、短暂缓存）、每个节点一个代理（后台取得或创建）、
代理手中的作业与健康、按主机清理孤儿进程，以及把这些与数据库比对的对账（规则在 reconcile.py）。
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sqlalchemy.engine import Engine

from cluster.agent import NodeAgent
from cluster.autoscale import Need
from cluster.metrics import SchedulerMetrics
from cluster.names import agent_name
from cluster.nodes import RayNode, alive_nodes
from cluster.reconcile import AgentView, apply, decide, load_held_jobs, orphan_tokens, sweepers
from conductor import demand
from conductor.cycle import ReadyNode
from conductor.policy import NodeView
from conductor.settings import Settings
from conductor.states import JobState

log = logging.getLogger("conductor.scheduler")

# 调度轮之间复用节点列表的秒数；节点变化最迟在下一次对账（idle_resync）时发现
NODES_TTL = 1.0
# 读取 Ray 节点列表的时限秒数：超时的一轮沿用上次的结果
NODES_TIMEOUT = 10.0
# 等待节点代理应答的秒数：超时的节点本轮不判定，不拖住调度循环
AGENT_TIMEOUT = 5.0
# 新建代理要启动一个 worker 进程，给足时间
AGENT_START_TIMEOUT = 60.0
# status() 询问各代理健康的超时秒数：健康检查不能被一个卡住的代理拖住
AGENT_HEALTH_TIMEOUT = 1.0

# 一个节点的代理：句柄与代理身份（每次创建都不同）
Agent = tuple[ray.actor.ActorHandle, str]


def _gcs_reader() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="gcs-nodes")


class Fleet:
    """存活节点与它们的代理。wake：有新节点可以接活时唤醒调度循环。"""

    def __init__(self, settings: Settings, wake: Callable[[], None]) -> None:
        self.settings = settings
        self.wake = wake
        self.partitions = settings.partition_table()
        # 本调度器的纪元（领取后设置）：新建代理与 adopt 都带上它，代理据此拒绝旧调度器的派发
        self.epoch = 0
        self.agents: dict[str, Agent] = {}
        self.creating: dict[str, asyncio.Task[None]] = {}
        # 各节点代理最近一次报告的健康（对账与 status() 时更新）
        self.agent_health: dict[str, dict] = {}
        # 主机 → 待清理孤儿进程的令牌：每次对账重试，直到那台主机上的代理确认清理完
        self.sweeps: dict[str, set[str]] = {}
        self.nodes: tuple[float, list[RayNode]] = (0.0, [])
        # 自动扩缩容的集群里代理已退出的空闲节点：不为它们建代理、不往上放作业，直到有排队作业放得进（park_idle）
        self.parked: set[str] = set()
        # ray.nodes() 用的 GCS 访问器不宜并发：一个专用线程串行读取，卡住也不占用数据库线程
        self.gcs_reader = _gcs_reader()
        # 正在进行的节点列表读取从何时开始（没在读为 None），自上次成功以来连续超时几次
        self.gcs_since: float | None = None
        self.gcs_timeouts = 0
        self.gcs_replaced = 0

    # ---- 节点 ----

    async def alive_nodes(self, max_age: float) -> list[RayNode]:
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

    def gcs_busy(self) -> float:
        """正在进行的节点列表读取已等了几秒（没在读为 0）；看门狗线程也调用它。"""
        since = self.gcs_since
        return 0.0 if since is None else time.monotonic() - since

    def gcs_status(self) -> dict:
        fetched = self.nodes[0]
        return {
            "busy_s": round(self.gcs_busy(), 3),
            "timeouts": self.gcs_timeouts,
            "replaced": self.gcs_replaced,
            "nodes_age_s": round(time.monotonic() - fetched, 3) if fetched else None,
        }

    def ready_nodes(self, nodes: list[RayNode], agents: Mapping[str, Agent]) -> list[ReadyNode]:
        """代理已就绪的节点，换成调度轮看到的样子（容量、所属分区、代理身份、主机）。"""
        return [
            ReadyNode(
                NodeView(
                    n.node_id,
                    n.node_name,
                    n.total_cpus,
                    n.total_memory,
                    self.partitions.node_partitions(n.labels, n.resources),
                    gpus=n.total_gpus,
                    custom=n.gres,
                    features=n.features,
                    drain=n.draining,
                ),
                agents[n.node_id][1],
                n.host,
            )
            for n in nodes
            if n.node_id in agents
        ]

    # ---- 代理 ----

    def ensure_agents(self, nodes: list[RayNode]) -> dict[str, Agent]:
        """每个存活节点一个代理：缺的在后台取得或创建（不阻塞本轮），返回已就绪的。"""
        alive = {n.node_id for n in nodes}
        for node_id in list(self.agents):
            if node_id not in alive:
                log.debug("节点 %s 不再存活，丢弃其代理句柄", node_id)
                del self.agents[node_id]
        for node in nodes:
            # Ray 在排空的节点不再接受新的 worker：不在上面新建代理（已有的照常管着它的作业）
            if node.node_id in self.parked or node.draining:
                continue
            if node.node_id not in self.agents and node.node_id not in self.creating:
                task = asyncio.get_running_loop().create_task(self._add_agent(node))
                self.creating[node.node_id] = task
        return self.agents

    async def wait_created(self) -> None:
        """等后台正在取得或创建的代理（启动对账用：最多 AGENT_START_TIMEOUT 秒）。"""
        if self.creating:
            await asyncio.wait(list(self.creating.values()), timeout=AGENT_START_TIMEOUT)

    async def _add_agent(self, node: RayNode) -> None:
        try:
            entry = await self._get_or_create_agent(node)
        finally:
            self.creating.pop(node.node_id, None)
        if entry is not None:
            self.agents[node.node_id] = entry
            self.wake()  # 新节点可以接活了

    def forget_agent(self, node_id: str, handle: ray.actor.ActorHandle) -> None:
        """丢弃已退出的代理；期间该节点若已换上新代理，保留新的。"""
        entry = self.agents.get(node_id)
        if entry is not None and entry[0] == handle:
            del self.agents[node_id]

    async def _get_or_create_agent(self, node: RayNode) -> Agent | None:
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

    async def park_idle(
        self, nodes: list[RayNode], need: Need, in_flight: Collection[int], idle_for: float
    ) -> None:
        """自动扩缩容的集群里：代理占着一个 worker，Ray 就永远不认为节点空闲、不缩容。所以没有作业、也没有
        排队作业放得进的节点，空闲满 idle_for 秒后让其代理退出（停放）；有排队作业放得进或作业占着它时叫醒
        （下一轮 ensure_agents 重建代理）。调用者持有调度轮的锁：停放期间没有认领，派发途中的也要等它完成。"""
        alive = {n.node_id for n in nodes}
        self.parked &= alive
        wanted = {
            n.node_id
            for n in nodes
            if n.node_id in need.busy
            or any(
                demand.could_host(b, n.capacity, demand.declared_partitions(n.resources))
                for b in need.asked
            )
        }
        woken = self.parked & wanted
        if woken:
            self.parked -= woken
            log.info("有排队作业放得进停放的节点 %s：重建它们的代理", sorted(woken))
            self.wake()
        if in_flight or self.creating:
            return
        idle = [(i, h) for i, (h, _) in self.agents.items() if i in alive and i not in wanted]

        async def ask(handle: ray.actor.ActorHandle) -> bool:
            try:
                return bool(
                    await asyncio.wait_for(handle.retire.remote(idle_for), AGENT_HEALTH_TIMEOUT)
                )
            except Exception:  # noqa: BLE001 - 无响应或已退出：这次不停放，对账照常处理
                return False

        answers = await asyncio.gather(*(ask(h) for _, h in idle))
        for (node_id, handle), retired in zip(idle, answers, strict=True):
            if retired:
                self.forget_agent(node_id, handle)
                self.parked.add(node_id)
                ray.kill(handle, no_restart=True)
                log.info("节点 %s 空闲：代理已退出，Ray 可在空闲超时后回收该节点", node_id)

    async def adopt(self, node_id: str, handle: ray.actor.ActorHandle) -> AgentView | None:
        """向代理提高纪元栅栏并取回它手中的作业；无响应时返回 None（本轮不判定）。"""
        try:
            agent_id, jobs, health = await asyncio.wait_for(
                handle.adopt.remote(self.epoch), AGENT_TIMEOUT
            )
        except RayActorError as exc:
            log.warning("节点 %s 的代理已退出：%s", node_id, exc)
            self.forget_agent(node_id, handle)  # 下一轮为该节点创建新代理
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

    async def agents_health(self) -> dict[str, dict]:
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

    async def stop_all(self, reason: str, grace: float) -> int:
        """让各节点代理终止并记录全部作业，返回终止的个数。"""
        calls = [h.stop_all.remote(grace, reason) for h, _ in self.agents.values()]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return sum(r for r in results if isinstance(r, int))

    # ---- 孤儿进程 ----

    async def sweep(self, nodes: list[RayNode]) -> None:
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
            self.forget_agent(node_id, handle)
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


class Reconciler:
    """对账的执行：把数据库中占用资源的作业与各代理手中的比对（decide），写回（apply），再清理孤儿进程。

    in_flight：正在派发途中的作业（派发方更新的同一个集合），本轮不判定。"""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        fleet: Fleet,
        in_flight: Collection[int],
        metrics: SchedulerMetrics,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.fleet = fleet
        self.in_flight = in_flight
        self.metrics = metrics
        self.count = 0
        self.last_summary = ""

    async def run(self, startup: bool, agents_ready: Callable[[], None] | None = None) -> None:
        """对账一次。启动对账先等代理就绪（之后调用 agents_ready），并且向每个代理提高纪元栅栏。"""
        fleet = self.fleet
        nodes = await fleet.alive_nodes(max_age=0)
        fleet.ensure_agents(nodes)
        if startup:
            await fleet.wait_created()
            if agents_ready is not None:
                agents_ready()
        held = await asyncio.to_thread(load_held_jobs, self.engine)
        if not held and not startup:
            await fleet.sweep(nodes)
            return
        entries = list(fleet.agents.items())
        found = await asyncio.gather(*(fleet.adopt(node_id, h) for node_id, (h, _) in entries))
        views = {node_id: view for (node_id, _), view in zip(entries, found, strict=True)}
        plan = decide(
            held,
            {n.node_id for n in nodes},
            views,
            startup=startup,
            in_flight=self.in_flight,
            stranded_after=self.settings.stranded_after,
        )
        self.count += 1
        self.metrics.reconciled()
        log.debug(
            "对账：持有 %s；计划 %s", [(j.job_id, j.node_id[:8]) for j in held], plan.summary()
        )
        if startup or plan.changes_anything:
            self.last_summary = plan.summary()
            log.info(
                "对账（纪元 %s）：检查 %d 个占用资源的作业（RUNNING %d）；%s",
                fleet.epoch,
                len(held),
                sum(1 for j in held if j.state is JobState.RUNNING),
                self.last_summary,
            )
        if plan.changes_anything:
            freed = await asyncio.to_thread(apply, self.engine, plan)
            log.info("对账释放资源的作业：%s", freed)
            for host, tokens in orphan_tokens(plan, {n.node_id: n.host for n in nodes}).items():
                fleet.sweeps.setdefault(host, set()).update(tokens)
            fleet.wake()
        await fleet.sweep(nodes)
