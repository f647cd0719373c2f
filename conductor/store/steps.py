"""作业步（srun 在作业分配里启动的 12.0、12.1…）的记录：节点代理记下开始与结束，查询与列表读出。

写入都以作业的认领令牌为栅栏（同 transitions.finish）：作业若已被重新排队、再次认领，
旧执行迟到的上报不会记到新执行上。作业结束时仍在运行的作业步由 transitions.close_steps 一并结束。
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

# 作业步可以写下的终态（同 Slurm 的作业步状态）
STEP_ENDS = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"})
# Slurm 的 code:signal
_EXIT_CODE = re.compile(r"\d{1,3}:\d{1,3}")

_START = text(
    """
    INSERT INTO job_steps (job_id, step_id, name, state, ntasks, node_list, start_time)
    SELECT id, :step_id, :name, 'RUNNING', :ntasks, :node_list, clock_timestamp()
    FROM jobs WHERE id = :job_id AND state = 'RUNNING' AND token = :token
    ON CONFLICT (job_id, step_id) DO NOTHING
    RETURNING job_id
    """
)
# 重复的开始（代理重试）：同一次执行里已记下的这个作业步
_STARTED = text(
    """
    SELECT 1 FROM job_steps JOIN jobs ON jobs.id = job_steps.job_id
    WHERE job_steps.job_id = :job_id AND job_steps.step_id = :step_id
          AND jobs.state = 'RUNNING' AND jobs.token = :token
    """
)


def start_step(
    session: Session, job_id: int, token: str, step_id: int, name: str, ntasks: int, node_list: str
) -> bool:
    """记下作业步开始（RUNNING，start_time 为此刻）：只在作业正以该令牌运行时。

    返回是否已记下：新插入为 True；同一次执行里重复的开始（重试）不改动已有的行，也为 True；
    作业不在运行或令牌不符（已结束、已被重新认领）为 False，调用方不应再启动这个作业步。"""
    if step_id < 0:
        raise ValueError(f"作业步编号须为非负整数：{step_id}")
    params = {
        "job_id": job_id,
        "token": token,
        "step_id": step_id,
        "name": name,
        "ntasks": ntasks,
        "node_list": node_list,
    }
    if session.execute(_START, params).first() is not None:
        return True
    return session.execute(_STARTED, params).first() is not None


_FINISH = text(
    """
    UPDATE job_steps SET state = :state, exit_code = :exit_code, end_time = clock_timestamp(),
           max_rss_bytes = :max_rss_bytes, ave_rss_bytes = :ave_rss_bytes,
           user_cpu_seconds = :user_cpu_seconds, system_cpu_seconds = :system_cpu_seconds
    FROM jobs
    WHERE job_steps.job_id = :job_id AND job_steps.step_id = :step_id
          AND job_steps.state = 'RUNNING' AND jobs.id = job_steps.job_id AND jobs.token = :token
    RETURNING job_steps.job_id
    """
)


# 作业步用量的键（执行器测得，见 step_server.step_usage）：值为 None 或数
USAGE_KEYS = ("max_rss_bytes", "ave_rss_bytes", "user_cpu_seconds", "system_cpu_seconds")


def _usage_params(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    params: dict[str, Any] = {}
    for key in USAGE_KEYS:
        value = usage.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise ValueError(f"作业步用量 {key} 应为非负数：{value!r}")
        if value is not None and key.endswith("_bytes"):
            value = int(value)
        params[key] = value
    return params


def finish_step(
    session: Session,
    job_id: int,
    token: str,
    step_id: int,
    state: str,
    exit_code: str,
    usage: Mapping[str, Any] | None = None,
) -> bool:
    """记下作业步结束：state 为 STEP_ENDS 之一，exit_code 为 Slurm 的 code:signal（如 0:0、1:0、0:9）；
    usage 为用量（键见 USAGE_KEYS，缺的记 NULL）。

    只改仍为 RUNNING、且作业令牌相符的行（作业已取消而进程还在宽限期内时也照记）；返回是否改了。"""
    if state not in STEP_ENDS:
        raise ValueError(f"作业步不能以 {state} 结束（可用：{'、'.join(sorted(STEP_ENDS))}）")
    if not _EXIT_CODE.fullmatch(exit_code):
        raise ValueError(f"退出码应为 code:signal，如 0:0、1:0、0:9：{exit_code!r}")
    row = session.execute(
        _FINISH,
        {
            "job_id": job_id,
            "token": token,
            "step_id": step_id,
            "state": state,
            "exit_code": exit_code,
            **_usage_params(usage),
        },
    ).first()
    return row is not None


_OF = text(
    "SELECT job_id, step_id, name, state, exit_code, ntasks, node_list, start_time, end_time, "
    "max_rss_bytes, ave_rss_bytes, user_cpu_seconds, system_cpu_seconds "
    "FROM job_steps WHERE job_id = ANY(:ids) ORDER BY job_id, step_id"
)


def steps_of(session: Session, job_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """这些作业记下的作业步，按编号排序；每个给出的作业号都有一项（没有作业步为空列表）。

    每行的键：step_id（整数）、name、state、exit_code、ntasks、node_list、start_time、end_time，
    以及用量 max_rss_bytes、ave_rss_bytes、user_cpu_seconds、system_cpu_seconds（未测得为 None）。"""
    found: dict[int, list[dict[str, Any]]] = {j: [] for j in job_ids}
    if not job_ids:
        return found
    for r in session.execute(_OF, {"ids": list(job_ids)}):
        row = dict(r._mapping)
        found.setdefault(row.pop("job_id"), []).append(row)
    return found
