"""slurm_output 的金样测试：期望值逐字符照 Slurm 的源码推出（出处见 conductor/slurm_output.py）。

定宽的 sacct 每格后都有一个空格，行尾也有；这里用 \\n 拼接的字面量写出，尾随空格清楚可见。
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from conductor.slurm_output import (
    convert_num_unit,
    fold_pending_arrays,
    format_sacct,
    format_squeue,
    from_api,
    sacct_secs,
    squeue_secs,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def running() -> dict:
    return {
        "job_id": 12,
        "name": "sim",
        "account": "phys",
        "user": "bob",
        "state": "RUNNING",
        "allocated_cpus": 8,
        "submit_time": "2024-05-01T10:00:00Z",
        "start_time": "2024-05-01T10:58:01Z",
        "end_time": None,
        "partition": "gpu",
        "node_list": "node[01-02]",
        "exit_code": None,
        "state_reason": None,
        "priority": 200,
        "array_job_id": None,
        "array_task_id": None,
        "nodes": 2,
        "time_limit_seconds": None,
        "steps": [
            {
                "step_id": "12.batch",
                "name": "batch",
                "state": "RUNNING",
                "exit_code": None,
                "start_time": "2024-05-01T10:58:01Z",
                "end_time": None,
                "node_list": "node01",
                "ntasks": 1,
            },
            {
                "step_id": "12.0",
                "name": "hostname",
                "state": "COMPLETED",
                "exit_code": "0:0",
                "start_time": "2024-05-01T10:58:05Z",
                "end_time": "2024-05-01T10:59:04Z",
                "node_list": "node[01-02]",
                "ntasks": 2,
            },
        ],
    }


def pending() -> dict:
    return {
        "job_id": 13,
        "name": "train-big-model",
        "account": "phys",
        "user": "alice",
        "state": "PENDING",
        "allocated_cpus": 4,
        "submit_time": "2024-05-01T11:50:00Z",
        "start_time": None,
        "end_time": None,
        "partition": "batch",
        "node_list": "",
        "exit_code": None,
        "state_reason": "Resources",
        "priority": 100,
        "nodes": 2,
        "time_limit_seconds": 3600,
        "steps": [],
    }


def finished(**changes: object) -> dict:
    job = {
        "job_id": 20,
        "name": "post",
        "account": "chem",
        "user": "carol",
        "state": "COMPLETED",
        "allocated_cpus": 2,
        "submit_time": "2024-05-01T08:00:00Z",
        "start_time": "2024-05-01T08:00:00Z",
        "end_time": "2024-05-01T08:00:59Z",
        "partition": "batch",
        "node_list": "node03",
        "exit_code": "0:0",
        "state_reason": None,
        "priority": 1,
        "nodes": 1,
        "time_limit_seconds": 2 * 86400,
        "steps": [],
    }
    job.update(changes)
    return job


# ---------------------------------------------------------------- squeue


def test_squeue_default_view() -> None:
    assert format_squeue([running(), pending()], None, True, NOW) == (
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)\n"
        "                12       gpu      sim      bob  R    1:01:59      2 node[01-02]\n"
        "                13     batch train-bi    alice PD       0:00      2 (Resources)\n"
    )


def test_squeue_noheader_and_empty() -> None:
    assert format_squeue([], None, True, NOW) == (
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)\n"
    )
    assert format_squeue([], None, False, NOW) == ""
    assert format_squeue([pending()], "%i", False, NOW) == "13\n"


def test_squeue_custom_format() -> None:
    assert format_squeue([running(), pending()], "%.10i %t %R", True, NOW) == (
        "     JOBID ST NODELIST(REASON)\n        12 R node[01-02]\n        13 PD (Resources)\n"
    )


def test_squeue_truncation_and_justification() -> None:
    job = running() | {"name": "a-very-long-name", "node_list": "node[01-02],gpu[1-4]"}
    # %.5j 右对齐截断取前 5 个字符；%5j 左对齐截断；%.4N 与 %.4M 不截断（cut_output 为 false）
    out = format_squeue([job], "%.5j|%5j|%3j|%.4N|%.4M|%j", True, NOW)
    assert out == (
        " NAME|NAME |NAM|NODELIST|TIME|NAME\n"
        "a-ver|a-ver|a-v|node[01-02],gpu[1-4]|1:01:59|a-very-long-name\n"
    )
    # 左对齐的节点列表同样按宽度截断（"%.Ns"）
    assert format_squeue([job], "%6N|", False, NOW) == "node[0|\n"


def test_squeue_prefix_suffix_and_no_width() -> None:
    out = format_squeue([running()], "id=%i %.t!", True, NOW)
    assert out == "id=JOBID ST!\nid=12 R!\n"


def test_squeue_reason_shows_for_pending_failed_timeout_only() -> None:
    jobs = [
        pending() | {"state_reason": None},
        pending() | {"state_reason": "Priority"},
        finished(state="FAILED", exit_code="1:0", state_reason="NonZeroExitCode"),
        finished(state="TIMEOUT", state_reason=None),
        finished(state="CANCELLED"),
        finished(state="NODE_FAIL"),
        finished(state="OUT_OF_MEMORY", state_reason="OutOfMemory"),
    ]
    assert format_squeue(jobs, "%t %R", False, NOW) == (
        "PD (None)\n"
        "PD (Priority)\n"
        "F (NonZeroExitCode)\n"
        "TO (None)\n"
        "CA node03\n"
        "NF node03\n"
        "OOM (OutOfMemory)\n"
    )


def test_squeue_state_letters() -> None:
    states = ["PENDING", "RUNNING", "COMPLETING", "COMPLETED", "FAILED", "CANCELLED"]
    states += ["TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"]
    jobs = [finished(state=s) for s in states]
    assert format_squeue(jobs, "%t", False, NOW).split() == [
        "PD",
        "R",
        "CG",
        "CD",
        "F",
        "CA",
        "TO",
        "NF",
        "OOM",
    ]
    assert format_squeue([finished(state="OUT_OF_MEMORY")], "%T", False, NOW) == "OUT_OF_MEMORY\n"


def test_squeue_array_ids() -> None:
    task = running() | {"job_id": 40, "array_job_id": 39, "array_task_id": 3}
    out = format_squeue([task, running()], "%i %A %F %K", True, NOW)
    assert out == ("JOBID JOBID ARRAY_JOB_ID ARRAY_TASK_ID\n39_3 40 39 3\n12 12 12 N/A\n")


def test_squeue_folds_pending_array_tasks_like_slurm() -> None:
    """不带 -r：同一数组里作业名、分区相同的待排任务合成一行 39_[3-5,7]，原因用逗号连起来；
    运行中的、名字不同的、只剩一个的照常一行一个（src/squeue/print.c 的 _combine_pending_array_tasks）。"""

    def task(i: int, **kw: object) -> dict:
        return pending() | {"job_id": 40 + i, "array_job_id": 39, "array_task_id": i} | kw

    items = [
        task(2, state="RUNNING", node_list="node01", state_reason=None),
        task(5),
        task(3),
        task(7, state_reason="Priority"),
        task(4),
        task(6, name="other"),
    ]
    folded = fold_pending_arrays(items)
    out = format_squeue(folded, "%i %K %t %r", False, NOW)
    assert out == ("39_2 2 R None\n39_[3-5,7] 3-5,7 PD Resources,Priority\n39_6 6 PD Resources\n")
    # -r：不合并
    assert len(format_squeue(items, "%i", False, NOW).splitlines()) == 6


def test_squeue_limits_and_time_left() -> None:
    jobs = [
        running() | {"time_limit_seconds": 2 * 3600},  # 已运行 1:01:59
        pending(),  # 限时 1 小时
        finished(),  # 限时 2 天
        running() | {"time_limit_seconds": 600},  # 已超时：剩余为负
    ]
    assert format_squeue(jobs, "%.10l %.10L %M", True, NOW) == (
        "TIME_LIMIT  TIME_LEFT TIME\n"
        "   2:00:00      58:01 1:01:59\n"
        "   1:00:00    1:00:00 0:00\n"
        "2-00:00:00 1-23:59:01 0:59\n"
        "     10:00    INVALID 1:01:59\n"
    )
    assert format_squeue([running()], "%l %L", False, NOW) == "UNLIMITED UNLIMITED\n"
    # UNLIMITED 截断（cut_output 为 true）
    assert format_squeue([running()], "%.4l", False, NOW) == "UNLI\n"


def test_squeue_timestamps_and_na() -> None:
    out = format_squeue([running(), pending()], "%S %V %b", True, NOW)
    assert out == (
        "START_TIME SUBMIT_TIME TRES_PER_NODE\n"
        "2024-05-01T10:58:01 2024-05-01T10:00:00 N/A\n"
        "N/A 2024-05-01T11:50:00 N/A\n"
    )
    tokyo = timezone(timedelta(hours=9))
    assert format_squeue([running()], "%S", False, NOW, tz=tokyo) == "2024-05-01T19:58:01\n"


def test_squeue_other_fields() -> None:
    out = format_squeue([running(), pending()], "%u %a %P %C %D %Q %r %N|", True, NOW)
    assert out == (
        "USER ACCOUNT PARTITION CPUS NODES PRIORITY REASON NODELIST|\n"
        "bob phys gpu 8 2 200 None node[01-02]|\n"
        "alice phys batch 4 2 100 Resources |\n"
    )


def test_squeue_unknown_field() -> None:
    with pytest.raises(ValueError, match="%y 是 Slurm 的字段，但 Conductor 尚未支持"):
        format_squeue([], "%i %y", True, NOW)
    with pytest.raises(ValueError, match="%1 无效"):
        format_squeue([], "%1", True, NOW)
    # Slurm 没有 %-N：'-' 被当成字段字母
    with pytest.raises(ValueError, match="%- 无效"):
        format_squeue([], "%-8j", True, NOW)


def test_squeue_time_forms() -> None:
    assert squeue_secs(0) == "0:00"
    assert squeue_secs(59) == "0:59"
    assert squeue_secs(60) == "1:00"
    assert squeue_secs(3599) == "59:59"
    assert squeue_secs(3600) == "1:00:00"
    assert squeue_secs(86399) == "23:59:59"
    assert squeue_secs(2 * 86400) == "2-00:00:00"
    assert squeue_secs(-1) == "INVALID"
    assert squeue_secs(366 * 86400) == "INVALID"


# ---------------------------------------------------------------- sacct


def test_sacct_default_fixed_width_with_steps() -> None:
    assert format_sacct([running(), pending()], None, "none", True, False, NOW) == (
        "JobID           JobName  Partition    Account  AllocCPUS      State ExitCode \n"
        "------------ ---------- ---------- ---------- ---------- ---------- -------- \n"
        "12                  sim        gpu       phys          8    RUNNING      0:0 \n"
        "12.batch          batch                  phys          8    RUNNING      0:0 \n"
        "12.0           hostname                  phys          8  COMPLETED      0:0 \n"
        "13           train-big+      batch       phys          4    PENDING      0:0 \n"
    )


def test_sacct_allocations_only() -> None:
    assert format_sacct([running()], None, "none", False, True, NOW) == (
        "12                  sim        gpu       phys          8    RUNNING      0:0 \n"
    )


def test_sacct_parsable() -> None:
    assert format_sacct([running()], None, "p", True, False, NOW) == (
        "JobID|JobName|Partition|Account|AllocCPUS|State|ExitCode|\n"
        "12|sim|gpu|phys|8|RUNNING|0:0|\n"
        "12.batch|batch||phys|8|RUNNING|0:0|\n"
        "12.0|hostname||phys|8|COMPLETED|0:0|\n"
    )


def test_sacct_parsable2() -> None:
    # -P 不截断，也没有 --- 行
    assert format_sacct([running(), pending()], None, "p2", True, False, NOW) == (
        "JobID|JobName|Partition|Account|AllocCPUS|State|ExitCode\n"
        "12|sim|gpu|phys|8|RUNNING|0:0\n"
        "12.batch|batch||phys|8|RUNNING|0:0\n"
        "12.0|hostname||phys|8|COMPLETED|0:0\n"
        "13|train-big-model|batch|phys|4|PENDING|0:0\n"
    )
    assert format_sacct([pending()], ["jobid"], "p2", False, False, NOW) == "13\n"


def test_sacct_width_suffix_and_case() -> None:
    fields = ["jobid", "JobName%30", "start", "END", "elapsed", "nodelist", "state"]
    assert format_sacct([running(), pending()], fields, "none", True, True, NOW) == (
        "JobID                               JobName               Start"
        "                 End    Elapsed        NodeList      State \n"
        "------------ ------------------------------ ------------------- -------------------"
        " ---------- --------------- ---------- \n"
        "12                                      sim 2024-05-01T10:58:01"
        "             Unknown   01:01:59     node[01-02]    RUNNING \n"
        "13                          train-big-model             Unknown"
        "             Unknown   00:00:00   None assigned    PENDING \n"
    )


def test_sacct_negative_width_and_header_truncation() -> None:
    # 负宽度左对齐；表头按宽度截断但不加 +，值截断以 + 结尾
    out = format_sacct([pending()], ["JobName%-6", "Partition%3"], "none", True, False, NOW)
    assert out == "JobNam Par \n------ --- \ntrain+ ba+ \n"


def test_sacct_comma_list_in_one_item() -> None:
    out = format_sacct([pending()], ["JobID,State"], "p2", True, False, NOW)
    assert out == "JobID|State\n13|PENDING\n"


def test_sacct_cancelled_by() -> None:
    job = finished(state="CANCELLED", cancelled_by_uid=1000, exit_code="0:15")
    fields = ["State", "ExitCode"]
    assert format_sacct([job], fields, "none", False, False, NOW) == "CANCELLED+     0:15 \n"
    assert format_sacct([job], fields, "p2", False, False, NOW) == "CANCELLED by 1000|0:15\n"
    assert format_sacct([finished(state="CANCELLED")], ["State"], "p2", False, False, NOW) == (
        "CANCELLED\n"
    )


def test_sacct_step_rows() -> None:
    fields = ["JobID", "JobIDRaw", "JobName", "User", "NNodes", "NodeList", "Timelimit"]
    fields += ["Restarts", "Reason", "DerivedExitCode", "Submit"]
    assert format_sacct([running()], fields, "p2", True, False, NOW) == (
        "JobID|JobIDRaw|JobName|User|NNodes|NodeList|Timelimit|Restarts|Reason"
        "|DerivedExitCode|Submit\n"
        "12|12|sim|bob|2|node[01-02]|UNLIMITED|0|None|0:0|2024-05-01T10:00:00\n"
        "12.batch|12.batch|batch||1|node01||||" + "|2024-05-01T10:58:01\n"
        "12.0|12.0|hostname||2|node[01-02]||||" + "|2024-05-01T10:58:05\n"
    )


def test_sacct_array_task_ids() -> None:
    task = running() | {"job_id": 40, "array_job_id": 39, "array_task_id": 3}
    task["steps"] = [task["steps"][0] | {"step_id": "40.batch"}]
    out = format_sacct([task], ["JobID", "JobIDRaw"], "p2", False, False, NOW)
    assert out == "39_3|40\n39_3.batch|40.batch\n"


def test_sacct_time_and_usage_fields() -> None:
    fields = ["Elapsed", "ElapsedRaw", "CPUTime", "TotalCPU", "Timelimit", "AllocTRES"]
    fields += ["ReqMem", "MaxRSS", "AveRSS"]
    job = finished(total_cpu_seconds=61.5, alloc_tres="billing=2,cpu=2,node=1")
    assert format_sacct([job], fields, "p2", True, False, NOW) == (
        "Elapsed|ElapsedRaw|CPUTime|TotalCPU|Timelimit|AllocTRES|ReqMem|MaxRSS|AveRSS\n"
        "00:00:59|59|00:01:58|01:01.500|2-00:00:00|billing=2,cpu=2,node=1|||\n"
    )
    assert format_sacct([finished()], ["TotalCPU"], "p2", False, False, NOW) == "00:00:00\n"
    # ReqTRES：列表项的 tres_req_str（排队中的作业也有），作业步行留空
    asked = running() | {"tres_req_str": "cpu=8,mem=32G,node=2"}
    assert format_sacct([asked], ["JobID", "ReqTRES"], "p2", False, False, NOW) == (
        "12|cpu=8,mem=32G,node=2\n12.batch|\n12.0|\n"
    )
    # 定宽：数字与时长不截断，超宽照样输出
    wide = finished(allocated_cpus=123456)
    assert format_sacct([wide], ["AllocCPUS%3", "Elapsed%4"], "none", False, False, NOW) == (
        "123456 00:00:59 \n"
    )


@pytest.mark.parametrize(
    ("num", "text"),
    [
        (0, "0"),
        (512, "512"),
        (1024, "1K"),
        (1536, "1.50K"),
        (100 << 20, "100M"),
        (52678656, "50.24M"),
        (3 << 30, "3G"),
        (1 << 50, "1P"),
    ],
)
def test_convert_num_unit_like_slurm(num: int, text: str) -> None:
    """convert_num_unit2 的默认换算（sacct 不带 --units）：按 1024 换到最大单位，整数不带小数。"""
    assert convert_num_unit(num) == text


def test_sacct_shows_step_usage_from_the_api() -> None:
    """REST 的作业步带 max_rss/ave_rss（sacct 写法）与 total_cpu_seconds：sacct 原样显示在作业步行，
    作业行的 MaxRSS 为空（同 Slurm），TotalCPU 为作业的合计。"""
    job = finished(total_cpu_seconds=3.25)
    job["steps"] = [
        {"step_id": "20.batch", "name": "batch", "state": "COMPLETED", "exit_code": "0:0",
         "start_time": "2024-05-01T11:00:00Z", "end_time": "2024-05-01T11:00:59Z",
         "node_list": "node01", "ntasks": 1, "max_rss": "100M", "ave_rss": "100M",
         "total_cpu_seconds": 3.25},
    ]  # fmt: skip
    out = format_sacct([job], ["JobID", "MaxRSS", "AveRSS", "TotalCPU"], "p2", False, False, NOW)
    lines = out.splitlines()
    assert lines[0].split("|")[1:] == ["", "", "00:03.250"]
    assert lines[1].split("|")[1:] == ["100M", "100M", "00:03.250"]


def test_sacct_date_too_narrow() -> None:
    # strftime 放不下时整格为 #；Unknown 按宽度截断
    out = format_sacct([pending()], ["Submit%10", "Start%5"], "none", False, False, NOW)
    assert out == "########## Unkno \n"


def test_sacct_time_forms() -> None:
    assert sacct_secs(0) == "00:00:00"
    assert sacct_secs(59) == "00:00:59"
    assert sacct_secs(3600) == "01:00:00"
    assert sacct_secs(2 * 86400) == "2-00:00:00"
    assert sacct_secs(2 * 86400 + 3661) == "2-01:01:01"


def test_sacct_unknown_fields() -> None:
    with pytest.raises(ValueError, match="'Bogus' 无效"):
        format_sacct([], ["JobID", "Bogus"], "none", True, False, NOW)
    with pytest.raises(ValueError, match="Cluster（由 'cluster' 匹配）是 Slurm 的字段"):
        format_sacct([], ["cluster"], "none", True, False, NOW)
    with pytest.raises(ValueError, match="ALL"):
        format_sacct([], ["all"], "none", True, False, NOW)
    with pytest.raises(ValueError, match="宽度无效"):
        format_sacct([], ["JobID%x"], "none", True, False, NOW)


# ---------------------------------------------------------------- from_api


def test_from_api_tolerates_missing_optional_keys() -> None:
    job = from_api({"job_id": 7, "state": "PENDING"})
    assert job.steps == ()
    assert job.time_limit_seconds is None
    assert job.array_task_id is None
    assert format_squeue([job], "%i %t %l %R %j", False, NOW) == "7 PD UNLIMITED (None) (null)\n"
    assert format_sacct([job], None, "p2", False, False, NOW) == "7||||0|PENDING|0:0\n"
