"""执行器的返回值 ExecResult，以及它对应的作业终态、Slurm 退出码与说明。"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from conductor.states import JobState
from conductor.timefmt import format_limit
from conductor.usage import Usage

# Slurm 的 SIG_OOM（253，slurm_protocol_defs.h）当作等待状态写进退出码：sacct 显示为 0:125
OOM_EXIT_CODE = "0:125"


@dataclass(frozen=True)
class ExecResult:
    """执行器的返回值。error 非空表示脚本没能启动；usage 为批处理步（脚本及其子孙）的用量。"""

    returncode: int | None
    timed_out: bool = False
    error: str | None = None
    usage: Usage | None = None


def format_exit_code(returncode: int | None) -> str | None:
    """把 Popen 的返回码转成 Slurm 的 "退出码:信号"；负值表示被该信号杀死。"""
    if returncode is None:
        return None
    if returncode < 0:
        return f"0:{-returncode}"
    return f"{returncode}:0"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"信号 {signum}"


def classify(
    result: ExecResult, time_limit_seconds: int | None
) -> tuple[JobState, str | None, str | None]:
    """返回 (终态, Slurm 退出码 code:signal, error_msg)。"""
    code = format_exit_code(result.returncode)
    if result.error is not None:
        return JobState.FAILED, code, result.error
    if result.timed_out:
        limit = format_limit(time_limit_seconds)
        return JobState.TIMEOUT, code, f"超过时间限制（{limit}），作业已被终止"
    if result.usage is not None and result.usage.oom_killed:
        # 同 Slurm：批处理步里有进程被内存上限 OOM 杀掉，作业即 OUT_OF_MEMORY（脚本本身退出 0 也是）
        return (
            JobState.OUT_OF_MEMORY,
            OOM_EXIT_CODE,
            "作业的进程超出内存上限（--mem），被内核的 OOM 终止",
        )
    rc = result.returncode
    if rc == 0:
        return JobState.COMPLETED, code, None
    if rc is not None and rc < 0:
        return JobState.FAILED, code, f"脚本被信号 {-rc}（{signal_name(-rc)}）终止"
    return JobState.FAILED, code, f"脚本以非零退出码 {rc} 结束"


def node_lost_message(node_name: str) -> str:
    """节点失联时写入 error_msg 的说明。"""
    return f"运行作业的节点 {node_name} 已失联，作业随节点丢失"
