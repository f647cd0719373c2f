"""作业状态的全部改变：每个都是一条带条件的 UPDATE（比较并交换），外加资源的归还。

终态永不改变；API 取消、节点代理上报结束、调度器对账彼此竞争时，
谁的条件先成立谁生效，另一方得到“未改变”，不会互相覆盖。
WHERE 里的源状态由 states.ALLOWED_TRANSITIONS 推出（_sources），转换表是唯一的规则。
资源释放（released_at）与状态分开：取消后进程可能还在宽限期内运行，
资源要等执行真正结束才归还，且只归还一次。
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session

from conductor.arrays import expand_node
from conductor.models import RUNNABLE
from conductor.policy import Placement
from conductor.states import REQUEUE_SOURCES, JobState, can_transition, sources_of
from conductor.usage import Usage


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
    # 批处理步（脚本及其子孙）的用量：与资源一同写进作业行（已取消的作业也写）
    usage: Usage | None = None


@dataclass(frozen=True)
class CancelResult:
    """取消的结果：previous 为取消前的状态；changed 表示本次调用是否生效。"""

    previous: JobState
    changed: bool
    node_id: str | None


def _sources(*targets: JobState) -> str:
    """能转换到全部 targets 的源状态，写成 SQL 的 IN 列表（按枚举的声明顺序）。"""
    common = set.intersection(*(set(sources_of(t)) for t in targets))
    return ", ".join(f"'{s.value}'" for s in JobState if s in common)


# 执行结束时可以写下的终态；CANCELLED 只由用户的取消写入
EXECUTION_ENDS = (
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.TIMEOUT,
    JobState.NODE_FAIL,
    JobState.OUT_OF_MEMORY,
)


# 热路径上的语句在模块加载时构造一次，不在每次调用时重建
# 认领：PENDING → RUNNING。可调度条件包在 CASE 里，使部分索引 ix_jobs_queue 无从匹配，
# 行只能按主键找：大批提交之后、自动 ANALYZE 之前，统计信息以为排队作业很少，
# 否则规划器会沿该索引扫描整个队列（10 万排队时每次认领约 0.25 秒）
_CLAIM = text(
    f"""
    UPDATE jobs SET state = 'RUNNING', start_time = clock_timestamp(),
           node_id = v.node_id, node_name = v.node_name, token = v.token,
           node_ids = CAST(v.node_ids AS jsonb), node_names = CAST(v.node_names AS jsonb),
           agent_id = v.agent_id, node_host = v.host, epoch = :epoch,
           released_at = NULL, state_reason = NULL, exit_code = NULL, error_msg = NULL,
           end_time = NULL,
           memory_bytes = CASE WHEN jobs.whole_node_memory AND v.node_memory IS NOT NULL
                               THEN v.node_memory ELSE jobs.memory_bytes END
    FROM unnest(CAST(:ids AS bigint[]), CAST(:nodes AS text[]), CAST(:names AS text[]),
                CAST(:tokens AS text[]), CAST(:agents AS text[]), CAST(:hosts AS text[]),
                CAST(:memories AS bigint[]), CAST(:all_ids AS text[]), CAST(:all_names AS text[]))
         AS v(id, node_id, node_name, token, agent_id, host, node_memory, node_ids, node_names)
    WHERE jobs.id = v.id
          AND (CASE WHEN jobs.state IN ({_sources(JobState.RUNNING)}) AND {RUNNABLE}
                         AND (jobs.node_id IS NULL OR jobs.released_at IS NOT NULL)
                    THEN true ELSE false END)
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
    node_memories: Sequence[int | None] | None = None,
) -> list[dict]:
    """PENDING → RUNNING（批量）。返回真正认领到的作业行；已被取消、挂起的不会出现。

    重新排队的作业在上一次执行的资源归还（released_at）之前不能被认领：同一作业绝不会有两次执行
    同时存在（见 requeue_job）。

    node_ids/node_names 写下整个分配（单节点作业为一个元素的列表），node_id/node_name 是其中第一个
    （批处理节点）；agent_ids、hosts 是第一个节点的。node_memories 为各作业拿到的节点内存字节数
    （多节点作业为各节点中最小的）：--mem=0 的作业在认领时记下它（查询的 tres_alloc_str、
    记账照实显示，每个节点都至少有这么多），排队时这一列为 0。"""
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
            "memories": list(node_memories)
            if node_memories is not None
            else [None] * len(placements),
            "all_ids": [json.dumps(list(p.node_ids)) for p in placements],
            "all_names": [json.dumps(list(p.node_names)) for p in placements],
            "epoch": epoch,
        },
    )
    claimed = [dict(r._mapping) for r in rows]
    _name_outputs_on_node(session, claimed)
    return claimed


_NAME_OUTPUTS = text(
    """
    UPDATE jobs SET stdout_path = v.out, stderr_path = v.err
    FROM unnest(CAST(:ids AS bigint[]), CAST(:outs AS text[]), CAST(:errs AS text[]))
         AS v(id, out, err)
    WHERE jobs.id = v.id
    """
)


def _name_outputs_on_node(session: Session, rows: list[dict]) -> None:
    """输出文件名含 %N 的作业：认领时才知道节点，在同一事务里展开并写回（行也一并改好）。

    模式单独保存：作业若被重新排队、改派到别的节点，再次认领时按新节点重新展开。"""
    named = [r for r in rows if r.get("stdout_pattern") or r.get("stderr_pattern")]
    for r in named:
        for column in ("stdout", "stderr"):
            pattern = r.get(f"{column}_pattern")
            if pattern:
                r[f"{column}_path"] = expand_node(pattern, r["node_name"] or "")
    if named:
        session.execute(
            _NAME_OUTPUTS,
            {
                "ids": [r["id"] for r in named],
                "outs": [r["stdout_path"] for r in named],
                "errs": [r["stderr_path"] for r in named],
            },
        )


# RUNNING → 终态（令牌为栅栏）
_FINISH = text(
    f"""
    UPDATE jobs SET state = v.state, exit_code = v.exit_code, error_msg = v.error_msg,
           end_time = clock_timestamp()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:states AS text[]),
                CAST(:codes AS text[]), CAST(:msgs AS text[]), CAST(:tokens AS text[]))
         AS v(id, state, exit_code, error_msg, token)
    WHERE jobs.id = v.id AND jobs.state IN ({_sources(*EXECUTION_ENDS)})
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
        if o.state not in EXECUTION_ENDS:
            raise ValueError(f"不能以 {o.state} 结束作业")
    ids = [o.job_id for o in outcomes]
    codes = [o.exit_code for o in outcomes]
    tokens = [o.token for o in outcomes]
    _requeue_node_failures(session, [o for o in outcomes if o.state is JobState.NODE_FAIL])
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
    release(session, ids, codes, tokens, [o.usage for o in outcomes])
    return changed_ids


# 归还资源，每个作业只一次；顺带记下执行器测得的批处理步用量。
# 已重新排队的作业（PENDING）归还上一次执行的资源时不记它的退出码与用量
_RELEASE = text(
    """
    UPDATE jobs SET released_at = clock_timestamp(),
           exit_code = CASE WHEN jobs.state = 'PENDING' THEN jobs.exit_code
                            ELSE COALESCE(jobs.exit_code, v.exit_code) END,
           max_rss_bytes = CASE WHEN jobs.state = 'PENDING' THEN jobs.max_rss_bytes
                                ELSE COALESCE(v.rss, jobs.max_rss_bytes) END,
           user_cpu_seconds = CASE WHEN jobs.state = 'PENDING' THEN jobs.user_cpu_seconds
                                   ELSE COALESCE(v.ucpu, jobs.user_cpu_seconds) END,
           system_cpu_seconds = CASE WHEN jobs.state = 'PENDING' THEN jobs.system_cpu_seconds
                                     ELSE COALESCE(v.scpu, jobs.system_cpu_seconds) END
    FROM unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[]), CAST(:tokens AS text[]),
                CAST(:rss AS bigint[]), CAST(:ucpu AS float8[]), CAST(:scpu AS float8[]))
         AS v(id, exit_code, token, rss, ucpu, scpu)
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
    usages: Sequence[Usage | None] | None = None,
) -> list[int]:
    """归还资源，每个作业只归还一次；顺带补上尚缺的退出码与批处理步的用量。返回本次释放的作业 id。

    给出令牌时只释放该次认领占用的资源。
    """
    if not job_ids:
        return []
    codes = list(exit_codes) if exit_codes is not None else [None] * len(job_ids)
    fences = list(tokens) if tokens is not None else [None] * len(job_ids)
    used = [u or Usage() for u in usages] if usages is not None else [Usage()] * len(job_ids)
    rows = session.execute(
        _RELEASE,
        {
            "ids": list(job_ids),
            "codes": codes,
            "tokens": fences,
            "rss": [u.max_rss_bytes for u in used],
            "ucpu": [u.user_cpu_seconds for u in used],
            "scpu": [u.system_cpu_seconds for u in used],
        },
    )
    released = [r[0] for r in rows]
    close_steps(session, job_ids, fences)
    return released


# 作业尚未结束的状态（SQL 的 IN 列表）
_LIVE = ", ".join(f"'{s.value}'" for s in JobState if not s.is_terminal)

# 作业已是终态而作业步还记着 RUNNING：批处理脚本结束时 Slurm 终止余下的作业步，记为 CANCELLED；
# 节点失联的记为 NODE_FAIL（作业步随节点丢失）
_CLOSE_STEPS = text(
    f"""
    UPDATE job_steps SET state = CASE WHEN jobs.state = 'NODE_FAIL' THEN 'NODE_FAIL'
                                      ELSE 'CANCELLED' END,
           end_time = COALESCE(jobs.end_time, clock_timestamp())
    FROM jobs, unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[])) AS v(id, token)
    WHERE job_steps.job_id = v.id AND jobs.id = v.id AND job_steps.state = 'RUNNING'
          AND jobs.state NOT IN ({_LIVE})
          AND (v.token IS NULL OR jobs.token = v.token)
    """
)


def close_steps(
    session: Session, job_ids: Sequence[int], tokens: Sequence[str | None] | None = None
) -> None:
    """已结束的作业里仍记着 RUNNING 的作业步一并结束（与作业的结局同一事务）。给出令牌时只动该次认领的。"""
    if not job_ids:
        return
    fences = list(tokens) if tokens is not None else [None] * len(job_ids)
    session.execute(_CLOSE_STEPS, {"ids": list(job_ids), "tokens": fences})


# “占用资源中”的定义：已派发到节点、资源尚未归还（与 release 的条件互为两面）
HOLDING = "node_id IS NOT NULL AND released_at IS NULL"


def cancel(session: Session, job_id: int, by_uid: int | None = None) -> CancelResult | None:
    """PENDING/RUNNING → CANCELLED，记下取消者的 uid（by_uid）。作业不存在时返回 None。

    用行锁读出旧状态，两个并发取消只有一个 changed=True。
    """
    old = session.execute(
        text("SELECT state, node_id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id}
    ).first()
    if old is None:
        return None
    previous = JobState(old.state)
    if not can_transition(previous, JobState.CANCELLED):
        return CancelResult(previous=previous, changed=False, node_id=old.node_id)
    session.execute(
        text(
            """
            UPDATE jobs SET state = 'CANCELLED', end_time = clock_timestamp(),
                   error_msg = COALESCE(error_msg, '用户取消'), cancelled_by_uid = :uid
            WHERE id = :id
            """
        ),
        {"id": job_id, "uid": by_uid},
    )
    return CancelResult(previous=previous, changed=True, node_id=old.node_id)


_REQUEUE = text(
    f"""
    UPDATE jobs SET state = 'PENDING', start_time = NULL, node_id = NULL,
           node_name = NULL, node_host = NULL, epoch = NULL, token = NULL, agent_id = NULL,
           node_ids = NULL, node_names = NULL, released_at = NULL,
           memory_bytes = CASE WHEN jobs.whole_node_memory THEN 0 ELSE jobs.memory_bytes END
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[])) AS v(id, token)
    WHERE jobs.id = v.id AND jobs.token = v.token AND jobs.state IN ({_sources(JobState.PENDING)})
    RETURNING jobs.id
    """
)


def requeue(session: Session, claims: Sequence[tuple[int, str]]) -> list[int]:
    """RUNNING → PENDING：仅限确定从未启动的作业（认领后、交给代理前调度器崩溃）。

    分配（node_ids/node_names）清空，作业步的记录删除。

    以认领时生成的唯一令牌为条件：作业若已被重新认领（令牌已变），不会被拉回队列。
    claims 为 (作业 id, 令牌)。
    """
    if not claims:
        return []
    rows = session.execute(
        _REQUEUE,
        {"ids": [c[0] for c in claims], "tokens": [c[1] for c in claims]},
    )
    requeued = [r[0] for r in rows]
    if requeued:
        # 上一次执行的作业步不属于下一次执行（通常没有：从未启动的作业才会回到队列）
        session.execute(text("DELETE FROM job_steps WHERE job_id = ANY(:ids)"), {"ids": requeued})
    return requeued


_REQUEUE_SOURCES = ", ".join(f"'{s.value}'" for s in JobState if s in REQUEUE_SOURCES)

# 重新排队：回到 PENDING，重启次数加一，上一次执行的时间、退出码与说明清空。
# 分配、令牌与 released_at 保持原样：它们仍指着上一次执行，执行结束时的归还以这个令牌为栅栏，
# 认领要等 released_at 写下（或从未分配过）才可能成功——旧执行确认结束、资源归还之前不会有新执行
_REQUEUE_COLUMNS = """
    state = 'PENDING', start_time = NULL, end_time = NULL, exit_code = NULL, cancelled_by_uid = NULL,
    state_reason = NULL, restart_count = jobs.restart_count + 1, eligible_time = clock_timestamp(),
    memory_bytes = CASE WHEN jobs.whole_node_memory THEN 0 ELSE jobs.memory_bytes END
"""


@dataclass(frozen=True)
class RequeueResult:
    """重新排队的结果：previous 为之前的状态；changed 为是否生效；node_id 为仍需停止的执行所在节点
    （之前是 RUNNING 时），restart_count 为新的重启次数。"""

    previous: JobState
    changed: bool
    node_id: str | None
    restart_count: int


def requeue_job(session: Session, job_id: int) -> RequeueResult | None:
    """scontrol requeue：RUNNING 或已结束的作业 → PENDING（同一作业号从头再运行）。作业不存在时 None。

    运行中的作业：调用者随后让节点代理停止它的执行（同取消）；执行结束时的结局写不进来
    （作业已不是 RUNNING），只归还资源，之后新执行才能被认领。上一次执行的作业步记录删除。"""
    old = session.execute(
        text("SELECT state, node_id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job_id}
    ).first()
    if old is None:
        return None
    previous = JobState(old.state)
    if previous not in REQUEUE_SOURCES:
        return RequeueResult(previous, False, None, 0)
    row = session.execute(
        text(
            f"UPDATE jobs SET {_REQUEUE_COLUMNS}, error_msg = NULL "
            f"WHERE id = :id AND state IN ({_REQUEUE_SOURCES}) RETURNING restart_count"
        ),
        {"id": job_id},
    ).first()
    assert row is not None  # 行已锁住，状态不会在两句之间改变
    session.execute(text("DELETE FROM job_steps WHERE job_id = :id"), {"id": job_id})
    node = old.node_id if previous is JobState.RUNNING else None
    return RequeueResult(previous, True, node, row.restart_count)


# 节点失败的 --requeue 作业自动回到队列（而不是 NODE_FAIL），同样以该次执行的令牌为栅栏
_REQUEUE_ON_NODE_FAIL = text(
    f"""
    UPDATE jobs SET {_REQUEUE_COLUMNS}, error_msg = v.msg
    FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS text[]), CAST(:msgs AS text[]))
         AS v(id, token, msg)
    WHERE jobs.id = v.id AND jobs.state = 'RUNNING' AND jobs.requeue
          AND (v.token IS NULL OR jobs.token = v.token)
    RETURNING jobs.id
    """
)


def _requeue_node_failures(session: Session, outcomes: Sequence[Outcome]) -> list[int]:
    """NODE_FAIL 的结局中带 --requeue 的作业改为重新排队；返回这些作业 id（资源照常由 finish 归还）。"""
    if not outcomes:
        return []
    rows = session.execute(
        _REQUEUE_ON_NODE_FAIL,
        {
            "ids": [o.job_id for o in outcomes],
            "tokens": [o.token for o in outcomes],
            "msgs": [
                storable_text(f"{o.error_msg or '节点失联'}；作业带 --requeue，已自动重新排队")
                for o in outcomes
            ],
        },
    )
    requeued = [r[0] for r in rows]
    if requeued:
        session.execute(text("DELETE FROM job_steps WHERE job_id = ANY(:ids)"), {"ids": requeued})
    return requeued


def settle_lost(
    session: Session, claims: Sequence[tuple[int, str | None]], state: JobState, reason: str
) -> list[int]:
    """执行已不存在（节点或代理死亡）：RUNNING → FAILED/NODE_FAIL，并释放资源。

    claims 为 (作业 id, 认领令牌)。
    已取消而进程随节点消失的作业只释放资源。返回状态真正改变的作业 id。
    """
    return finish(session, [Outcome(j, state, None, reason, token) for j, token in claims])
