"""作业分配与作业步的展示（纯函数，查询、列表与命令行共用）：节点列表、节点数、CPU 总数、
TRES 总量，以及 sacct 那样的作业步（12.batch、12.0、12.1…）。

作业行里 CPU、内存、GPU、gres 都是每个节点的量；对外显示的分配是整个作业的（同 Slurm 的
AllocCPUS、AllocTRES），即每节点的量 × 节点数。
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conductor.hostlist import compress
from conductor.models import Job
from conductor.resources import Resources, format_tres
from conductor.slurm_output import convert_num_unit
from conductor.states import JobState
from conductor.timefmt import iso_utc


def node_names(job: Job) -> list[str]:
    """分配到的全部节点名（第一个是批处理节点）；尚未运行为空。旧行只有 node_name。"""
    if job.node_names:
        return list(job.node_names)
    return [job.node_name] if job.node_name else []


def node_list(job: Job) -> str:
    """Slurm 主机列表写法的节点列表（如 node[01-02]）；尚未运行为空串。"""
    names = node_names(job)
    return compress(names) if names else ""


def node_count(job: Job) -> int:
    """节点数：运行过的按分配计，排队中的按请求计。"""
    return len(node_names(job)) or job.nodes or 1


def total_cpus(job: Job) -> int:
    """整个作业的 CPU 数（每节点 CPU × 节点数）。"""
    return job.cpus * node_count(job)


def tres(job: Job, capacities: Mapping[str, Resources]) -> tuple[str, str]:
    """(请求的 TRES 串, 分配到的 TRES 串)，都是整个作业的总量；尚未运行时分配为空串。

    独占作业分到各节点的全部 CPU（capacities 为节点 id → 容量，节点已不在时按所请求的）。"""
    n = node_count(job)
    gres = {name: amount * n for name, amount in (job.gres or {}).items()}
    memory, gpus = job.memory_bytes * n, job.gpus * n
    requested = format_tres(job.cpus * n, memory, gpus, job.gpu_type, gres, nodes=n)
    if not job.node_id:
        return requested, ""
    ids = list(job.node_ids or [job.node_id])
    cpus = 0.0
    for node_id in ids:
        node = capacities.get(node_id)
        cpus += node.cpu if node and job.exclusive else job.cpus
    return requested, format_tres(cpus, memory, gpus, job.gpu_type, gres, nodes=len(ids))


def _step(
    job: Job, suffix: str, name: str | None, state: str, exit_code: str | None, **rest: Any
) -> dict[str, Any]:
    return {
        "step_id": f"{job.id}.{suffix}",
        "name": name,
        "state": state,
        "exit_code": exit_code,
        **rest,
    }


def _cpu_total(user: float | None, system: float | None) -> float | None:
    if user is None and system is None:
        return None
    return (user or 0.0) + (system or 0.0)


def step_usage(
    max_rss: int | None, ave_rss: int | None, user: float | None, system: float | None
) -> dict[str, Any]:
    """作业步的用量字段：原始数（字节、秒）与 sacct 的写法（MaxRSS、AveRSS 如 "100M"）；未测得为 None。"""
    return {
        "max_rss": None if max_rss is None else convert_num_unit(max_rss),
        "ave_rss": None if ave_rss is None else convert_num_unit(ave_rss),
        "max_rss_bytes": max_rss,
        "ave_rss_bytes": ave_rss,
        "user_cpu_seconds": user,
        "system_cpu_seconds": system,
        "total_cpu_seconds": _cpu_total(user, system),
    }


def total_cpu_seconds(job: Job, recorded: Sequence[Mapping[str, Any]]) -> float | None:
    """作业的 TotalCPU（同 sacct 作业行）：批处理步与各作业步的 CPU 时间之和；都没测得为 None。"""
    parts = [_cpu_total(job.user_cpu_seconds, job.system_cpu_seconds)]
    parts += [_cpu_total(r.get("user_cpu_seconds"), r.get("system_cpu_seconds")) for r in recorded]
    known = [p for p in parts if p is not None]
    return sum(known) if known else None


def steps(job: Job, recorded: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """sacct 那样的作业步：先是由作业行推出的 12.batch（开始运行过才有），再是记下的 12.0、12.1…

    批处理步的状态即作业的（超时的作业被终止，批处理步同 Slurm 记为 CANCELLED），节点为批处理节点。"""
    if job.start_time is None:
        return []
    state = JobState(job.state)
    batch_state = JobState.CANCELLED if state is JobState.TIMEOUT else state
    names = node_names(job)
    shown = [
        _step(
            job,
            "batch",
            "batch",
            batch_state.value,
            job.exit_code,
            start_time=iso_utc(job.start_time),
            end_time=iso_utc(job.end_time),
            node_list=names[0] if names else "",
            ntasks=1,
            # 批处理步只有一个任务：平均即峰值
            **step_usage(
                job.max_rss_bytes, job.max_rss_bytes, job.user_cpu_seconds, job.system_cpu_seconds
            ),
        )
    ]
    for r in recorded:
        shown.append(
            _step(
                job,
                str(r["step_id"]),
                r.get("name"),
                r["state"],
                r.get("exit_code"),
                start_time=iso_utc(r.get("start_time")),
                end_time=iso_utc(r.get("end_time")),
                node_list=r.get("node_list") or "",
                ntasks=r.get("ntasks"),
                **step_usage(
                    r.get("max_rss_bytes"),
                    r.get("ave_rss_bytes"),
                    r.get("user_cpu_seconds"),
                    r.get("system_cpu_seconds"),
                ),
            )
        )
    return shown
