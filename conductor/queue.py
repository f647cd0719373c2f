"""从 PostgreSQL 读出调度所需的快照，判定依赖，并推导排队作业的等待原因。

调度器每轮只读：仍占用资源的作业（数量不超过集群 CPU 数）与每个分区的队首若干行
（索引 ix_jobs_queue 按分区直接给出顺序），不做全表扫描，也不对整个队列排序。
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlmodel import Session

from conductor.account_limits import AccountLimit, blocking_reason, limit_for, limit_reason
from conductor.dependencies import Dependency, DepState, Target, evaluate, parse_dependency
from conductor.models import (
    CHANGED,
    CHANGED_AT,
    DEPENDENT,
    RUNNABLE,
    SINGLETON_DEPENDENT,
    WAITING,
    Job,
)
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
# 每个分区各读自己的队首（LATERAL，沿 ix_jobs_queue (partition, queue_rank, id)），再合并为队列顺序。
# 跳过已到上限的账户与数组的条件包在 CASE 里，规划器估不出它有多挑剔：否则某个账户占了整个队列时，
# 它会算出“只剩几行”，改为每个分区各顺序扫描一遍整个表再排序（10 万排队、2 个分区时 30 ms 以上），
# 而沿索引顺序读、跳过该账户的作业只需一遍
_PENDING = text(
    "SELECT j.id, j.cpus, j.memory_bytes, j.partition, j.time_limit_seconds, j.exclusive, "
    "j.account, j.array_job_id, j.array_max_running "
    "FROM unnest(CAST(:partitions AS text[]), CAST(:limits AS int[])) AS p(name, n) "
    "CROSS JOIN LATERAL (SELECT id, cpus, memory_bytes, partition, time_limit_seconds, "
    "exclusive, account, array_job_id, array_max_running, queue_rank FROM jobs "
    f"WHERE {RUNNABLE} AND partition = p.name "
    "AND (CASE WHEN account = ANY(:accounts) OR array_job_id = ANY(:arrays) "
    "THEN false ELSE true END) "
    "ORDER BY queue_rank, id LIMIT p.n) AS j "
    "ORDER BY j.queue_rank, j.id"
)


def load_running(session: Session) -> list[RunningJob]:
    """仍占用资源的作业及其预计结束时刻（开始时刻 + 时限）。"""
    rows = session.execute(
        _RUNNING
    )  # 行可直接按列序解包（Result.tuples() 在 SQLAlchemy 2.1 已弃用）
    return [
        RunningJob(i, node, cpus, mem, None if end is None else float(end), *rest)
        for i, node, cpus, mem, end, *rest in rows
    ]


def load_pending(
    session: Session,
    windows: Mapping[str, int],
    skip_accounts: Sequence[str],
    skip_arrays: Sequence[int],
) -> list[PendingJob]:
    """每个分区各读队首 windows[分区] 个可调度作业，合并为队列顺序：一个分区排着再多放不下的作业，
    也挡不住别的分区。已到上限的账户与数组整个跳过，不占窗口。"""
    rows = session.execute(
        _PENDING,
        {
            "partitions": list(windows),
            "limits": list(windows.values()),
            "accounts": list(skip_accounts),
            "arrays": list(skip_arrays),
        },
    )
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


@dataclass(frozen=True)
class DependencyCursor:
    """依赖复查的进度，调度器记在内存里；丢了（重启）只会慢一些，轮转复查兜底。

    changed：已读到的“作业开始/结束时刻”（None 为从头：回看 DEPENDENCY_LOOKBACK 秒）；
    swept：轮转复查到的作业 id（0 为从头）。
    """

    changed: datetime | None = None
    swept: int = 0


# 事务在写下时刻之后才提交：每次回看这么多秒，晚提交的结束也能读到（更晚的靠轮转复查）
DEPENDENCY_OVERLAP = timedelta(seconds=1)
# 调度器（重）启动后第一次回看的时长：停机期间结束的作业的等待者尽快复查
DEPENDENCY_LOOKBACK = timedelta(minutes=1)
# 每轮两部分各至多读这么多行：10 万个等待者时一轮约 2.5 ms，另有上千个作业刚结束时约 13 ms；
# 每秒能接住的开始/结束数（每 0.25 秒一轮）远超集群的吞吐
DEPENDENCY_BATCH = 500

_WAITING_COLUMNS = "SELECT id, name, account, dependency FROM jobs WHERE "
# 自游标以来开始或结束的作业（ix_jobs_changed）
_CHANGED = text(
    f"SELECT id, array_job_id, name, account, {CHANGED_AT} AS at, now() AS now FROM jobs "
    f"WHERE {CHANGED} AND {CHANGED_AT} >= COALESCE(:since, now() - :lookback) "
    f"ORDER BY {CHANGED_AT} LIMIT :n"
)
# 这些作业的等待者：依赖里写了它们的作业号（ix_jobs_dependency_targets），或同名同账户的 singleton。
# 逐个作业号查（LATERAL）：合成一个大数组做 && 时，规划器对 GIN 的估价偏高，几百个作业号起就改为
# 顺序扫描整个表（10 万行时 100 ms 以上）；逐个查每个只是一次索引查找，2,000 个约 3 ms
_DEPENDENTS = text(
    "(SELECT d.* FROM unnest(CAST(:ids AS bigint[])) AS k(id) CROSS JOIN LATERAL "
    f"({_WAITING_COLUMNS}{DEPENDENT} AND dependency_ids @> ARRAY[k.id] LIMIT :n) AS d LIMIT :n) "
    "UNION ALL "
    "(SELECT d.* FROM unnest(CAST(:accounts AS text[]), CAST(:names AS text[])) AS k(account, name) "
    f"CROSS JOIN LATERAL ({_WAITING_COLUMNS}{SINGLETON_DEPENDENT} "
    "AND account = k.account AND name = k.name LIMIT :n) AS d LIMIT :n) LIMIT :n"
)
# 轮转复查：按 id 从游标往后读一批，读到末尾再从头接上（ix_jobs_dependency_waiting）
_SWEEP = text(f"{_WAITING_COLUMNS}{WAITING} AND id > :after ORDER BY id LIMIT :n")
_SWEEP_WRAP = text(f"{_WAITING_COLUMNS}{WAITING} AND id <= :upto ORDER BY id LIMIT :n")


def resolve_dependencies(
    session: Session, cursor: DependencyCursor | None = None, batch: int = DEPENDENCY_BATCH
) -> tuple[dict[int, str], DependencyCursor]:
    """重新判定等待依赖的排队作业，返回判定改变了的 {作业 id: 新状态} 与新的游标。

    每轮两部分，各至多 batch 行：自游标以来开始或结束的作业的等待者（判定只可能因此改变），
    以及按 id 轮转的一批等待者（兜底：漏读的结束、超出 batch 的等待者；等待者不多于 batch 时每轮全部复查）。
    """
    cursor = cursor or DependencyCursor()
    changed_rows = session.execute(
        _CHANGED, {"since": cursor.changed, "lookback": DEPENDENCY_LOOKBACK, "n": batch}
    ).all()
    waiting = {r.id: r for r in _dependents(session, changed_rows, batch)}
    swept = list(session.execute(_SWEEP, {"after": cursor.swept, "n": batch}).all())
    if len(swept) < batch and cursor.swept > 0:
        swept += session.execute(_SWEEP_WRAP, {"upto": cursor.swept, "n": batch - len(swept)}).all()
    waiting.update((r.id, r) for r in swept)
    next_cursor = DependencyCursor(
        _next_changed(cursor.changed, changed_rows, batch),
        swept[-1].id if len(swept) == batch else 0,
    )
    if not waiting:
        return {}, next_cursor
    rows = list(waiting.values())
    # 同一写法只解析、判定一次：成批的作业（数组）常依赖同一个作业
    deps = {d: parse_dependency(d) for d in {r.dependency for r in rows}}
    targets = dependency_targets(session, sorted({j for d in deps.values() for j in d.job_ids}))
    busy = _singleton_busy(session, [r for r in rows if "singleton" in r.dependency])
    states: dict[tuple[str, bool], DepState] = {}
    changed = {}
    for r in rows:
        key = (r.dependency, r.id in busy)
        if key not in states:
            states[key] = evaluate(deps[r.dependency], targets, singleton_busy=key[1])
        if states[key] is not DepState.WAITING:
            changed[r.id] = states[key].value
    return changed, next_cursor


def _dependents(session: Session, changed_rows: Sequence, batch: int) -> Sequence:  # type: ignore[type-arg]
    """刚开始或结束的作业的等待者（数组任务代表它的主作业号）。"""
    if not changed_rows:
        return []
    ids = {r.id for r in changed_rows} | {r.array_job_id for r in changed_rows if r.array_job_id}
    pairs = sorted({(r.account, r.name) for r in changed_rows})
    return session.execute(
        _DEPENDENTS,
        {
            "ids": sorted(ids),
            "accounts": [a for a, _ in pairs],
            "names": [n for _, n in pairs],
            "n": batch,
        },
    ).all()


def _next_changed(
    since: datetime | None,
    rows: Sequence,  # type: ignore[type-arg]
    batch: int,
) -> datetime | None:
    """读满一批：从最后一行接着读（保证前进）；没读满：已读到当前，下次回看 DEPENDENCY_OVERLAP。"""
    if not rows:
        return since
    last = rows[-1].at
    if len(rows) == batch:
        # 整批同一时刻（批量 UPDATE 用 now()）时跨过它，否则每轮读同一批；剩下的交给轮转复查
        return last if rows[0].at < last else last + timedelta(microseconds=1)
    return min(last, rows[-1].now - DEPENDENCY_OVERLAP)


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


def checked_dependency(session: Session, raw: str, account: str | None = None) -> Dependency:
    """提交时校验依赖并返回解析结果（str() 为规范写法）；引用不存在的作业时 ValueError。

    account 非空时（账户令牌提交），别的账户的作业算作不存在，回答与不存在的作业一字不差：
    否则从回答与随后的等待原因就能探知别人的作业是否存在、结局如何。
    判定留给调度器（作业以 WAITING 入队）：singleton 要看同名作业的提交顺序。
    """
    dep = parse_dependency(raw)
    found = dependency_targets(session, sorted(dep.job_ids), account)
    missing = sorted(dep.job_ids - set(found))
    if missing:
        raise ValueError(f"依赖的作业不存在：{', '.join(map(str, missing))}")
    return dep


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
