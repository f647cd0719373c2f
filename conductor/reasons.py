"""等待原因（Slurm 的 Reason 名称）的唯一推导：调度策略与 API 查询都从这里得出。

不看资源就能判定的原因依次是：挂起、依赖、分区时限、账户上限与数组 %N；
资源不够时的 Resources / Priority 只有调度策略（policy.plan）知道。纯函数，不碰数据库。
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from conductor.account_limits import AccountLimit, limit_reason
from conductor.dependencies import DepState

HELD = "JobHeldUser"
DEPENDENCY = "Dependency"
DEPENDENCY_NEVER = "DependencyNeverSatisfied"
PARTITION_TIME_LIMIT = "PartitionTimeLimit"


@dataclass
class Usage:
    """仍占用资源的作业按账户（作业数、CPU 数）与数组（任务数）的计数：账户上限与 %N 据此判定。"""

    jobs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    cpus: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    arrays: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, account: str, cpus: int, array_job_id: int | None) -> None:
        """记下一个占用资源的作业（运行中的，或本轮刚放置的）。"""
        self.jobs[account] += 1
        self.cpus[account] += cpus
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
    )
