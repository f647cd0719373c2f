"""调度器纪元：每次（重）启动插入一行，行号即纪元，节点代理据此拒绝旧调度器迟到的派发。"""

from __future__ import annotations

from sqlmodel import Session

from conductor.models import SchedulerEpoch


def new_epoch(session: Session) -> int:
    """领取下一个纪元（scheduler_epochs 的自增主键）。"""
    row = SchedulerEpoch()
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id
