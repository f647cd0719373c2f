"""作业依赖：`afterok:12:13,afterany:14` 的解析与判定（纯函数）。

判定结果三种：READY 可以开始；WAITING 还要等；NEVER 永远不会满足（作业保持 PENDING，
原因 DependencyNeverSatisfied，直到被取消——与 Slurm 默认的 kill_invalid_depend=no 一致）。
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from conductor.states import TERMINAL_STATES, JobState

KINDS = ("after", "afterany", "afterok", "afternotok", "singleton")
_ITEM = re.compile(r"(after|afterany|afterok|afternotok):(\d{1,18}(?::\d{1,18})*)", re.ASCII)
_FORMS = "应为 after、afterany、afterok、afternotok 加 :作业号，或 singleton，多个用 , 或 ? 连接"


class DepState(StrEnum):
    NONE = "NONE"  # 没有依赖
    WAITING = "WAITING"
    SATISFIED = "SATISFIED"
    NEVER = "NEVER"


@dataclass(frozen=True)
class Condition:
    kind: str
    job_ids: tuple[int, ...]  # singleton 为空


@dataclass(frozen=True)
class Dependency:
    conditions: tuple[Condition, ...]
    any_of: bool  # "?" 连接：任一满足即可；"," 连接：全部满足

    @property
    def job_ids(self) -> set[int]:
        return {j for c in self.conditions for j in c.job_ids}

    def __str__(self) -> str:
        parts = [c.kind + "".join(f":{j}" for j in c.job_ids) for c in self.conditions]
        return ("?" if self.any_of else ",").join(parts)


def parse_dependency(value: str) -> Dependency:
    text = value.strip()
    if "," in text and "?" in text:
        raise ValueError(f"依赖 {value!r} 不能同时用 , 与 ? 连接")
    any_of = "?" in text
    conditions = []
    for part in text.split("?" if any_of else ","):
        item = part.strip()
        if item == "singleton":
            conditions.append(Condition("singleton", ()))
            continue
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"依赖 {value!r} 中的 {item!r} 无效，{_FORMS}")
        conditions.append(Condition(match[1], tuple(int(j) for j in match[2].split(":"))))
    return Dependency(tuple(conditions), any_of)


@dataclass(frozen=True)
class Target:
    """被依赖作业的当前状态（数组作业为全部任务的状态）。"""

    states: tuple[JobState, ...]


def _condition(cond: Condition, targets: Mapping[int, Target], singleton_busy: bool) -> DepState:
    if cond.kind == "singleton":
        return DepState.WAITING if singleton_busy else DepState.SATISFIED
    results = []
    for job_id in cond.job_ids:
        target = targets.get(job_id)
        if target is None:  # 被依赖的作业已不存在（提交时校验过存在）：永远无法满足
            results.append(DepState.NEVER)
            continue
        results.append(_one(cond.kind, target))
    if DepState.NEVER in results:
        return DepState.NEVER
    if DepState.WAITING in results:
        return DepState.WAITING
    return DepState.SATISFIED


def _one(kind: str, target: Target) -> DepState:
    states = target.states
    if kind == "after":  # 已开始（或已结束、被取消）
        return DepState.WAITING if JobState.PENDING in states else DepState.SATISFIED
    if not all(s in TERMINAL_STATES for s in states):
        # afterok 的目标已有任务失败时不必再等
        failed = any(s in TERMINAL_STATES and s is not JobState.COMPLETED for s in states)
        if kind == "afterok" and failed:
            return DepState.NEVER
        return DepState.WAITING
    if kind == "afterany":
        return DepState.SATISFIED
    ok = all(s is JobState.COMPLETED for s in states)
    if kind == "afterok":
        return DepState.SATISFIED if ok else DepState.NEVER
    # afternotok：以失败、超时、节点故障或取消结束（数组：至少一个任务如此）
    return DepState.NEVER if ok else DepState.SATISFIED


def evaluate(
    dep: Dependency, targets: Mapping[int, Target], singleton_busy: bool = False
) -> DepState:
    """依赖的当前判定。singleton_busy：同名同账户的更早作业是否还未结束。"""
    results = [_condition(c, targets, singleton_busy) for c in dep.conditions]
    if dep.any_of:
        if DepState.SATISFIED in results:
            return DepState.SATISFIED
        return DepState.NEVER if all(r is DepState.NEVER for r in results) else DepState.WAITING
    if DepState.NEVER in results:
        return DepState.NEVER
    return DepState.WAITING if DepState.WAITING in results else DepState.SATISFIED
