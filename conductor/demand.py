"""告诉 Ray 自动扩缩容器队列需要什么（纯函数）：运行中作业与只缺容量的排队作业的资源份额（bundle）。

Ray 的 `request_resources(bundles=…)` 按节点的**总**容量装箱（不扣除正在用的），装不下的部分才起新节点；
所以请求里既有排队作业，也有运行中的作业（各占它所在的节点），否则集群占满时排队作业看起来“装得下”。
被请求覆盖的节点也不会被空闲缩容删掉。

规则：
- 只有“只缺容量”的排队作业才要节点：依赖未满足、被挂起的不在队列读取里；超过账户上限、数组 %N、
  分区时限的（按运行中的加上已请求的作业计）跳过；-w 点名节点的跳过（新节点不会叫那个名字）。
- 分区对应节点类型：份额里带 `partition:<名>`（YAML 的节点类型声明它，每节点 1 个）。单节点作业只占
  极小一份，可以与别的作业装进同一台；多节点作业的每个节点份额与 --exclusive 占满整个 `partition:<名>`，
  保证它们各得一台不同的节点。分区的节点是用标签或什么都不写归入的（固定节点，不是按类型扩容的），
  份额里就不带它，否则 Ray 会为它起一台永远不需要的节点。
- 请求按队列顺序截到 cap 份（排队部分）；队列空了请求为空，即撤回。
- GPU 型号（gpu:a100:1）不在请求里：Ray 节点类型的型号资源名大小写随云厂商而定。需要按型号扩容时，
  每种型号一个分区。
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from conductor.account_limits import AccountLimit
from conductor.partitions import PARTITION_RESOURCE, PartitionTable
from conductor.placement import PendingJob, RunningJob
from conductor.reasons import Usage, blocked

# 单节点作业在 partition:<名> 上占的份额：Ray 资源的最小粒度是 0.0001，这里留一个数量级的余地
SHARE = 0.001
WHOLE = 1.0

Bundle = dict[str, float]


def _shape(
    cpus: float, memory: int, whole_memory: bool, gpus: float, gres: Mapping[str, float]
) -> Bundle:
    bundle: Bundle = {"CPU": float(cpus)}
    if memory > 0 and not whole_memory:
        bundle["memory"] = float(memory)
    if gpus:
        bundle["GPU"] = float(gpus)
    bundle.update({name: float(amount) for name, amount in gres.items()})
    return bundle


def running_bundles(
    running: Sequence[RunningJob], node_partitions: Mapping[str, Sequence[str]]
) -> list[Bundle]:
    """运行中作业在每个所占节点上的份额。node_partitions：节点 → 它以资源声明的分区名（份额带上同样的
    partition:<名>，于是装回同一种节点）；不在其中的节点（已失联）不计。"""
    bundles = []
    for job in running:
        for node_id in job.node_ids:
            if node_id not in node_partitions:
                continue
            bundle = _shape(job.cpus, job.memory_bytes, job.whole_node_memory, job.gpus, job.gres)
            share = WHOLE if job.exclusive or job.nodes > 1 else SHARE
            for name in node_partitions[node_id]:
                bundle[PARTITION_RESOURCE + name] = share
            bundles.append(bundle)
    return bundles


def pending_bundles(
    pending: Sequence[PendingJob],
    running: Sequence[RunningJob],
    limit_for: Callable[[str], AccountLimit],
    exceeds_partition_max: Callable[[str, int | None], bool],
    fixed_partitions: frozenset[str],
    cap: int,
) -> list[Bundle]:
    """队列顺序（pending 已排好）的排队作业里只缺容量的，每个节点一份，至多 cap 份。

    fixed_partitions：节点以标签或默认归入的分区，份额里不带 partition:<名>。"""
    usage = Usage()
    for r in running:
        usage.add(r.account, r.cpus * r.nodes, r.array_job_id, r.gpus * r.nodes)
    bundles: list[Bundle] = []
    for job in pending:
        if len(bundles) + job.nodes > cap:
            break
        if job.required_nodes:
            continue
        reason = blocked(
            None if job.runnable else "held",
            exceeds_partition_max(job.partition, job.time_limit),
            limit_for(job.account),
            usage,
            job.account,
            job.cpus * job.nodes,
            job.array_job_id,
            job.array_max_running,
            gpus=job.gpus * job.nodes,
        )
        if reason is not None:
            continue
        usage.add(job.account, job.cpus * job.nodes, job.array_job_id, job.gpus * job.nodes)
        share = WHOLE if job.exclusive or job.nodes > 1 else SHARE
        for _ in range(job.nodes):
            bundle = _shape(job.cpus, job.memory_bytes, job.whole_node_memory, job.gpus, job.gres)
            if job.partition not in fixed_partitions:
                bundle[PARTITION_RESOURCE + job.partition] = share
            bundles.append(bundle)
    return bundles


def declared_partitions(resources: Iterable[str]) -> list[str]:
    """节点以自定义资源 partition:<名> 声明的分区（自动扩缩容按节点类型的这种资源选类型）。"""
    return sorted(
        r.removeprefix(PARTITION_RESOURCE) for r in resources if r.startswith(PARTITION_RESOURCE)
    )


def fixed_partitions(
    table: PartitionTable, nodes: Iterable[tuple[Mapping[str, str], Sequence[str]]]
) -> frozenset[str]:
    """有节点以标签或默认（什么都没声明）归入的分区：nodes 为各存活节点的（标签，资源名）。"""
    fixed: set[str] = set()
    for labels, resources in nodes:
        fixed |= table.node_partitions(labels, resources) - set(declared_partitions(resources))
    return frozenset(fixed)


def could_host(
    bundle: Mapping[str, float], capacity: Mapping[str, float], partitions: Iterable[str]
) -> bool:
    """份额放得进这个节点的总容量：partition:<名> 看节点以资源声明的分区，其余逐项比总量。
    自动扩缩容的集群里，停放了代理的空闲节点据此被叫醒（cluster/fleet.py）。"""
    declared = set(partitions)
    for name, amount in bundle.items():
        if name.startswith(PARTITION_RESOURCE):
            if name.removeprefix(PARTITION_RESOURCE) not in declared:
                return False
        elif capacity.get(name, 0.0) < amount:
            return False
    return True
