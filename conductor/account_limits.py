"""按账户的运行上限（配置 CONDUCTOR_ACCOUNT_LIMITS：{账户或 "*": 本结构}）。"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


class AccountLimit(BaseModel):
    """一个账户同时运行的作业数与 CPU 数上限；None 为不限。"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running_jobs: int | None = Field(None, ge=0)
    max_cpus: int | None = Field(None, ge=0)


NO_LIMIT = AccountLimit()


def limit_for(limits: Mapping[str, AccountLimit], account: str) -> AccountLimit:
    """账户自己的上限；没有单独配置时用 "*"，都没有则不限。"""
    return limits.get(account) or limits.get("*") or NO_LIMIT


def blocking_reason(
    limit: AccountLimit, running_jobs: int, running_cpus: int, cpus: int
) -> str | None:
    """再启动一个 cpus 个 CPU 的作业会超过上限时，返回 Slurm 的等待原因。"""
    if limit.max_running_jobs is not None and running_jobs >= limit.max_running_jobs:
        return "AssocMaxJobsLimit"
    if limit.max_cpus is not None and running_cpus + cpus > limit.max_cpus:
        return "AssocGrpCpuLimit"
    return None


def limit_reason(
    limit: AccountLimit,
    running_jobs: int,
    running_cpus: int,
    cpus: int,
    array_job_id: int | None,
    array_max_running: int | None,
    array_running: Mapping[int, int],
) -> str | None:
    """账户上限或数组 %N 挡住这个作业时的等待原因（调度策略与 API 的原因推导共用）。"""
    reason = blocking_reason(limit, running_jobs, running_cpus, cpus)
    if reason is not None:
        return reason
    if (
        array_job_id is not None
        and array_max_running is not None
        and array_running.get(array_job_id, 0) >= array_max_running
    ):
        return "JobArrayTaskLimit"
    return None
