"""升级 Conductor 时替换集群里的常驻 actor，而不终止运行中的作业（`conductor retire-actors`）。

实测（Ray 2.60）：actor 的代码在创建时导出到 GCS，Ray 重启它（max_restarts）时沿用那份旧代码，
而不是磁盘上新安装的代码。所以升级后，调度器必须被永久停止，再由新的 API 进程用新代码重建；
节点代理持有作业任务（任务随所有者死亡），只有手里没有作业的代理可以替换，
忙碌的代理继续以旧代码运行，直到下一次在空闲时被替换。
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.names import AGENT_PREFIX, SCHEDULER_NAME
from cluster.reconcile import load_held_jobs
from conductor.db import make_engine
from conductor.settings import Settings


@dataclass
class RetireReport:
    """retire_actors 做了什么。"""

    scheduler_stopped: bool = False
    # 已退役（空闲）代理所在的节点 id
    retired: list[str] = field(default_factory=list)
    # 仍在运行作业、因而保留的代理：节点 id → 作业 id
    kept: dict[str, list[int]] = field(default_factory=dict)


def retire_actors(settings: Settings, timeout: float = 10.0) -> RetireReport:
    """永久停止调度器，再停止空闲的节点代理。调用者已连接 Ray。

    先停调度器：此后不再有新的认领与派发，“空闲”的判断不会被新派发推翻。
    代理空闲 = 它手里没有作业，且数据库里没有该节点上仍占用资源的作业
    （已认领、派发却尚未送达的作业也算占用，留给新调度器的启动对账处理）。
    无应答的代理保留（无法确认它空闲）。
    """
    report = RetireReport()
    try:
        scheduler = ray.get_actor(SCHEDULER_NAME, namespace=settings.namespace)
    except ValueError:
        scheduler = None
    if scheduler is not None:
        ray.kill(scheduler, no_restart=True)
        _wait_dead(scheduler, timeout)
        report.scheduler_stopped = True

    held = _held_jobs(settings)
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != settings.namespace or not entry["name"].startswith(AGENT_PREFIX):
            continue
        node_id = entry["name"][len(AGENT_PREFIX) :]
        try:
            agent = ray.get_actor(entry["name"], namespace=settings.namespace)
            _, running = ray.get(agent.holding.remote(), timeout=timeout)
        except (ValueError, RayActorError):
            continue  # 代理已不存在
        except GetTimeoutError:
            report.kept[node_id] = held.get(node_id, [])
            continue
        if running or held.get(node_id):
            report.kept[node_id] = sorted(set(running) | set(held.get(node_id, [])))
            continue
        ray.kill(agent, no_restart=True)
        report.retired.append(node_id)
    return report


def _wait_dead(handle: ray.actor.ActorHandle, timeout: float) -> None:
    """ray.kill 只是发出请求：等到 actor 确实不再应答，才能相信不会再有新的派发。"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(handle.status.remote(), timeout=1)
        except RayActorError:
            return
        except GetTimeoutError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"调度器在 {timeout} 秒内没有停止")


def _held_jobs(settings: Settings) -> dict[str, list[int]]:
    """各节点上仍占用资源的作业 id。"""
    engine = make_engine(settings.database_url or "", pool_size=1)
    try:
        held: dict[str, list[int]] = defaultdict(list)
        for job in load_held_jobs(engine):
            held[job.node_id].append(job.job_id)
        return dict(held)
    finally:
        engine.dispose()
