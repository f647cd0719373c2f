"""作业范围的凭据：运行中的作业里的 Slurm 命令（squeue、scancel…）凭它访问 API，无需另配令牌。

明文为 cdj_<作业号>_<该次执行的追踪令牌>。追踪令牌（jobs.token）每次认领新生成、从不经 API
对外给出；服务按作业号取行，常数时间比较令牌，并要求作业仍是 RUNNING：作业结束、被取消或重新排队
即失效，新的执行拿到新的凭据。权限即该作业的账户（不是管理员）。见 docs/security.md。
"""

from __future__ import annotations

JOB_TOKEN_PREFIX = "cdj_"
# 作业号与追踪令牌（32 个十六进制字符）的合理上限：过长的串不必查库
_MAX_LENGTH = 120


def job_credential(job_id: int, token: str) -> str:
    """作业某次执行的凭据明文（放进作业环境的 CONDUCTOR_TOKEN）。"""
    return f"{JOB_TOKEN_PREFIX}{job_id}_{token}"


def parse_job_credential(text: str) -> tuple[int, str] | None:
    """cdj_<作业号>_<令牌> → (作业号, 令牌)；不是这种写法时 None。"""
    if not text.startswith(JOB_TOKEN_PREFIX) or len(text) > _MAX_LENGTH:
        return None
    job, sep, secret = text[len(JOB_TOKEN_PREFIX) :].partition("_")
    if not sep or not job.isdigit() or not secret or len(job) > 19:
        return None
    return int(job), secret
