"""新代理上任：补记前任留下的结局，清理前任留下的进程。

前任代理死亡时 Ray 随之杀掉它的执行器，但已经结束的脚本留下了结果文件，后台进程也可能还在。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cluster.agent_db import AgentDb
from cluster.reporter import Reporter, describe_error
from cluster.spool import cancel_marker, leftover_results, started_marker
from conductor.exec_result import classify
from conductor.proctree import find_job_pids, kill_job_tree
from conductor.store import orphans, transitions
from conductor.store.transitions import Outcome

log = logging.getLogger("conductor.agent")

# 新代理上任时清理多久以内结束的、随前任丢失的作业的残留进程（秒）
ORPHAN_WINDOW = 3600.0


async def collect_results(db: AgentDb, reporter: Reporter) -> None:
    """补记前任留下的结果文件：它们的脚本已经结束，结局却没来得及写进数据库。

    只写仍为 RUNNING 且令牌相同的作业（finish 的条件），写入后删除文件；不认识的令牌
    （同一台机器上别的 Conductor 实例）的文件不动。数据库不可用时一直等：此时调度器也无法对账。"""
    found = await asyncio.to_thread(leftover_results)
    if not found:
        return
    jobs = await db.run_retrying(orphans.jobs_by_token, [r[1] for r in found])
    outcomes = []
    for job_id, token, limit, result in found:
        if jobs.get(token) != job_id:
            continue
        state, code, msg = classify(result, limit)
        outcomes.append(Outcome(job_id, state, code, msg, token, result.usage))
    try:
        await db.run_retrying(transitions.finish, outcomes)
    except Exception as exc:  # noqa: BLE001 - 写不进的交给上报循环逐个重试
        log.warning("补记前任留下的结局失败，交给上报循环：%s", describe_error(exc))
        for o in outcomes:
            reporter.submit(o)
        return
    reporter.recorded(outcomes)
    log.info("补记了前任留下的 %d 个作业结局：%s", len(outcomes), [o.job_id for o in outcomes])


async def sweep_orphans(db: AgentDb, node_id: str, host: str, agent_id: str) -> None:
    """按令牌清理随前任死亡的作业留下的进程。

    调度器对账时也会让新代理清理，但那只覆盖它判为丢失的作业；作业若已由别人（如 doctor）
    判为丢失，或调度器的清理消息丢了，孤儿进程就没人管。这里从数据库找出这些令牌。"""
    try:
        tokens = await db.run_retrying(
            orphans.orphan_tokens, node_id, host, agent_id, ORPHAN_WINDOW
        )
    except Exception:  # noqa: BLE001 - 清理只是兜底，失败不影响代理工作
        log.exception("查找前任代理留下的作业失败，不清理")
        return
    if tokens:
        # 扫描 /proc 是阻塞的：放进线程，不占事件循环
        killed = await asyncio.to_thread(_kill_tokens, tokens)
        log.info(
            "新代理上任：检查前任留下的 %d 个作业，清理了 %d 个的残留进程", len(tokens), killed
        )


def _kill_tokens(tokens: list[str]) -> int:
    """按令牌 SIGKILL 各作业的进程树，顺带删掉前任来不及删的标记；返回确有残留进程的作业数。"""
    found = 0
    for token in tokens:
        if find_job_pids(token):
            found += 1
            kill_job_tree(token, grace=0)
        for marker in (cancel_marker(token), started_marker(token)):
            with contextlib.suppress(OSError):
                marker.unlink(missing_ok=True)
    return found
