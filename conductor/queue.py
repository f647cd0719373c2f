"""从 PostgreSQL 读出调度所需的快照，判定依赖，并推导排队作业的等待原因。

调度器每轮只读：仍占用资源的作业（数量不超过集群 CPU 数）与队首若干行（索引 ix_jobs_queue 直接给出顺序），
不做全表扫描，也不对整个队列排序。
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session

from conductor.dependencies import DepState, Target, evaluate, parse_dependency
from conductor.limits import AccountLimit, blocking_reason, limit_for, limit_reason
from conductor.models import RUNNABLE, Job
from conductor.partitions import PartitionTable
from conductor.policy import PendingJob, RunningJob
from conductor.states import TERMINAL_STATES, JobState
from conductor.transitions import HOLDING

_TERMINAL = [s.value for s in TERMINAL_STATES]


# 调度器每轮都执行的两条读取：语句只构造一次，结果按列序直接解包成快照（比按列名取值省）
_RUNNING = text(
    "SELECT id, node_id, cpus, memory_bytes, "
    "EXTRACT(EPOCH FROM start_time) + time_limit_seconds AS expected_end, "
    f"exclusive, account, array_job_id FROM jobs WHERE {HOLDING}"
)
_PENDING = text(
    "SELECT id, cpus, memory_bytes, partition, time_limit_seconds, exclusive, account, "
    f"array_job_id, array_max_running FROM jobs WHERE {RUNNABLE} "
    "AND NOT (account = ANY(:accounts)) "
    "AND (array_job_id IS NULL OR NOT (array_job_id = ANY(:arrays))) "
    "ORDER BY queue_rank, id LIMIT :n"
)


def load_running(session: Session) -> list[RunningJob]:
    """仍占用资源的作业及其预计结束时刻（开始时刻 + 时限）。"""
    rows = session.execute(_RUNNING).tuples()
    return [
        RunningJob(i, node, cpus, mem, None if end is None else float(end), *rest)
        for i, node, cpus, mem, end, *rest in rows
    ]


def load_pending(
    session: Session, limit: int, skip_accounts: Sequence[str], skip_arrays: Sequence[int]
) -> list[PendingJob]:
    """按队列顺序读队首 limit 个可调度作业；已到上限的账户与数组整个跳过，不占窗口。"""
    rows = session.execute(
        _PENDING, {"n": limit, "accounts": list(skip_accounts), "arrays": list(skip_arrays)}
    ).tuples()
    return [PendingJob(*row) for row in rows]


def saturated(
    running: Sequence[RunningJob],
    limits: dict[str, AccountLimit],
    array_limits: dict[int, int],
) -> tuple[list[str], list[int]]:
    """此刻已到上限、本轮不可能再启动任何作业的账户与数组（读队首时整体跳过）。"""
    jobs: dict[str, int] = defaultdict(int)
    cpus: dict[str, int] = defaultdict(int)
    arrays: dict[int, int] = defaultdict(int)
    for r in running:
        jobs[r.account] += 1
        cpus[r.account] += r.cpus
        if r.array_job_id is not None:
            arrays[r.array_job_id] += 1
    accounts = [
        a for a in jobs if blocking_reason(limit_for(limits, a), jobs[a], cpus[a], 1) is not None
    ]
    full_arrays = [a for a, n in arrays.items() if a in array_limits and n >= array_limits[a]]
    return accounts, full_arrays


def array_limits(session: Session, array_ids: Sequence[int]) -> dict[int, int]:
    """数组的 %N 上限（只查有任务在运行的数组）。"""
    if not array_ids:
        return {}
    rows = session.execute(
        text(
            "SELECT DISTINCT array_job_id, array_max_running FROM jobs "
            "WHERE array_job_id = ANY(:ids) AND array_max_running IS NOT NULL"
        ),
        {"ids": list(array_ids)},
    )
    return {r.array_job_id: r.array_max_running for r in rows}


# ---- 依赖 ----


def dependency_targets(
    session: Session, job_ids: Sequence[int], account: str | None = None
) -> dict[int, Target]:
    """被依赖作业的状态；数组主作业号代表它的全部任务。account 非空时只看该账户的作业。"""
    where = "(id = ANY(:ids) OR array_job_id = ANY(:ids))"
    params: dict[str, object] = {"ids": list(job_ids)}
    if account is not None:
        where += " AND account = :account"
        params["account"] = account
    rows = session.execute(
        text(f"SELECT id, array_job_id, state FROM jobs WHERE {where}"), params
    ).all()
    by_array: dict[int, list[JobState]] = defaultdict(list)
    by_id: dict[int, JobState] = {}
    for r in rows:
        by_id[r.id] = JobState(r.state)
        if r.array_job_id is not None:
            by_array[r.array_job_id].append(JobState(r.state))
    targets = {}
    for job_id in job_ids:
        if job_id in by_array:
            targets[job_id] = Target(tuple(by_array[job_id]))
        elif job_id in by_id:
            targets[job_id] = Target((by_id[job_id],))
    return targets


def resolve_dependencies(session: Session, batch: int = 1000) -> dict[int, str]:
    """重新判定等待依赖的排队作业，返回判定改变了的 {作业 id: 新状态}。"""
    waiting = session.execute(
        text(
            "SELECT id, name, account, dependency FROM jobs "
            "WHERE state = 'PENDING' AND dependency_state = 'WAITING' ORDER BY id LIMIT :n"
        ),
        {"n": batch},
    ).all()
    if not waiting:
        return {}
    deps = {r.id: parse_dependency(r.dependency) for r in waiting}
    targets = dependency_targets(session, sorted({j for d in deps.values() for j in d.job_ids}))
    busy = _singleton_busy(session, [r for r in waiting if "singleton" in r.dependency])
    changed = {}
    for r in waiting:
        state = evaluate(deps[r.id], targets, singleton_busy=r.id in busy)
        if state is not DepState.WAITING:
            changed[r.id] = state.value
    return changed


def _singleton_busy(session: Session, rows: Sequence) -> set[int]:  # type: ignore[type-arg]
    """同名同账户、更早提交且未结束的作业还在时，singleton 依赖继续等待。"""
    busy = set()
    for r in rows:
        earlier = session.execute(
            text(
                "SELECT 1 FROM jobs WHERE name = :name AND account = :account AND id < :id "
                "AND NOT (state = ANY(:terminal)) LIMIT 1"
            ),
            {"name": r.name, "account": r.account, "id": r.id, "terminal": _TERMINAL},
        ).first()
        if earlier is not None:
            busy.add(r.id)
    return busy


def checked_dependency(session: Session, raw: str, account: str | None = None) -> str:
    """提交时校验依赖并返回规范写法；引用不存在的作业时 ValueError。

    account 非空时（账户令牌提交），别的账户的作业算作不存在，回答与不存在的作业一字不差：
    否则从回答与随后的等待原因就能探知别人的作业是否存在、结局如何。
    判定留给调度器（作业以 WAITING 入队）：singleton 要看同名作业的提交顺序。
    """
    dep = parse_dependency(raw)
    found = dependency_targets(session, sorted(dep.job_ids), account)
    missing = sorted(dep.job_ids - set(found))
    if missing:
        raise ValueError(f"依赖的作业不存在：{', '.join(map(str, missing))}")
    return str(dep)


# ---- 等待原因 ----


@dataclass(frozen=True)
class AccountUsage:
    jobs: int
    cpus: int


def pending_reason(
    job: Job,
    partitions: PartitionTable,
    limits: dict[str, AccountLimit],
    usage: dict[str, AccountUsage],
    array_running: dict[int, int],
) -> str:
    """排队作业为何还在等（Slurm 的 Reason 名称）。优先给出用户能处理的原因。"""
    if job.held:
        return "JobHeldUser"
    if job.dependency_state == DepState.WAITING:
        return "Dependency"
    if job.dependency_state == DepState.NEVER:
        return "DependencyNeverSatisfied"
    if partitions.exceeds_max(job.partition, job.time_limit_seconds):
        return "PartitionTimeLimit"
    used = usage.get(job.account, AccountUsage(0, 0))
    reason = limit_reason(
        limit_for(limits, job.account),
        used.jobs,
        used.cpus,
        job.cpus,
        job.array_job_id,
        job.array_max_running,
        array_running,
    )
    return reason or job.state_reason or "None"


def reasons_for(
    session: Session,
    jobs: Sequence[Job],
    partitions: PartitionTable,
    limits: dict[str, AccountLimit],
) -> dict[int, str]:
    """一批作业中排队者的等待原因（按账户与数组聚合一次，不逐行查询）。"""
    pending = [j for j in jobs if j.state == JobState.PENDING and j.id is not None]
    if not pending:
        return {}
    accounts = sorted({j.account for j in pending})
    arrays = sorted({j.array_job_id for j in pending if j.array_job_id is not None})
    usage = {
        r.account: AccountUsage(r.n, int(r.cpus))
        for r in session.execute(
            text(
                "SELECT account, COUNT(*) AS n, SUM(cpus) AS cpus FROM jobs "
                f"WHERE {HOLDING} AND account = ANY(:accounts) GROUP BY account"
            ),
            {"accounts": accounts},
        )
    }
    array_running = {
        r.array_job_id: r.n
        for r in session.execute(
            text(
                "SELECT array_job_id, COUNT(*) AS n FROM jobs "
                f"WHERE {HOLDING} AND array_job_id = ANY(:arrays) GROUP BY array_job_id"
            ),
            {"arrays": arrays},
        )
    }
    return {
        j.id: pending_reason(j, partitions, limits, usage, array_running)  # type: ignore[misc]
        for j in pending
    }
