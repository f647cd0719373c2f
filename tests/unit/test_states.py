"""states 的单元测试：终态不可变、允许的转换逐一列举、sources_of 与转换表一致。"""

from __future__ import annotations

import itertools

import pytest

from conductor.states import TERMINAL_STATES, JobState, can_transition, sources_of

S = JobState

# 期望的完整转换表（独立于实现手写一份，防止转换表被悄悄放宽）
EXPECTED_ALLOWED: set[tuple[JobState, JobState]] = {
    (S.PENDING, S.RUNNING),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.RUNNING, S.PENDING),
    (S.RUNNING, S.COMPLETED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.TIMEOUT),
    (S.RUNNING, S.NODE_FAIL),
    (S.RUNNING, S.OUT_OF_MEMORY),
}

ALL_PAIRS = list(itertools.product(list(JobState), repeat=2))


def test_terminal_states_exact() -> None:
    """终态恰好是这六个，且 is_terminal 与集合一致。"""
    assert {
        S.COMPLETED,
        S.FAILED,
        S.CANCELLED,
        S.TIMEOUT,
        S.NODE_FAIL,
        S.OUT_OF_MEMORY,
    } == TERMINAL_STATES
    for state in JobState:
        assert state.is_terminal is (state in TERMINAL_STATES)
    assert not S.PENDING.is_terminal
    assert not S.RUNNING.is_terminal


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_can_transition_matches_expected_table(current: JobState, target: JobState) -> None:
    """每一对状态：只有期望表中的转换被允许，其余一律拒绝（包括自环）。"""
    assert can_transition(current, target) is ((current, target) in EXPECTED_ALLOWED)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES), ids=lambda s: s.value)
def test_terminal_states_never_change(terminal: JobState) -> None:
    """终态到任何状态（包括自身）都不允许。"""
    assert [t for t in JobState if can_transition(terminal, t)] == []


def test_no_self_transitions() -> None:
    for state in JobState:
        assert not can_transition(state, state)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (S.PENDING, (S.RUNNING,)),
        (S.RUNNING, (S.PENDING,)),
        (S.COMPLETED, (S.RUNNING,)),
        (S.FAILED, (S.PENDING, S.RUNNING)),
        (S.CANCELLED, (S.PENDING, S.RUNNING)),
        (S.TIMEOUT, (S.RUNNING,)),
        (S.NODE_FAIL, (S.RUNNING,)),
        (S.OUT_OF_MEMORY, (S.RUNNING,)),
    ],
    ids=lambda v: v.value if isinstance(v, JobState) else "",
)
def test_sources_of(target: JobState, expected: tuple[JobState, ...]) -> None:
    """sources_of 给出的来源状态精确（顺序为转换表的声明顺序）。"""
    assert sources_of(target) == expected


def test_sources_of_consistent_with_can_transition() -> None:
    """sources_of 与 can_transition 是同一规则的两种视图。"""
    for target in JobState:
        assert set(sources_of(target)) == {s for s in JobState if can_transition(s, target)}
        # 带条件的 UPDATE 用它做 WHERE state IN (...)，终态绝不能出现在来源里
        assert not set(sources_of(target)) & TERMINAL_STATES
