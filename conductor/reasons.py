"""等待原因（Slurm 的 Reason 名称）的唯一推导：调度策略与 API 查询都从这里得出。

不看资源就能判定的原因依次是：挂起、依赖、分区时限、账户上限（作业数、CPU、GPU）与数组 %N；
看节点的 Resources / Priority / ReqNodeNotAvail 只有调度策略（policy.plan）知道，名称也在这里。
纯函数，不碰数据库。
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from conductor.account_limits import (
    ARRAY_TASK_LIMIT,
    ASSOC_GRP_CPU,
    ASSOC_GRP_GRES,
    ASSOC_MAX_JOBS,
    AccountLimit,
    limit_reason,
)
from conductor.dependencies import DepState

HELD = "JobHeldUser"
DEPENDENCY = "Dependency"
DEPENDENCY_NEVER = "DependencyNeverSatisfied"
PARTITION_TIME_LIMIT = "PartitionTimeLimit"
# 只有调度策略判定的三种：在等资源的分区队首、排在队首之后、-w/-x/-C 筛掉了分区的全部节点
RESOURCES = "Resources"
PRIORITY = "Priority"
REQ_NODE_NOT_AVAIL = "ReqNodeNotAvail"

__all__ = [
    "ARRAY_TASK_LIMIT",
    "ASSOC_GRP_CPU",
    "ASSOC_GRP_GRES",
    "ASSOC_MAX_JOBS",
    "DEPENDENCY",
    "DEPENDENCY_NEVER",
    "HELD",
    "PARTITION_TIME_LIMIT",
    "PRIORITY",
    "REQ_NODE_NOT_AVAIL",
    "RESOURCES",
    "Usage",
    "blocked",
    "gate",
]


@dataclass
class Usage:
    """仍占用资源的作业按账户（作业数、CPU 数、GPU 数）与数组（任务数）的计数：账户上限与 %N 据此判定。"""

    jobs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cpus: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    arrays: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    gpus: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, account: str, cpus: int, array_job_id: int | None, gpus: float = 0) -> None:
        """记下一个占用资源的作业（运行中的，或本轮刚放置的）。"""
        self.jobs[account] += 1
        self.cpus[account] += cpus
        if gpus:
            self.gpus[account] += gpus
        if array_job_id is not None:
            self.arrays[array_job_id] += 1


def gate(held: bool, dependency: str) -> str | None:
    """挂起或依赖挡住作业时的原因（dependency 为 DepState 的值）。"""
    if held:
        return HELD
    if dependency == DepState.WAITING:
        return DEPENDENCY
    if dependency == DepState.NEVER:
        return DEPENDENCY_NEVER
    return None


def blocked(
    gated: str | None,
    over_partition_max: bool,
    limit: AccountLimit,
    usage: Usage,
    account: str,
    cpus: int,
    array_job_id: int | None,
    array_max_running: int | None,
    gpus: float = 0,
) -> str | None:
    """不看资源就能判定的等待原因；None 表示只剩资源（或什么也不）挡着它。"""
    if gated is not None:
        return gated
    if over_partition_max:
        return PARTITION_TIME_LIMIT
    return limit_reason(
        limit,
        usage.jobs.get(account, 0),
        usage.cpus.get(account, 0),
        cpus,
        array_job_id,
        array_max_running,
        usage.arrays,
        usage.gpus.get(account, 0),
        gpus,
    )
