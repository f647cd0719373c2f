"""派发：把认领到的作业行变成执行规格，按节点交给代理（后台进行）；派发失败时重新排队或判 FAILED。

代理持有每个作业直到结局写入：结果不明的派发交给对账判定（cluster/reconcile.py）。
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from sqlalchemy.engine import Engine

from cluster.fleet import Agent, Fleet
from conductor.cycle import ReadyNode
from conductor.db import session_scope
from conductor.jobspec import JobSpec
from conductor.settings import Settings
from conductor.states import JobState
from conductor.store import transitions
from conductor.store.transitions import Outcome

log = logging.getLogger("conductor.scheduler")

# 等待派发应答的上限：超时后不再算“派发途中”，由对账按代理是否持有来判定
LAUNCH_TIMEOUT = 60.0


class Dispatcher:
    """in_flight：正在派发途中的作业 id，对账本轮不判定它们。wake：被拒或派发失败后唤醒调度循环。"""

    def __init__(
        self, engine: Engine, settings: Settings, fleet: Fleet, wake: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.fleet = fleet
        self.wake = wake
        self.in_flight: set[int] = set()
        self.launches: set[asyncio.Task[None]] = set()

    async def dispatch(
        self,
        claimed: list[dict[str, Any]],
        agents: Mapping[str, Agent],
        nodes: Sequence[ReadyNode],
    ) -> None:
        """agents 为认领时的同一份句柄快照：认领记下的代理身份与派发所用的句柄必须出自同一份。"""
        node_cpus = {n.view.node_id: int(n.view.total_cpus) for n in nodes}
        node_memory = {n.view.node_id: int(n.view.total_memory) for n in nodes}
        # 多节点作业的各节点份额由此算出（独占、--mem=0 取节点的全部）
        members = {i: (node_cpus[i], node_memory[i]) for i in node_cpus}
        by_node: dict[str, list[JobSpec]] = defaultdict(list)
        unbuildable: list[Outcome] = []
        for row in claimed:
            try:
                spec = JobSpec.from_row(
                    row,
                    token=row["token"],
                    kill_wait=self.settings.kill_wait,
                    node_cpus=node_cpus.get(row["node_id"]),
                    node_memory=node_memory.get(row["node_id"]),
                    members=members,
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

    async def _launch(
        self, node_id: str, handle: ray.actor.ActorHandle, specs: list[JobSpec]
    ) -> None:
        ids = [s.job_id for s in specs]
        try:
            accepted = set(
                await asyncio.wait_for(
                    handle.launch.remote(specs, self.fleet.epoch), LAUNCH_TIMEOUT
                )
            )
        except RayActorError as exc:
            # 代理在派发途中死亡：任务（若已提交）随之死亡，下一次对账判定
            log.warning("向节点 %s 派发作业 %s 失败：%s", node_id, ids, exc)
            self.fleet.forget_agent(node_id, handle)
            self.wake()
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
        view = await self.fleet.adopt(node_id, handle)
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
