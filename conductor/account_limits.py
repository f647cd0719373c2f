"""按账户的运行上限（配置 CONDUCTOR_ACCOUNT_LIMITS：{账户或 "*": 本结构}）。"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

# 账户上限挡住作业时的等待原因（Slurm 的拼写）；只在本模块的 blocking_reason 与 limit_reason 里得出
ASSOC_MAX_JOBS = "AssocMaxJobsLimit"
ASSOC_GRP_CPU = "AssocGrpCpuLimit"
ASSOC_GRP_GRES = "AssocGrpGRES"
ARRAY_TASK_LIMIT = "JobArrayTaskLimit"


class AccountLimit(BaseModel):
    """一个账户同时运行的作业数、CPU 数与 GPU 数上限；None 为不限。"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_running_jobs: int | None = Field(None, ge=0)
    max_cpus: int | None = Field(None, ge=0)
    max_gpus: int | None = Field(None, ge=0)


NO_LIMIT = AccountLimit()


def limit_for(limits: Mapping[str, AccountLimit], account: str) -> AccountLimit:
    """账户自己的上限；没有单独配置时用 "*"，都没有则不限。"""
    return limits.get(account) or limits.get("*") or NO_LIMIT


def blocking_reason(
    limit: AccountLimit,
    running_jobs: int,
    running_cpus: int,
    cpus: int,
    running_gpus: float = 0,
    gpus: float = 0,
) -> str | None:
    """再启动一个 cpus 个 CPU、gpus 个 GPU 的作业会超过上限时，返回 Slurm 的等待原因。

    GPU 上限只挡要 GPU 的作业：到了 GPU 上限的账户仍可运行只要 CPU 的作业。"""
    if limit.max_running_jobs is not None and running_jobs >= limit.max_running_jobs:
        return ASSOC_MAX_JOBS
    if limit.max_cpus is not None and running_cpus + cpus > limit.max_cpus:
        return ASSOC_GRP_CPU
    if limit.max_gpus is not None and gpus > 0 and running_gpus + gpus > limit.max_gpus:
        return ASSOC_GRP_GRES
    return None


def limit_reason(
    limit: AccountLimit,
    running_jobs: int,
    running_cpus: int,
    cpus: int,
    array_job_id: int | None,
    array_max_running: int | None,
    array_running: Mapping[int, int],
    running_gpus: float = 0,
    gpus: float = 0,
) -> str | None:
    """账户上限或数组 %N 挡住这个作业时的等待原因（调度策略与 API 的原因推导共用）。"""
    reason = blocking_reason(limit, running_jobs, running_cpus, cpus, running_gpus, gpus)
    if reason is not None:
        return reason
    if (
        array_job_id is not None
        and array_max_running is not None
        and array_running.get(array_job_id, 0) >= array_max_running
    ):
        return ARRAY_TASK_LIMIT
    return None
