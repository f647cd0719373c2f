"""把队列的需求交给 Ray 的自动扩缩容器（`ray.autoscaler.sdk.request_resources`）。

份额怎么算在 conductor/demand.py（纯函数）；这里读数据库、取节点的分区声明、只在请求变了时发出。
请求在 GCS 里一直有效，直到下一次调用覆盖它：队列空了发空请求，即撤回。没有自动扩缩容器的集群
（本地 Ray、固定节点）里没人读它，无害。
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ray.autoscaler.sdk import request_resources
from sqlalchemy.engine import Engine

from cluster.nodes import RayNode
from conductor import demand, node_types
from conductor.account_limits import limit_for
from conductor.db import session_scope
from conductor.settings import Settings
from conductor.store import queue

log = logging.getLogger("conductor.autoscale")


def _types_declare_memory(settings: Settings) -> bool:
    """集群配置里的节点类型不写内存时，请求也不带内存（否则哪种类型都对不上）；没有配置时照常带。"""
    path = node_types.cluster_config(settings.autoscaler_config)
    if path is None:
        return True
    try:
        config = node_types.load_config(path)
    except ValueError as exc:
        log.warning("%s；扩容请求照常带内存", exc)
        return True
    if node_types.declares_memory(config):
        return True
    log.info("%s 的节点类型没有写内存：对自动扩缩容器的请求不带内存", path)
    return False


@dataclass(frozen=True)
class Need:
    """一次计算的结果：排队作业的份额（只缺容量的）与运行中作业占着的节点。节点停放（parking.py）也看它。"""

    asked: list[demand.Bundle] = field(default_factory=list)
    busy: frozenset[str] = frozenset()


class AutoscaleRequest:
    """调度器里唯一的请求者：记住上次发出的份额，没变就不再发。"""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.partitions = settings.partition_table()
        self.with_memory = _types_declare_memory(settings)
        self.sent: list[demand.Bundle] | None = None
        self.pending = 0  # 上次请求里排队作业的份数（观测用）

    def compute(self, nodes: Sequence[RayNode]) -> tuple[list[demand.Bundle], Need]:
        """本轮的请求（运行中的加排队的份额）与需求；排队的为零时整个请求为空。"""
        cap = self.settings.autoscale_max_bundles
        with session_scope(self.engine) as session:
            running = queue.load_running(session)
            pending = queue.load_pending(session, dict.fromkeys(self.partitions.names, cap), [], [])
        busy = frozenset(i for job in running for i in (job.node_ids or (job.node_id,)))
        # 0 个 CPU 的节点（头节点）不跑作业：它什么都没声明而归入默认分区，不能因此让默认分区的份额不带 partition:<名>
        workers = [n for n in nodes if n.total_cpus > 0]
        fixed = demand.fixed_partitions(self.partitions, ((n.labels, n.resources) for n in workers))
        asked = demand.pending_bundles(
            pending,
            running,
            lambda account: limit_for(self.settings.account_limits, account),
            self.partitions.exceeds_max,
            fixed,
            cap,
        )
        if not self.with_memory:
            asked = [{k: v for k, v in b.items() if k != "memory"} for b in asked]
        need = Need(asked, busy)
        if not asked:
            return [], need
        by_node = {n.node_id: demand.declared_partitions(n.resources) for n in nodes}
        bundles = demand.running_bundles(running, by_node)
        if not self.with_memory:
            bundles = [{k: v for k, v in b.items() if k != "memory"} for b in bundles]
        return bundles + asked, need

    def refresh(self, nodes: Sequence[RayNode]) -> Need:
        """重算并在变了时发出，返回需求（在线程里调用：读数据库、写 GCS 都是阻塞的）。"""
        if self.settings.autoscale_max_bundles == 0:
            return Need()
        bundles, need = self.compute(nodes)
        if bundles != self.sent:
            request_resources(bundles=bundles)
            if need.asked:
                log.info(
                    "向 Ray 自动扩缩容器请求 %d 份排队作业的资源（连同运行中的共 %d 份）",
                    len(need.asked),
                    len(bundles),
                )
            elif self.sent:
                log.info("队列里没有只缺容量的作业：撤回对 Ray 自动扩缩容器的资源请求")
            self.sent, self.pending = bundles, len(need.asked)
        return need
