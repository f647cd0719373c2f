"""作业状态的全部改变：每个都是一条带条件的 UPDATE（比较并交换）。

终态永不改变；API 取消、节点代理上报结束、调度器对账彼此竞争时，
谁的条件先成立谁生效，另一方得到“未改变”，不会互相覆盖。
资源释放（released_at）与状态分开：取消后进程可能还在宽限期内运行，
资源要等执行真正结束才归还，且只归还一次。
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session

from conductor.models import RUNNABLE
from conductor.policy import Placement
from conductor.states import JobState, sources_of


@dataclass(frozen=True)
class Outcome:
    """一次执行的结局，由节点代理上报。

    token 为该次认领的令牌：作业若已被重新排队并再次认领，旧执行的迟到结局不会落到新执行上。
    """

    job_id: int
    state: JobState
    exit_code: str | None
    error_msg: str | None
    token: str | None = None


@dataclass(frozen=True)
class CancelResult:
    """取消的结果：previous 为取消前的状态；changed 表示本次调用是否生效。"""

    previous: JobState
    changed: bool
    node_id: str | None


def _states(target: JobState) -> list[str]:
    return [s.value for s in sources_of(target)]


_TERMINAL_FROM_RUNNING = [JobState.COMPLETED, JobState.FAILED, JobState.TIMEOUT, JobState.NODE_FAIL]


# 热路径上的语句在模块加载时构造一次，不在每次调用时重建
# 认领：PENDING → RUNNING。可调度条件包在 CASE 里，使部分索引 ix_jobs_queue 无从匹配，
# 行只能按主键找：大批提交之后、自动 ANALYZE 之前，统计信息以为排队作业很少，
# 否则规划器会沿该索引扫描整个队列（10 万排队时每次认领约 0.25 秒）
_CLAIM = text(
    f"""
    UPDATE jobs SET state = 'RUNNING', start_time = clock_timestamp(),
           node_id = v.node_id, node_name = v.node_name, token = v.token,
           agent_id = v.agent_id, node_host = v.host, epoch = :epoch,
           released_at = NULL, state_reason = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:nodes AS text[]), CAST(:names AS text[]),
                CAST(:tokens AS text[]), CAST(:agents AS text[]), CAST(:hosts AS text[]))
         AS v(id, node_id, node_name, token, agent_id, host)
    WHERE jobs.id = v.id AND (CASE WHEN {RUNNABLE} THEN true ELSE false END)
    RETURNING jobs.*
    """
)


def claim(
    session: Session,
    placements: Sequence[Placement],
    tokens: Sequence[str],
    agent_ids: Sequence[str],
    epoch: int,
    hosts: Sequence[str | None] | None = None,
) -> list[dict]:
    """PENDING → RUNNING（批量）。返回真正认领到的作业行；已被取消、挂起的不会出现。"""
    if not placements:
        return []
    rows = session.execute(
        _CLAIM,
        {
            "ids": [p.job_id for p in placements],
            "nodes": [p.node_id for p in placements],
            "names": [p.node_name for p in placements],
            "tokens": list(tokens),
            "agents": list(agent_ids),
            "hosts": list(hosts) if hosts is not None else [None] * len(placements),
            "epoch": epoch,
        },
    )
    return [dict(r._mapping) for r in rows]


# RUNNING → 终态（令牌为栅栏）
_FINISH = text(
    """
    UPDATE jobs SET state = v.state, exit_code = v.exit_code, error_msg = v.error_msg,
           end_time = clock_timestamp()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:states AS text[]),
                CAST(:codes AS text[]), CAST(:msgs AS text[]), CAST(:tokens AS text[]))
         AS v(id, state, exit_code, error_msg, token)
    WHERE jobs.id = v.id AND jobs.state = 'RUNNING'
          AND (v.token IS NULL OR jobs.token = v.token)
    RETURNING jobs.id
    """
)


def storable_text(value: str | None) -> str | None:
    """PostgreSQL 的 text 存不下 NUL，也存不下孤立的代理对（psycopg2 对前者直接抛 ValueError）。

    说明文字常含作业写出的任意字节：NUL 转义成可见的 \\x00，无法编码的字符换成“?”，
    免得一条结局因说明文字写不进数据库。"""
    if value is None:
        return None
    return value.replace("\0", "\\x00").encode("utf-8", "replace").decode("utf-8")


def finish(session: Session, outcomes: Sequence[Outcome]) -> list[int]:
    """RUNNING → 终态，并释放资源（批量）。返回状态真正改变的作业 id。

    已被取消的作业状态不变，但仍在这里补上退出码并释放资源。
    """
    if not outcomes:
        return []
    for o in outcomes:
        if o.state not in _TERMINAL_FROM_RUNNING:
            raise ValueError(f"不能以 {o.state} 结束作业")
    ids = [o.job_id for o in outcomes]
    codes = [o.exit_code for o in outcomes]
    tokens = [o.token for o in outcomes]
    params = {
        "ids": ids,
        "states": [o.state.value for o in outcomes],
        "codes": codes,
        "msgs": [storable_text(o.error_msg) for o in outcomes],
        "tokens": tokens,
    }
    changed = session.execute(
        _FINISH,
        params,
    )
    changed_ids = [r[0] for r in changed]
    release(session, ids, codes, tokens)
    return changed_ids


# 归还资源，每个作业只一次
_RELEASE = text(
    """
    UPDATE jobs SET released_at = clock_timestamp(),
           exit_code = COALESCE(jobs.exit_code, v.exit_code)
    FROM unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[]), CAST(:tokens AS text[]))
         AS v(id, exit_code, token)
    WHERE jobs.id = v.id AND jobs.node_id IS NOT NULL AND jobs.released_at IS NULL
          AND (v.token IS NULL OR jobs.token = v.token)
    RETURNING jobs.id
    """
)


def release(
    session: Session,
    job_ids: Sequence[int],
    exit_codes: Sequence[str | None] | None = None,
    tokens: Sequence[str | None] | None = None,
) -> list[int]:
    """归还资源，每个作业只归还一次；顺带补上尚缺的退出码。返回本次释放的作业 id。

    给出令牌时只释放该次认领占用的资源。
    """
    if not job_ids:
        return []
    codes = list(exit_codes) if exit_codes is not None else [None] * len(job_ids)
    fences = list(tokens) if tokens is not None else [None] * len(job_ids)
    rows = session.execute(
        _RELEASE,
        {"ids": list(job_ids), "codes": codes, "tokens": fences},
    )
    return [r[0] for r in rows]


# “占用资源中”的定义：已派发到节点、资源尚未归还（与 release 的条件互为两面）
HOLDING = "node_id IS NOT NULL AND released_at IS NULL"


def held_by_node(session: Session) -> dict[str, tuple[float, float]]:
    """各节点仍被占用的 (CPU, 内存字节)。调度器与 /dashboard 共用，资源账只从数据库推导。"""
    rows = session.execute(
        text(
            "SELECT node_id, SUM(cpus) AS cpus, SUM(memory_bytes) AS mem FROM jobs "
            f"WHERE {HOLDING} GROUP BY node_id"
        )
    )
    return {r.node_id: (float(r.cpus), float(r.mem)) for r in rows}


def cancel(session: Session, job_id: int) -> CancelResult | None:
    """PENDING/RUNNING → CANCELLED。作业不存在时返回 None。

    用行锁读出旧状态，两个并发取消只有一个 changed=True。
    """
    old = session.execute(
        text("SELECT state, node_id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id}
    ).first()
    if old is None:
        return None
    previous = JobState(old.state)
    if previous.value not in _states(JobState.CANCELLED):
        return CancelResult(previous=previous, changed=False, node_id=old.node_id)
    session.execute(
        text(
            """
            UPDATE jobs SET state = 'CANCELLED', end_time = clock_timestamp(),
                   error_msg = COALESCE(error_msg, '用户取消')
            WHERE id = :id
            """
        ),
        {"id": job_id},
    )
    return CancelResult(previous=previous, changed=True, node_id=old.node_id)


def requeue(session: Session, claims: Sequence[tuple[int, str]]) -> list[int]:
    """RUNNING → PENDING：仅限确定从未启动的作业（认领后、交给代理前调度器崩溃）。

    以认领时生成的唯一令牌为条件：作业若已被重新认领（令牌已变），不会被拉回队列。
    claims 为 (作业 id, 令牌)。
    """
    if not claims:
        return []
    rows = session.execute(
        text(
            """
            UPDATE jobs SET state = 'PENDING', start_time = NULL, node_id = NULL,
                   node_name = NULL, node_host = NULL, epoch = NULL, token = NULL, agent_id = NULL,
                   released_at = NULL
            FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[])) AS v(id, token)
            WHERE jobs.id = v.id AND jobs.token = v.token AND jobs.state = 'RUNNING'
            RETURNING jobs.id
            """
        ),
        {"ids": [c[0] for c in claims], "tokens": [c[1] for c in claims]},
    )
    return [r[0] for r in rows]


def settle_lost(
    session: Session, claims: Sequence[tuple[int, str | None]], state: JobState, reason: str
) -> list[int]:
    """执行已不存在（节点或代理死亡）：RUNNING → FAILED/NODE_FAIL，并释放资源。

    claims 为 (作业 id, 认领令牌)。
    已取消而进程随节点消失的作业只释放资源。返回状态真正改变的作业 id。
    """
    return finish(session, [Outcome(j, state, None, reason, token) for j, token in claims])


def set_held(session: Session, job_ids: Sequence[int], held: bool) -> list[int]:
    """挂起或放行排队中的作业；返回状态确实改变的作业 id（只有 PENDING 的作业能挂起）。"""
    rows = session.execute(
        text(
            "UPDATE jobs SET held = :held WHERE id = ANY(:ids) AND state = 'PENDING' "
            "AND held <> :held RETURNING id"
        ),
        {"ids": list(job_ids), "held": held},
    )
    return [r[0] for r in rows]


def update_pending(
    session: Session,
    job_id: int,
    priority: int | None,
    queue_rank: float | None,
    time_limit: tuple[int | None] | None,
) -> bool:
    """修改排队中作业的优先级（连同排序键）或时限；作业已不在排队返回 False。

    time_limit 用一元组包装，以区分“不修改”（None）与“改为不限时”（(None,)）。
    """
    sets = []
    params: dict[str, object] = {"id": job_id}
    if priority is not None:
        sets += ["priority = :priority", "queue_rank = :rank"]
        params |= {"priority": priority, "rank": queue_rank}
    if time_limit is not None:
        sets.append("time_limit_seconds = :limit")
        params["limit"] = time_limit[0]
    if not sets:
        return True
    row = session.execute(
        text(
            f"UPDATE jobs SET {', '.join(sets)} WHERE id = :id AND state = 'PENDING' RETURNING id"
        ),
        params,
    ).first()
    return row is not None


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


def set_dependency_states(session: Session, states: dict[int, str]) -> None:
    """记录依赖的判定结果（只改仍在等待依赖的排队作业）。"""
    if not states:
        return
    session.execute(
        text(
            """
            UPDATE jobs SET dependency_state = v.dep,
                   eligible_time = CASE WHEN v.dep = 'SATISFIED' THEN clock_timestamp()
                                        ELSE eligible_time END
            FROM unnest(CAST(:ids AS bigint[]), CAST(:deps AS text[])) AS v(id, dep)
            WHERE jobs.id = v.id AND jobs.state = 'PENDING' AND jobs.dependency_state = 'WAITING'
            """
        ),
        {"ids": list(states), "deps": list(states.values())},
    )


# 新代理上任时要清理的令牌：本节点上不归它的、仍占用资源的执行（随前任死亡），以及本节点
# （或同一地址的旧节点）上最近以 FAILED/NODE_FAIL/CANCELLED 结束、不归它的执行（已被对账或
# doctor 判为丢失，孤儿进程可能还在）。两半分开查，各走各的索引
_ORPHANS = text(
    """
    SELECT token FROM jobs
    WHERE node_id = :node AND released_at IS NULL AND token IS NOT NULL
          AND agent_id IS DISTINCT FROM :agent
    UNION
    (SELECT token FROM jobs
     WHERE state IN ('FAILED', 'NODE_FAIL', 'CANCELLED') AND released_at IS NOT NULL
           AND token IS NOT NULL AND agent_id IS DISTINCT FROM :agent
           AND (node_id = :node OR node_host = :host)
           AND end_time > clock_timestamp() - make_interval(secs => :window)
     ORDER BY end_time DESC LIMIT :limit)
    """
)


def orphan_tokens(
    session: Session, node_id: str, host: str, agent_id: str, window: float, limit: int = 1000
) -> list[str]:
    """随本节点的前任代理丢失的执行的令牌（新代理据此按令牌清理孤儿进程）。

    window 为“最近结束”的秒数；limit 限制后一半的条数，免得繁忙节点上的一次启动扫描太多。"""
    rows = session.execute(
        _ORPHANS,
        {"node": node_id, "host": host, "agent": agent_id, "window": window, "limit": limit},
    )
    return [r[0] for r in rows]


def jobs_by_token(session: Session, tokens: Sequence[str]) -> dict[str, int]:
    """令牌 → 作业 id（只含本库认识的令牌；别的 Conductor 实例的令牌不在其中）。"""
    if not tokens:
        return {}
    rows = session.execute(
        text("SELECT token, id FROM jobs WHERE token = ANY(:tokens)"), {"tokens": list(tokens)}
    )
    return {r.token: r.id for r in rows}
