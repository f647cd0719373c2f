"""GET /metrics：Prometheus 文本格式的指标（新增接口）。

每次抓取时从数据库读：作业按状态计数、排队深度、提交→开始延迟直方图来自触发器维护的计数
（conductor/stats.py，数据库是唯一的事实来源，API 重启也不丢；不扫描 jobs 表——这个接口不需要
令牌，代价必须与历史作业的多少无关），CPU、GPU 与通用资源的占用只读仍占用资源的作业（部分索引），
调度器重启次数来自纪元表；资源总数来自存活的 Ray 节点；调度轮与对账次数来自调度器 actor 的 status()。
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from itertools import accumulate

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from api.deps import RuntimeDep
from api.runtime import Runtime
from conductor.db import session_scope
from conductor.errors import ConductorError
from conductor.resources import CPU, GPU, MEMORY, NONE, Resources
from conductor.states import JobState
from conductor.stats import LATENCY_BUCKETS, job_figures
from conductor.store import jobs as job_store
from conductor.store import metrics as metric_store

router = APIRouter()
log = logging.getLogger("conductor.api")

# 没人抓取 /metrics 时也定期合并计数的增量，job_stats 不会一直变大
COMPACT_PERIOD = 60.0


async def compact_periodically(rt: Runtime) -> None:
    """API 进程的后台任务：每 COMPACT_PERIOD 秒合并一次计数增量；数据库不可用时下次再试。"""
    while True:
        await asyncio.sleep(COMPACT_PERIOD)
        try:
            await asyncio.to_thread(_compact, rt)
        except ConductorError as exc:
            log.warning("合并作业计数失败（下次再试）：%s", exc.message)
        except Exception:  # noqa: BLE001 - 后台任务不能因为一次失败就停止
            log.exception("合并作业计数失败（下次再试）")


def _compact(rt: Runtime) -> None:
    with session_scope(rt.engine) as session:
        metric_store.compact(session)


class ConductorCollector(Collector):
    """抓取时从数据库与调度器读取数字。"""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        rt = self.rt
        with session_scope(rt.engine) as session:
            figures = job_figures(session)
            held = job_store.held_by_node(session)
            starts = metric_store.scheduler_starts(session)

        counts = figures.counts
        jobs = GaugeMetricFamily("conductor_jobs", "各状态的作业数", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            "conductor_queue_depth", "排队（PENDING）的作业数", value=counts.get("PENDING", 0)
        )
        cumulative = list(accumulate(figures.latency_buckets))
        yield HistogramMetricFamily(
            "conductor_submit_to_start_seconds",
            "作业从提交到开始运行的秒数",
            buckets=[
                *((str(b), n) for b, n in zip(LATENCY_BUCKETS, cumulative, strict=False)),
                ("+Inf", figures.started),
            ],
            sum_value=figures.latency_sum,
        )
        try:
            alive = [n for n in rt.cluster.nodes() if n.alive]
        except Exception:  # noqa: BLE001 - Ray 不可达时仍输出数据库里的指标
            alive = []
        total = sum((n.capacity for n in alive), NONE)
        allocated = sum((held.get(n.node_id, NONE) for n in alive), NONE)
        yield from resource_gauges(total, allocated)
        yield GaugeMetricFamily("conductor_nodes_alive", "存活的 Ray 节点数", value=len(alive))
        yield CounterMetricFamily(
            "conductor_scheduler_restarts",
            "调度器重启次数（首次启动不计；每次启动领取一个纪元）",
            value=max(0, int(starts) - 1),
        )
        try:
            status = rt.cluster.scheduler_status(timeout=2.0)
        except Exception:  # noqa: BLE001 - 调度器不可用本身就是要报告的指标
            status = None
        yield GaugeMetricFamily(
            "conductor_scheduler_up", "调度器 actor 是否应答（1/0）", value=1 if status else 0
        )
        if status:
            yield GaugeMetricFamily(
                "conductor_scheduler_epoch", "当前调度器的纪元", value=status["epoch"]
            )
            yield CounterMetricFamily(
                "conductor_reconciliations",
                "当前调度器实例完成的对账次数（调度器重启后从零开始）",
                value=status.get("reconciliations", 0),
            )
            yield CounterMetricFamily(
                "conductor_scheduler_passes",
                "当前调度器实例完成的调度轮数（调度器重启后从零开始）",
                value=status.get("passes", 0),
            )


# 有专名的资源：Prometheus 的指标名；其余通用资源共用 conductor_gres_*，以标签 name 区分
NAMED = ((CPU, "cpus", "CPU"), (GPU, "gpus", "GPU"))


def resource_gauges(total: Resources, allocated: Resources) -> Iterator[Metric]:
    """存活节点的资源总数与已分配量：CPU、GPU 与各通用资源同一种算法（内存不导出，与 /dashboard 一致）。"""
    for name, metric, label in NAMED:
        yield GaugeMetricFamily(
            f"conductor_{metric}_total", f"存活节点的 {label} 总数", value=total[name]
        )
        yield GaugeMetricFamily(
            f"conductor_{metric}_allocated",
            f"存活节点上已分配给作业的 {label} 数",
            value=allocated[name],
        )
    names = sorted({*total, *allocated} - {CPU, GPU, MEMORY})
    gres_total = GaugeMetricFamily(
        "conductor_gres_total", "存活节点的各通用资源总数（GPU 除外）", labels=["name"]
    )
    gres_allocated = GaugeMetricFamily(
        "conductor_gres_allocated", "存活节点上已分配给作业的各通用资源数量", labels=["name"]
    )
    for name in names:
        gres_total.add_metric([name], total[name])
        gres_allocated.add_metric([name], allocated[name])
    yield gres_total
    yield gres_allocated


def registry_for(request: Request, rt: Runtime) -> CollectorRegistry:
    """每个应用一个注册表（测试里同一进程有多个应用，不能共用全局注册表）。"""
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ConductorCollector(rt))
        request.app.state.metrics_registry = registry
    return registry


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus 指标",
    responses={
        200: {
            "description": "Prometheus 文本格式",
            "content": {
                CONTENT_TYPE_LATEST: {
                    "example": '# HELP conductor_jobs 各状态的作业数\n# TYPE conductor_jobs gauge\nconductor_jobs{state="RUNNING"} 3.0\n'
                }
            },
        }
    },
)
def metrics(request: Request, rt: RuntimeDep) -> Response:
    """Prometheus 抓取端点：作业、队列、延迟、CPU/GPU/通用资源、对账与调度器重启。"""
    return Response(generate_latest(registry_for(request, rt)), media_type=CONTENT_TYPE_LATEST)
