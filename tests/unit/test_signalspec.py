"""--signal 的写法与 scancel --signal 的信号名（同 Slurm 的 get_signal_opts / sig_name2num）。"""

from __future__ import annotations

import signal

import pytest

from conductor.jobcred import job_credential, parse_job_credential
from conductor.signalspec import SignalSpec, parse_signal_spec, signal_name, signal_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("USR1", SignalSpec(signal.SIGUSR1, 60, False)),  # 不写秒数默认 60
        ("SIGUSR2@30", SignalSpec(signal.SIGUSR2, 30, False)),
        ("usr1@0", SignalSpec(signal.SIGUSR1, 0, False)),
        ("10@5", SignalSpec(10, 5, False)),
        ("B:TERM@120", SignalSpec(signal.SIGTERM, 120, True)),
        ("b:15", SignalSpec(15, 60, True)),
        ("B:USR1@65535", SignalSpec(signal.SIGUSR1, 65535, True)),
    ],
)
def test_parse(text: str, expected: SignalSpec) -> None:
    assert parse_signal_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("R:USR1@60", "R:"),
        ("RB:USR1", "R:"),
        ("X:USR1", "前缀"),
        ("NOPE", "不认识的信号"),
        ("0", "1–64"),
        ("65", "1–64"),
        ("USR1@", "秒数"),
        ("USR1@-1", "秒数"),
        ("USR1@65536", "上限"),
        ("@60", "缺少信号"),
    ],
)
def test_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_signal_spec(text)


def test_names() -> None:
    assert signal_number("sigkill") == 9
    assert signal_number(" 12 ") == 12
    assert signal_name(10) == "USR1"
    assert signal_name(signal.SIGRTMIN + 1) == str(signal.SIGRTMIN + 1) or signal_name(
        signal.SIGRTMIN + 1
    ).startswith("RT")


def test_job_credential_roundtrip() -> None:
    text = job_credential(42, "abc123")
    assert text == "cdj_42_abc123"
    assert parse_job_credential(text) == (42, "abc123")
    for bad in ("cdt_42_abc", "cdj_", "cdj_x_abc", "cdj_42_", "cdj_42", "cdj_1_" + "a" * 200):
        assert parse_job_credential(bad) is None
