"""调度轮的读取与写回：仍占用资源的作业、每个分区的队首窗口、数组的 %N 上限、等待原因。

调度器每轮只读：仍占用资源的作业（数量不超过集群 CPU 数）与每个分区的队首若干行
（索引 ix_jobs_queue 按分区直接给出顺序），不做全表扫描，也不对整个队列排序。
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import text
from sqlmodel import Session

from conductor.models import RUNNABLE
from conductor.policy import PendingJob, RunningJob
from conductor.store.transitions import HOLDING

# 调度器每轮都执行的两条读取：语句只构造一次，结果按列序直接解包成快照（比按列名取值省）
_RUNNING = text(
    "SELECT id, node_id, cpus, memory_bytes, "
    "EXTRACT(EPOCH FROM start_time) + time_limit_seconds AS expected_end, "
    "exclusive, account, array_job_id, gpus, gres, whole_node_memory, node_ids "
    f"FROM jobs WHERE {HOLDING}"
)
# 每个分区各读自己的队首（LATERAL，沿 ix_jobs_queue (partition, queue_rank, id)），再合并为队列顺序。
# 跳过已到上限的账户与数组的条件包在 CASE 里，规划器估不出它有多挑剔：否则某个账户占了整个队列时，
# 它会算出“只剩几行”，改为每个分区各顺序扫描一遍整个表再排序（10 万排队、2 个分区时 30 ms 以上），
# 而沿索引顺序读、跳过该账户的作业只需一遍
_PENDING = text(
    "SELECT j.id, j.cpus, j.memory_bytes, j.partition, j.time_limit_seconds, j.exclusive, "
    "j.account, j.array_job_id, j.array_max_running, "
    "j.gpus, j.gres, j.gpu_type, j.whole_node_memory, j.constraints, j.required_nodes, "
    "j.excluded_nodes, j.nodes "
    "FROM unnest(CAST(:partitions AS text[]), CAST(:limits AS int[])) AS p(name, n) "
    "CROSS JOIN LATERAL (SELECT id, cpus, memory_bytes, partition, time_limit_seconds, "
    "exclusive, account, array_job_id, array_max_running, queue_rank, "
    "gpus, gres, gpu_type, whole_node_memory, constraints, required_nodes, excluded_nodes, nodes "
    "FROM jobs "
    f"WHERE {RUNNABLE} AND partition = p.name "
    "AND (CASE WHEN account = ANY(:accounts) OR array_job_id = ANY(:arrays) "
    "THEN false ELSE true END) "
    "ORDER BY queue_rank, id LIMIT p.n) AS j "
    "ORDER BY j.queue_rank, j.id"
)


def load_running(session: Session) -> list[RunningJob]:
    """仍占用资源的作业及其预计结束时刻（开始时刻 + 时限）。

    多节点作业占着分配里的每个节点（node_ids）；节点数按分配计，没有分配列表的旧行只占 node_id。"""
    rows = session.execute(
        _RUNNING
    )  # 行可直接按列序解包（Result.tuples() 在 SQLAlchemy 2.1 已弃用）
    return [
        RunningJob(
            i,
            node,
            cpus,
            mem,
            None if end is None else float(end),
            exclusive,
            account,
            array,
            gpus=gpus,
            gres=gres or {},
            whole_node_memory=whole,
            nodes=len(ids) if ids else 1,
            node_ids=tuple(ids or ()),
        )
        for i, node, cpus, mem, end, exclusive, account, array, gpus, gres, whole, ids in rows
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
    jobs = []
    for row in rows:
        (i, cpus, mem, partition, limit, exclusive, account, array, array_max) = row[:9]
        gpus, gres, gpu_type, whole, constraints, required, excluded, nodes = row[9:]
        jobs.append(
            PendingJob(
                i,
                cpus,
                mem,
                partition,
                limit,
                exclusive,
                account,
                array,
                array_max,
                gpus=gpus,
                gres=gres or {},
                gpu_type=gpu_type,
                whole_node_memory=whole,
                constraints=constraints,
                required_nodes=required or (),
                excluded_nodes=excluded or (),
                nodes=nodes or 1,
            )
        )
    return jobs


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


# 等待原因：别人正锁着的行跳过
_SET_REASONS = text(
    """
    UPDATE jobs SET state_reason = v.reason
    FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[])) AS v(id, reason)
    WHERE jobs.id = v.id AND jobs.id IN (
        SELECT id FROM jobs WHERE id = ANY(:ids) AND state = 'PENDING'
        ORDER BY id FOR UPDATE SKIP LOCKED
    )
    """
)


def set_reasons(session: Session, reasons: dict[int, str]) -> None:
    """记录调度器给出的等待原因（只写仍在排队的作业）。"""
    if not reasons:
        return
    # 原因只是提示：别人正锁着的行跳过（下一轮再写），不为它等锁，也就不会与取消等操作死锁
    session.execute(
        _SET_REASONS,
        {"ids": list(reasons), "reasons": list(reasons.values())},
    )
