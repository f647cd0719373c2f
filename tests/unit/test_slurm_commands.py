"""Slurm 替身命令的纯逻辑：作业号列表、状态名、sbatch 命令行、squeue -O、scancel 的信号名、
sacct 的时间窗与 Slurm 的时间写法（src/common/parse_time.c）。"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from conductor.client import sbatch as directives
from conductor.client.slurm import sacct, sbatch, scancel, squeue
from conductor.client.slurm.grammar import GrammarError, expand_job_ids, parse_states, split_list
from conductor.slurm_time import SlurmTimeError, parse_slurm_time

NOW = datetime(2026, 3, 10, 15, 30, 45, tzinfo=UTC)


# —— 作业号与状态 ——


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("12", ["12"]),
        ("12_3", ["12_3"]),
        ("12_[1-3]", ["12_1", "12_2", "12_3"]),
        ("12_[1,4-8:2]", ["12_1", "12_4", "12_6", "12_8"]),
        ("12_[0-2%1]", ["12_0", "12_1", "12_2"]),
        ("12,13_[1-2],14", ["12", "13_1", "13_2", "14"]),
        ("12_*", ["12"]),
    ],
)
def test_job_id_lists_expand_like_slurm(text: str, refs: list[str]) -> None:
    assert expand_job_ids(text) == refs


@pytest.mark.parametrize("text", ["abc", "12_", "12_[3-1]", "12_[a]", "12.batch", "-1", ""])
def test_bad_job_ids_are_refused(text: str) -> None:
    with pytest.raises(GrammarError, match="Invalid job id"):
        expand_job_ids(text)


def test_steps_are_kept_only_when_allowed() -> None:
    assert expand_job_ids("12.batch,13_[1-2].0", allow_step=True) == [
        "12.batch",
        "13_1.0",
        "13_2.0",
    ]


def test_split_list_keeps_commas_inside_brackets() -> None:
    assert split_list("12_[1,3],13, ,14") == ["12_[1,3]", "13", "14"]


def test_states_accept_full_and_compact_names_in_any_case() -> None:
    assert parse_states("pd,R,completed,CA,oom,to") == {
        "PENDING",
        "RUNNING",
        "COMPLETED",
        "CANCELLED",
        "OUT_OF_MEMORY",
        "TIMEOUT",
    }
    with pytest.raises(GrammarError, match="Invalid job state specified: bogus"):
        parse_states("R,bogus")


# —— sbatch 的命令行 ——


def test_sbatch_stops_at_the_script_and_keeps_its_arguments() -> None:
    cmd = sbatch.parse_command(["-J", "x", "--parsable", "job.sh", "-J", "arg"])
    assert cmd.flags == {"parsable"}
    assert cmd.tokens == ["-J", "x"]
    assert (cmd.script, cmd.script_args) == ("job.sh", ["-J", "arg"])


def test_sbatch_short_options_bundle_and_take_attached_values() -> None:
    cmd = sbatch.parse_command(["-HWc4", "-Jname", "-t", "5", "--mem=2G", "--chdir", "/tmp"])
    assert cmd.flags == {"wait"}
    assert cmd.tokens == ["-H", "-c", "4", "-J", "name", "-t", "5", "--mem=2G", "--chdir=/tmp"]
    assert cmd.script is None  # 从标准输入读
    opts = directives.parse_args(cmd.tokens)
    assert (opts.hold, opts.cpus_per_task, opts.job_name, opts.time, opts.mem, opts.chdir) == (
        True,
        4,
        "name",
        "5",
        "2G",
        "/tmp",
    )


def test_sbatch_long_option_prefixes_and_wrap() -> None:
    cmd = sbatch.parse_command(["--pars", "--wrap", "echo hi", "--test-only", "--job-n=w"])
    assert cmd.flags == {"parsable", "test_only"}
    assert cmd.wrap == "echo hi"
    assert cmd.tokens == ["--job-name=w"]
    assert sbatch.wrap_script("echo hi") == (
        "#!/bin/sh\n# This script was created by sbatch --wrap.\n\necho hi\n"
    )


def test_sbatch_flags_with_optional_values_and_unknown_options_reach_the_parser() -> None:
    cmd = sbatch.parse_command(["--exclusive=user", "-Z", "--frob=1", "job.sh"])
    assert cmd.tokens == ["--exclusive=user", "-Z", "--frob=1"]
    with pytest.raises(directives.SbatchError, match="不认识的选项：'-Z'"):
        directives.parse_args(cmd.tokens)


def test_sbatch_ambiguous_prefix_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sbatch.parse_command(["--gpus-per", "1"])
    assert exc.value.code == 1
    assert capsys.readouterr().err.startswith("sbatch: error: option '--gpus-per' is ambiguous")


def test_sbatch_wait_exit_status_follows_the_job() -> None:
    assert sbatch._exit_status("3:0") == 3
    assert sbatch._exit_status("0:9") == 1  # 被信号杀死：同 sbatch 的 _job_wait
    assert sbatch._exit_status(None) == 0


# —— squeue、scancel ——


def test_squeue_long_format_names_become_percent_fields() -> None:
    assert squeue.long_format("jobid,name:30,state:.8,reasonlist:0") == "%20i%30j%.8T%0R"
    with pytest.raises(GrammarError, match="Invalid job format specification: nope"):
        squeue.long_format("jobid,nope")


def test_squeue_sorts_by_partition_state_then_priority() -> None:
    jobs = [
        {"job_id": 1, "partition": "b", "state": "RUNNING", "priority": 5},
        {"job_id": 2, "partition": "a", "state": "RUNNING", "priority": 1},
        {"job_id": 3, "partition": "a", "state": "PENDING", "priority": 1},
        {"job_id": 4, "partition": "a", "state": "PENDING", "priority": 9},
    ]
    assert [j["job_id"] for j in sorted(jobs, key=squeue.sort_key)] == [4, 3, 2, 1]


@pytest.mark.parametrize(("text", "name"), [("USR1", "USR1"), ("sigusr2", "USR2"), ("10", "USR1")])
def test_scancel_signal_names(text: str, name: str) -> None:
    assert scancel.signal_name(text) == name


@pytest.mark.parametrize("text", ["FOO", "999", "SIG_DFL"])
def test_scancel_refuses_unknown_signals(text: str) -> None:
    with pytest.raises(GrammarError, match="Invalid job signal"):
        scancel.signal_name(text)


def test_records_fill_optional_fields_from_what_the_list_has() -> None:
    from conductor.client.slurm.records import convert_mb, normalize

    item = normalize(
        {
            "account": "a",
            "tres_req_str": "cpu=4,mem=2G,node=2",
            "tres_alloc_str": "cpu=4",
            "nodes": 2,
        }
    )
    assert (item["user"], item["alloc_tres"], item["req_mem"]) == ("a", "cpu=4", "1G")
    assert (
        normalize({"user": "u", "account": "a", "memory_bytes": 100 * 2**20})["req_mem"] == "100M"
    )
    assert [convert_mb(m) for m in (100, 1024, 1500, 2**20)] == ["100M", "1G", "1.46G", "1T"]


# —— sacct 的时间窗 ——


def test_sacct_default_window_is_today_since_midnight() -> None:
    start, end = sacct.window(None, None, False, False, NOW, UTC)
    assert (start, end) == (datetime(2026, 3, 10, tzinfo=UTC), NOW)


def test_sacct_with_jobs_looks_back_to_the_epoch() -> None:
    assert sacct.window(None, None, True, False, NOW, UTC) == (sacct.EPOCH, NOW)


def test_sacct_with_states_only_defaults_to_now() -> None:
    assert sacct.window(None, None, False, True, NOW, UTC) == (NOW, NOW)
    start = datetime(2026, 3, 8, 15, 30, 45, tzinfo=UTC)
    assert sacct.window("now-2days", None, False, True, NOW, UTC) == (start, start)


def test_sacct_selection_uses_the_window() -> None:
    s, e = NOW - timedelta(hours=1), NOW
    old = {
        "state": "COMPLETED",
        "submit_time": "2026-03-01T00:00:00+00:00",
        "end_time": "2026-03-01T01:00:00+00:00",
    }
    recent = {**old, "end_time": "2026-03-10T15:00:00+00:00"}
    running = {"state": "RUNNING", "submit_time": "2026-03-01T00:00:00+00:00", "end_time": None}
    future = {"state": "PENDING", "submit_time": "2026-03-11T00:00:00+00:00", "end_time": None}
    assert [sacct.selected(j, s, e, None) for j in (old, recent, running, future)] == [
        False,
        True,
        True,
        False,
    ]
    assert sacct.selected(recent, s, e, frozenset({"FAILED"})) is False
    assert sacct.selected(recent, s, e, frozenset({"COMPLETED"})) is True


# —— Slurm 的时间写法（parse_time，past=1）——


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-2days", NOW - timedelta(days=2)),
        ("now+1hour", NOW + timedelta(hours=1)),
        ("now-30minutes", NOW - timedelta(minutes=30)),
        ("now-90", NOW - timedelta(seconds=90)),  # 不写单位为秒
        ("now-1week", NOW - timedelta(weeks=1)),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T08:05", datetime(2026, 1, 31, 8, 5, tzinfo=UTC)),
        ("2026-01-31T08:05:09", datetime(2026, 1, 31, 8, 5, 9, tzinfo=UTC)),
        ("0131", datetime(2026, 1, 31, tzinfo=UTC)),
        ("1225", datetime(2025, 12, 25, tzinfo=UTC)),  # 月份在今天之后：past 取去年
        ("123124", datetime(2024, 12, 31, tzinfo=UTC)),
        ("03/09/26", datetime(2026, 3, 9, tzinfo=UTC)),
        ("08:00", datetime(2026, 3, 10, 8, 0, tzinfo=UTC)),
        ("16:00", datetime(2026, 3, 10, 16, 0, tzinfo=UTC)),  # past：只给时刻就是今天
        ("9:30pm", datetime(2026, 3, 10, 21, 30, tzinfo=UTC)),
        ("midnight", datetime(2026, 3, 10, tzinfo=UTC)),
        ("today", datetime(2026, 3, 10, tzinfo=UTC)),
        ("teatime", datetime(2026, 3, 10, 16, 0, tzinfo=UTC)),
        ("uts1700000000", datetime.fromtimestamp(1700000000, UTC)),
    ],
)
def test_slurm_time_forms(text: str, expected: datetime) -> None:
    assert parse_slurm_time(text, NOW, UTC) == expected


def test_slurm_time_uses_the_given_local_zone() -> None:
    cst = timezone(timedelta(hours=8))
    # 15:30 UTC 是 23:30（+08:00）：本地的“今天 00:00”是 3 月 10 日 00:00 +08:00
    assert parse_slurm_time("midnight", NOW, cst) == datetime(2026, 3, 10, tzinfo=cst)
    assert parse_slurm_time("2026-01-31", NOW, cst).utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("text", "pos"),
    [("bad", 0), ("now-", 3), ("2026-13-01", 5), ("24:00", 0), ("12:7", 4), ("1332", 0)],
)
def test_slurm_time_errors_name_the_position(text: str, pos: int) -> None:
    with pytest.raises(SlurmTimeError) as exc:
        parse_slurm_time(text, NOW, UTC)
    assert str(exc.value) == f"Invalid time specification (pos={pos}): {text}"
