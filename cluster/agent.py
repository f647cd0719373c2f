"""节点代理：每个节点一个常驻（detached）actor，拥有本节点上作业的 Ray 任务。

Ray 中任务随其所有者一起死亡；让代理而不是调度器持有任务，
调度器就可以随时崩溃重启而不影响正在运行的作业。
代理记住每个作业直到其终态写入 PostgreSQL，因此“代理存活却不认识某作业”
意味着该作业从未交到它手里（或已记录终态）——对账据此判断能否重新排队。

这里只是 actor 的外壳：执行的启动与监视在 runs，结局的上报在 reporter，上任时的补记与清理在
takeover，数据库线程在 agent_db。
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from cluster.agent_db import AgentDb
from cluster.names import SCHEDULER_NAME, agent_name
from cluster.reporter import Reporter
from cluster.runs import Run, start_run, stop_run
from cluster.takeover import collect_results, sweep_orphans
from conductor.jobspec import JobSpec
from conductor.logtail import owner_uid, read_range, read_tail
from conductor.proctree import kill_job_tree_async, signal_scope
from conductor.settings import Settings
from conductor.store import lost_cancels, steps
from conductor.store.transitions import Outcome

log = logging.getLogger("conductor.agent")

# 一条作业步记录最多重试写入这么久（数据库不可用时）
STEP_RECORD_TIMEOUT = 60.0
# 等其他节点的代理发完信号最多这么久
SIGNAL_TIMEOUT = 10.0


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1000)
class NodeAgent:
    """本节点作业任务的所有者：启动、监视、终止作业并上报结局。"""

    def __init__(self, settings: Settings, node_id: str, epoch: int) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.node_id = node_id
        self.agent_id = uuid.uuid4().hex
        self.min_epoch = epoch
        self.db = AgentDb(settings.database_url or "")
        self.runs: dict[int, Run] = {}
        self.cancelling: set[asyncio.Task[bool]] = set()
        self.scheduler: ray.actor.ActorHandle | None = None
        self.reporter = Reporter(
            self.db, settings.idle_resync, resync=self._kill_cancelled, recorded=self._forget
        )
        self.host = ray.util.get_node_ip_address()
        # 最近一次接活或交掉作业的时刻；retired 之后不再接活（调度器随即 ray.kill 它）
        self.last_busy = time.monotonic()
        self.retired = False
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
        return {
            "agent_id": self.agent_id,
            "node_id": self.node_id,
            "pid": os.getpid(),
            "ready": self.ready.is_set(),
            "jobs": len(self.runs),
            "reporter": self.reporter.summary(),
        }

    async def adopt(self, epoch: int) -> tuple[str, list[int], dict[str, Any]]:
        """调度器对账：提高纪元栅栏，返回 (代理身份, 仍在手中的作业, 健康)。"""
        self.min_epoch = max(self.min_epoch, epoch)
        return self.agent_id, sorted(self.runs), self.health()

    async def sweep(self, tokens: list[str]) -> None:
        """清理随旧代理死亡的作业留下的孤儿进程。"""
        await asyncio.gather(*(kill_job_tree_async(t, grace=0) for t in tokens))

    async def reap(self, token: str) -> None:
        """多节点作业结束：杀掉它在本节点留下的进程（作业步的任务及其后台子孙）。"""
        await kill_job_tree_async(token, grace=0)

    async def signal_local(self, token: str, sig: int, scope: str) -> int:
        """本节点上按范围给作业的进程发信号（scope 见 proctree.signal_scope），返回收到的进程数。"""
        return await asyncio.to_thread(signal_scope, token, sig, scope)

    async def signal_job(self, job_id: int, sig: int, batch: bool, full: bool) -> int | None:
        """给手中运行的作业发信号而不终止它（scancel --signal、--signal）：默认发给全部节点上作业步的
        任务，batch 只发给批处理 shell（在本节点），full 发给全部节点上作业的全部进程。
        作业不在手中（未运行、已结束或正在停止）时 None；否则返回收到信号的进程数。"""
        run = self.runs.get(job_id)
        if run is None or run.stopping:
            return None
        token = run.spec.token
        scope = "full" if full else "batch" if batch else "steps"
        sent = await self.signal_local(token, sig, scope)
        if scope == "batch":
            return sent
        calls = []
        for member in run.spec.allocation[1:]:
            try:
                peer = ray.get_actor(agent_name(member.node_id), namespace=self.settings.namespace)
            except ValueError:
                continue  # 节点或其代理已不在：那里的任务随节点而去
            calls.append(asyncio.wrap_future(peer.signal_local.remote(token, sig, scope).future()))
        if calls:
            done, _ = await asyncio.wait(calls, timeout=SIGNAL_TIMEOUT)
            for fut in done:
                if fut.exception() is None:
                    sent += fut.result()
                else:
                    log.warning("作业 %s：其他节点发信号失败：%s", job_id, fut.exception())
        log.info("作业 %s：信号 %s（%s）送达 %s 个进程", job_id, sig, scope, sent)
        return sent

    async def record_step(self, job_id: int, token: str, kind: str, *args: Any) -> None:
        """作业内步服务的记录：kind 为 start（步号、名称、任务数、节点列表）或 finish（步号、状态、
        退出码、用量）。写不进去只记日志：作业步记录不能拖住作业本身。"""
        fn = steps.start_step if kind == "start" else steps.finish_step
        try:
            await asyncio.wait_for(
                self.db.run_retrying(fn, job_id, token, *args), STEP_RECORD_TIMEOUT
            )
        except Exception as exc:  # noqa: BLE001
            log.warning("作业 %s 的作业步记录（%s %s）写入失败：%s", job_id, kind, args[:1], exc)

    async def _take_office(self) -> None:
        try:
            await collect_results(self.db, self.reporter)
        except Exception:  # noqa: BLE001 - 补记只是兜底，失败也要开始工作
            log.exception("补记前任留下的结局失败")
        finally:
            self.ready.set()
        await sweep_orphans(self.db, self.node_id, self.host, self.agent_id)

    def retire(self, idle_for: float) -> bool:
        """自动扩缩容的集群里调度器停放空闲节点的代理（fleet.py）：手中没有作业、上任已完成、空闲满
        idle_for 秒才答应，答应之后拒绝一切派发。代理本身占着一个 worker，它在，Ray 就不认为节点空闲。"""
        if self.runs or self.cancelling or not self.starting.done():
            return False
        if time.monotonic() - self.last_busy < idle_for:
            return False
        self.retired = True
        log.info("节点空闲 %.0f 秒：代理退出，节点可由自动扩缩容器回收", idle_for)
        return True

    async def launch(self, specs: list[JobSpec], epoch: int) -> list[int]:
        """启动作业任务（绑定本节点）。过期纪元的派发被拒绝，返回被接受的作业 id。"""
        if self.retired:
            log.warning("代理已答应退出，拒绝派发：%s", [s.job_id for s in specs])
            return []
        self.last_busy = time.monotonic()
        if epoch < self.min_epoch:
            log.warning(
                "拒绝过期调度器（纪元 %s < %s）的派发：%s",
                epoch,
                self.min_epoch,
                [s.job_id for s in specs],
            )
            return []
        accepted = []
        for spec in specs:
            if spec.job_id not in self.runs:  # 已在手中的是重复派发（消息重发）：已在运行
                self.runs[spec.job_id] = start_run(
                    spec,
                    self.node_id,
                    self.settings.launch_timeout,
                    self.reporter.submit,
                    ray.get_runtime_context().current_actor,
                    self.settings.namespace,
                )
            accepted.append(spec.job_id)
        return accepted

    async def cancel(self, job_id: int) -> bool:
        """终止一个作业的整棵进程树：SIGTERM → 宽限 → SIGKILL。"""
        run = self.runs.get(job_id)
        if run is None or run.stopping:
            return False
        log.info("取消作业 %s：终止其进程树", job_id)
        await stop_run(run, self.settings.kill_wait)
        return True

    async def stop_all(self, grace: float, reason: str, timeout: float = 30.0) -> int:
        """服务关闭（本地 Ray 即将停止）：终止本节点全部作业，等到结局写入数据库。"""
        runs = list(self.runs.values())
        for r in runs:
            r.stop_reason = reason
        await asyncio.gather(*(stop_run(r, grace) for r in runs if not r.stopping))
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

    async def _kill_cancelled(self) -> None:
        """兜底：取消（或重新排队）的消息丢失时，从数据库发现已取消、已重新排队但仍在运行的作业并终止。"""
        live = [(j, r.spec.token) for j, r in self.runs.items() if not r.stopping]
        if not live:
            return
        try:
            cancelled = await self.db.run(lost_cancels.stale_among, live)
        except Exception as exc:  # noqa: BLE001 - 数据库暂不可用时下次再查
            log.warning("检查已取消作业失败：%s", exc)
            return
        for job_id in cancelled:
            # 不在这里等宽限期结束：上报循环不能被一次取消拖住
            task = asyncio.get_running_loop().create_task(self.cancel(job_id))
            self.cancelling.add(task)
            task.add_done_callback(self.cancelling.discard)

    def _forget(self, outcomes: list[Outcome]) -> None:
        """结局已写入数据库：忘记这些作业，并让调度器立刻用上释放的资源。"""
        for o in outcomes:
            self.runs.pop(o.job_id, None)
        self.last_busy = time.monotonic()
        try:
            if self.scheduler is None:
                self.scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.settings.namespace)
            self.scheduler.wake.remote()
        except Exception:  # noqa: BLE001 - 调度器正在重启：它启动时会自行对账
            self.scheduler = None
