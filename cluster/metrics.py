"""调度器 actor 内的 ray.util.metrics：关键数字随 Ray 自己的指标一起导出（各节点的指标端口），
在 Ray 仪表盘 / Grafana 里与集群指标放在一起看。

Prometheus 的 /metrics（api/metrics.py）从数据库现算；这里是调度器视角的同一批数字。
记录指标失败绝不影响调度。
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ray.util.metrics import Counter, Gauge, Histogram

from conductor.cycle import PassFigures
from conductor.resources import CPU, GPU, MEMORY

log = logging.getLogger("conductor.scheduler")

TAGS = ("namespace",)
GRES_TAGS = (*TAGS, "name")
NAMED = ((CPU, "cpus"), (GPU, "gpus"))
# Ray 的指标说明只接受 ASCII（中文会让指标创建失败），所以说明文字用英文
# 调度轮耗时的桶（秒）
PASS_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]


class SchedulerMetrics:
    """调度器的 Ray 指标；标签 namespace 区分同一 Ray 集群上的多个 Conductor。"""

    def __init__(self, namespace: str) -> None:
        self.tags = {"namespace": namespace}
        try:
            self.starts = Counter(
                "conductor_scheduler_starts", "Scheduler starts, restarts included", TAGS
            )
            self.passes = Counter("conductor_scheduler_passes", "Scheduling passes", TAGS)
            self.reconciliations = Counter("conductor_reconciliations", "Reconciliations", TAGS)
            self.launched = Counter("conductor_jobs_launched", "Jobs launched on node agents", TAGS)
            self.queue_depth = Gauge(
                "conductor_queue_head", "Pending jobs read at the queue head in the last pass", TAGS
            )
            # 有专名的资源各一对量表，其余通用资源共用一对、以标签 name 区分（同 /metrics）
            self.resources = {
                name: (
                    Gauge(f"conductor_{metric}_total", f"{name}s of alive nodes", TAGS),
                    Gauge(f"conductor_{metric}_allocated", f"{name}s allocated to jobs", TAGS),
                )
                for name, metric in NAMED
            }
            self.gres_total = Gauge(
                "conductor_gres_total", "Generic resources of alive nodes", GRES_TAGS
            )
            self.gres_allocated = Gauge(
                "conductor_gres_allocated", "Generic resources allocated to jobs", GRES_TAGS
            )
            self.epoch = Gauge("conductor_scheduler_epoch", "Epoch of the running scheduler", TAGS)
            self.pass_seconds = Histogram(
                "conductor_schedule_pass_seconds",
                "Duration of a scheduling pass in seconds",
                PASS_BUCKETS,
                TAGS,
            )
            self.ok = True
        except Exception as exc:  # noqa: BLE001 - 指标只是观测，不可用时调度照常
            log.warning("Ray 指标不可用：%s", exc)
            self.ok = False

    def _safe(self, action: Callable[[], None]) -> None:
        if not self.ok:
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001
            log.debug("记录 Ray 指标失败：%s", exc)

    def started(self, epoch: int) -> None:
        def record() -> None:
            self.starts.inc(1, self.tags)
            self.epoch.set(epoch, self.tags)

        self._safe(record)

    def reconciled(self) -> None:
        self._safe(lambda: self.reconciliations.inc(1, self.tags))

    def scheduled(self, seconds: float, figures: PassFigures) -> None:
        def record() -> None:
            self.passes.inc(1, self.tags)
            self.pass_seconds.observe(seconds, self.tags)
            for name, (total, allocated) in self.resources.items():
                total.set(figures.total[name], self.tags)
                allocated.set(figures.allocated[name], self.tags)
            # 通用资源只报节点声明过的与作业占着的；消失的资源停在最后的值，Ray 的量表不能删除标签
            for name in sorted({*figures.total, *figures.allocated} - {CPU, GPU, MEMORY}):
                tags = {**self.tags, "name": name}
                self.gres_total.set(figures.total[name], tags)
                self.gres_allocated.set(figures.allocated[name], tags)
            self.queue_depth.set(figures.queued, self.tags)
            if figures.placed:
                self.launched.inc(figures.placed, self.tags)

        self._safe(record)
