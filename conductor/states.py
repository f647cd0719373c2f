"""作业状态：枚举、终态集合、允许的转换与纯函数 can_transition。

数据库用带条件的 UPDATE 执行同一规则（见 store/transitions.py：WHERE 里的源状态由这张表推出）。
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "PENDING"  # 已持久化，等待资源
    RUNNING = "RUNNING"  # 已分配到节点并交给节点代理执行
    COMPLETED = "COMPLETED"  # 脚本退出码为 0
    FAILED = "FAILED"  # 非零退出、被信号杀死或执行进程丢失
    CANCELLED = "CANCELLED"  # 用户取消
    TIMEOUT = "TIMEOUT"  # 超过时间限制被终止
    NODE_FAIL = "NODE_FAIL"  # 运行作业的节点失联
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # 作业的进程超出内存上限（--mem），被内核 OOM 杀掉

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.OUT_OF_MEMORY,
    }
)

# RUNNING -> PENDING 仅用于调度器在派发前崩溃、作业确定从未启动时的重新排队
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {
            JobState.PENDING,
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMEOUT,
            JobState.NODE_FAIL,
            JobState.OUT_OF_MEMORY,
        }
    ),
}


# 重新排队（scontrol requeue）：运行中或已结束的作业回到 PENDING，同一作业号从头再运行。
# 这是唯一让终态改变的操作，且只由用户（或 --requeue 作业的节点失败）明确发起，不在上面的转换表里：
# 执行结束、取消、对账的写入仍然永远改不了终态。见 store/transitions.requeue_job
REQUEUE_SOURCES: frozenset[JobState] = frozenset({JobState.RUNNING} | TERMINAL_STATES)


def can_transition(current: JobState, target: JobState) -> bool:
    """终态永不改变；其余按 ALLOWED_TRANSITIONS。"""
    return target in ALLOWED_TRANSITIONS.get(current, frozenset())


def sources_of(target: JobState) -> tuple[JobState, ...]:
    """可以转换到 target 的所有状态，供带条件的 UPDATE 使用。"""
    return tuple(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)
