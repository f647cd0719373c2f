"""outcome.classify 的单元测试：返回码、超时、启动错误到 (终态, 退出码, 错误信息) 的映射。"""

from __future__ import annotations

import pytest

from conductor.exec_result import ExecResult, classify, signal_name
from conductor.states import JobState
from conductor.usage import Usage


def test_zero_is_completed() -> None:
    assert classify(ExecResult(0), None) == (JobState.COMPLETED, "0:0", None)
    # 时限与成功无关
    assert classify(ExecResult(0), 60) == (JobState.COMPLETED, "0:0", None)


@pytest.mark.parametrize(("rc", "code"), [(1, "1:0"), (3, "3:0"), (255, "255:0")])
def test_nonzero_exit_is_failed(rc: int, code: str) -> None:
    state, exit_code, msg = classify(ExecResult(rc), None)
    assert state is JobState.FAILED
    assert exit_code == code
    assert msg == f"脚本以非零退出码 {rc} 结束"


def test_exit_code_3_message_mentions_3() -> None:
    state, code, msg = classify(ExecResult(3), 3600)
    assert (state, code) == (JobState.FAILED, "3:0")
    assert msg is not None and "3" in msg


def test_killed_by_sigkill() -> None:
    state, code, msg = classify(ExecResult(-9), None)
    assert state is JobState.FAILED
    assert code == "0:9"
    assert msg == "脚本被信号 9（SIGKILL）终止"


def test_killed_by_sigterm() -> None:
    assert classify(ExecResult(-15), None) == (
        JobState.FAILED,
        "0:15",
        "脚本被信号 15（SIGTERM）终止",
    )


def test_unknown_signal_name() -> None:
    assert signal_name(9) == "SIGKILL"
    assert signal_name(250) == "信号 250"


@pytest.mark.parametrize(
    ("limit", "text"),
    [(90, "0:01:30"), (3600, "1:00:00"), (90061, "1-01:01:01"), (None, "UNLIMITED")],
)
def test_timeout_formats_limit(limit: int | None, text: str) -> None:
    """超时优先于返回码：即使进程被 SIGKILL 也判 TIMEOUT，退出码照实记录。"""
    state, code, msg = classify(ExecResult(-9, timed_out=True), limit)
    assert state is JobState.TIMEOUT
    assert code == "0:9"
    assert msg == f"超过时间限制（{text}），作业已被终止"


def test_timeout_with_zero_returncode_still_timeout() -> None:
    """脚本在被杀前恰好以 0 退出、但已判超时：仍为 TIMEOUT。"""
    assert classify(ExecResult(0, timed_out=True), 60) == (
        JobState.TIMEOUT,
        "0:0",
        "超过时间限制（0:01:00），作业已被终止",
    )


def test_error_is_failed_with_error_text() -> None:
    """脚本没能启动：FAILED，错误信息原样返回；没有返回码时退出码为空。"""
    err = "工作目录 /nope 不存在"
    assert classify(ExecResult(None, error=err), 60) == (JobState.FAILED, None, err)


def test_error_takes_precedence_over_timeout_and_returncode() -> None:
    err = "无法打开标准输出文件"
    assert classify(ExecResult(0, timed_out=True, error=err), 60) == (
        JobState.FAILED,
        "0:0",
        err,
    )


def test_oom_kill_is_out_of_memory_with_slurms_exit_code() -> None:
    """批处理步里有进程被 OOM 杀掉：OUT_OF_MEMORY，退出码同 sacct 的 0:125（SIG_OOM）；
    脚本自己被杀（-9）或仍以 0 退出都一样。"""
    for rc in (-9, 0, 1):
        state, code, msg = classify(ExecResult(rc, usage=Usage(1, 0.0, 0.0, True)), None)
        assert (state, code) == (JobState.OUT_OF_MEMORY, "0:125")
        assert msg is not None and "内存" in msg
    # 没有 OOM 的用量不改变结局；超时优先于 OOM
    assert classify(ExecResult(0, usage=Usage(1, 0.1, 0.1)), None)[0] is JobState.COMPLETED
    assert classify(ExecResult(-9, True, usage=Usage(oom_killed=True)), 60)[0] is JobState.TIMEOUT
