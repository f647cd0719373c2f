"""节点排空（Slurm 的 DRAIN）：不再往节点上放新作业，已在运行的照常跑完。

两个来源：管理员（node_drains 表，按节点名，RESUME 才解除），以及 Ray 报告正在排空的节点
（自动扩缩容器或云厂商要回收它）。节点上还有作业时为 draining，没有了为 drained（同 Slurm 的 DRNG / DRAIN）。
纯数据与纯函数，不碰数据库也不碰 Ray。
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Ray 报告排空、管理员并未排空时，sinfo -R 与 scontrol show node 显示的原因与操作者
RAY_REASON = "Ray 正在排空该节点（自动扩缩容或实例回收）"
RAY_USER = "ray"


@dataclass(frozen=True)
class Drain:
    """一个节点的排空：原因、操作者（用户名）与开始时刻（带时区）。"""

    node_name: str
    reason: str
    by: str
    since: datetime


def reason_error(reason: str | None) -> str | None:
    """排空必须写明原因（同 Slurm：You must specify a reason when DRAINING a node）；没问题时为 None。"""
    if reason is None or not reason.strip():
        return "You must specify a reason when DRAINING a node"
    if len(reason) > 1000:
        return "排空原因过长（最多 1000 个字符）"
    return None


def node_state(alive: bool, drained: bool, busy: bool, cpus_free: bool) -> str:
    """节点状态（/dashboard 的 state）：失联为 down；排空中还有作业为 draining、没有了为 drained；
    否则没有作业为 idle，CPU 全部分配为 allocated，其余 mixed（同 sinfo）。"""
    if not alive:
        return "down"
    if drained:
        return "draining" if busy else "drained"
    if not busy:
        return "idle"
    return "mixed" if cpus_free else "allocated"
