"""sinfo 与 scontrol show 的金样：表头、列宽、对齐、状态名与 Key=Value 版式逐字节同 Slurm。

依据（SchedMD/slurm）：src/sinfo/opts.c 的默认格式、src/sinfo/print.c 的 _print_str/_print_partition/
_print_secs、src/sinfo/sort.c 的默认排序；src/api/job_info.c、node_info.c、partition_info.c（22.05）。
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conductor.slurm_show import (
    JobShow,
    NodeView,
    PartitionView,
    format_show_job,
    format_show_node,
    format_show_partition,
    format_sinfo,
    node_from_api,
    sinfo_secs,
)

PARTS = [
    PartitionView("debug", True, None),
    PartitionView("long", False, 2 * 86400, 3600),
    PartitionView("gpu", False, 30 * 60),
]
NODES = [
    NodeView("node1", ("debug",), True, 4, 0),
    NodeView("node2", ("debug",), True, 4, 2),
    NodeView("node3", ("debug",), False, 4, 0),
    NodeView("node4", ("long",), True, 8, 8, gpus_total=2, gpus_alloc=1, gres={"nvme": 1.0}),
]


def test_default_view_one_line_per_partition_and_state() -> None:
    assert format_sinfo(PARTS, NODES) == (
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\n"
        "debug*       up   infinite      1    mix node2\n"
        "debug*       up   infinite      1   idle node1\n"
        "debug*       up   infinite      1  down* node3\n"
        "long         up 2-00:00:00      1  alloc node4\n"
        "gpu          up      30:00      0    n/a \n"
    )


def test_same_state_nodes_share_a_line_as_a_hostlist() -> None:
    nodes = [NodeView(f"n{i:02d}", ("debug",), True, 2, 0) for i in (1, 2, 3, 7)]
    assert format_sinfo(PARTS[:1], nodes, header=False) == (
        "debug*       up   infinite      4   idle n[01-03,07]\n"
    )


def test_partition_column_widens_to_the_longest_name() -> None:
    parts = [PartitionView("interactive", True, 3600), PartitionView("x", False, None)]
    nodes = [NodeView("node1", ("interactive", "x"), True, 2, 1)]
    assert format_sinfo(parts, nodes) == (
        "PARTITION    AVAIL  TIMELIMIT  NODES  STATE NODELIST\n"
        "interactive*    up    1:00:00      1    mix node1\n"
        "x               up   infinite      1    mix node1\n"
    )


def test_node_oriented_view() -> None:
    assert format_sinfo(PARTS, NODES, per_node=True) == (
        "NODELIST   NODES PARTITION STATE \n"
        "node1          1    debug* idle  \n"
        "node2          1    debug* mix   \n"
        "node3          1    debug* down* \n"
        "node4          1      long alloc \n"
    )


def test_node_oriented_long_view() -> None:
    # -N -l："nodelist:0 ,nodes:.6 ,partition:.9 ,statelong:.11 ,cpus:4 ,socketcorethread:.8 ,
    # memory:.6 ,disk:.8 ,weight:.6 ,features:.8 ,reason:20"
    assert format_sinfo(PARTS, NODES[3:], per_node=True, long=True) == (
        "NODELIST   NODES PARTITION       STATE CPUS    S:C:T MEMORY TMP_DISK WEIGHT AVAIL_FE REASON              \n"
        "node4          1      long   allocated 8       8:1:1      1        0      1   (null) none                \n"
    )


def test_custom_format_fields() -> None:
    fmt = "%P|%a|%l|%D|%t|%N|%C|%G|%T|%F"
    assert format_sinfo(PARTS[:2], NODES, fmt) == (
        "PARTITION|AVAIL|TIMELIMIT|NODES|STATE|NODELIST|CPUS(A/I/O/T)|GRES|STATE|NODES(A/I/O/T)\n"
        "debug*|up|infinite|1|mix|node2|2/2/0/4|(null)|mixed|1/0/0/1\n"
        "debug*|up|infinite|1|idle|node1|0/4/0/4|(null)|idle|0/1/0/1\n"
        "debug*|up|infinite|1|down*|node3|0/0/4/4|(null)|down*|0/0/1/1\n"
        "long|up|2-00:00:00|1|alloc|node4|8/0/0/8|gpu:2,nvme:1|allocated|1/0/0/1\n"
    )


def test_widths_truncate_and_justify_like_print_str() -> None:
    # %.3P 右对齐并截断；%4t 左对齐补空格；默认分区名放不下 * 时最后一个字符换成 *
    assert format_sinfo(PARTS[:1], NODES[:1], "%.3P %4t|%.2D") == "PAR STAT|NO\nde* idle| 1\n"


def test_filters_and_no_header() -> None:
    assert format_sinfo(PARTS, NODES, header=False, partition_filter=["long"]) == (
        "long         up 2-00:00:00      1  alloc node4\n"
    )
    assert format_sinfo(PARTS, NODES, header=False, state_filter=["down"]) == (
        "debug*       up   infinite      1  down* node3\n"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(59, "0:59"), (1800, "30:00"), (3600, "1:00:00"), (90061, "1-01:01:01")]
)
def test_sinfo_time_limits(seconds: int, text: str) -> None:
    assert sinfo_secs(seconds) == text


def test_unknown_format_letters_are_refused() -> None:
    with pytest.raises(ValueError, match="Slurm 没有这个字段字母"):
        format_sinfo(PARTS, NODES, "%P %y")
    with pytest.raises(ValueError, match="尚未支持"):
        format_sinfo(PARTS, NODES, "%P %U")


def test_dashboard_node_info_converts() -> None:
    node = node_from_api(
        {
            "node_name": "h1",
            "partition": "debug,gpu",
            "total_cpus": 8,
            "allocated_cpus": 8,
            "available": True,
            "total_gpus": 1,
            "gres": {"nvme": {"total": 2, "allocated": 0, "available": 2}},
            "features": ["a100"],
        }
    )
    assert (node.partitions, node.state, node.gres_str, node.features) == (
        ("debug", "gpu"),
        "alloc",
        "gpu:1,nvme:2",
        ("a100",),
    )


JOB = JobShow(
    job_id=12,
    name="train",
    user="alice",
    uid=1000,
    group="alice",
    gid=1000,
    account="proj",
    priority=5,
    state="RUNNING",
    reason="None",
    dependency=None,
    requeue=False,
    restarts=0,
    exit_code="0:0",
    run_seconds=65,
    time_limit=3600,
    submit_time=datetime(2026, 3, 10, 8, 0, 0, tzinfo=UTC),
    eligible_time=datetime(2026, 3, 10, 8, 0, 0, tzinfo=UTC),
    start_time=datetime(2026, 3, 10, 8, 0, 5, tzinfo=UTC),
    end_time=None,
    partition="debug",
    node_list="node1",
    required_nodes=None,
    excluded_nodes=None,
    batch_host="node1",
    num_nodes=1,
    num_cpus=2,
    num_tasks=1,
    cpus_per_task=2,
    tres="cpu=2,mem=1G,node=1",
    min_memory_mb=1024,
    features=None,
    work_dir="/data/run",
    stdout="/data/run/slurm-12.out",
    stderr="/data/run/slurm-12.out",
)


def test_scontrol_show_job_layout() -> None:
    assert format_show_job([JOB], UTC) == (
        "JobId=12 JobName=train\n"
        "   UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A\n"
        "   Priority=5 Nice=0 Account=proj QOS=normal\n"
        "   JobState=RUNNING Reason=None Dependency=(null)\n"
        "   Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0\n"
        "   RunTime=00:01:05 TimeLimit=01:00:00 TimeMin=N/A\n"
        "   SubmitTime=2026-03-10T08:00:00 EligibleTime=2026-03-10T08:00:00\n"
        "   AccrueTime=2026-03-10T08:00:00\n"
        "   StartTime=2026-03-10T08:00:05 EndTime=Unknown Deadline=N/A\n"
        "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=Unknown Scheduler=Main\n"
        "   Partition=debug AllocNode:Sid=(null):0\n"
        "   ReqNodeList=(null) ExcNodeList=(null)\n"
        "   NodeList=node1\n"
        "   BatchHost=node1\n"
        "   NumNodes=1 NumCPUs=2 NumTasks=1 CPUs/Task=2 ReqB:S:C:T=0:0:*:*\n"
        "   TRES=cpu=2,mem=1G,node=1\n"
        "   Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=*\n"
        "   MinCPUsNode=2 MinMemoryNode=1G MinTmpDiskNode=0\n"
        "   Features=(null) DelayBoot=00:00:00\n"
        "   OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null)\n"
        "   Command=(null)\n"
        "   WorkDir=/data/run\n"
        "   StdErr=/data/run/slurm-12.out\n"
        "   StdIn=/dev/null\n"
        "   StdOut=/data/run/slurm-12.out\n"
        "   Power=\n"
        "\n"
    )


def test_scontrol_show_job_pending_array_task_one_liner() -> None:
    from dataclasses import replace

    job = replace(
        JOB,
        state="PENDING",
        reason="Dependency",
        dependency="afterok:11",
        time_limit=None,
        start_time=None,
        node_list="",
        batch_host=None,
        array_job_id=10,
        array_task_id=2,
        stdout=None,
        stderr=None,
    )
    text = format_show_job([job], UTC, one_liner=True)
    assert text.startswith("JobId=12 ArrayJobId=10 ArrayTaskId=2 JobName=train UserId=alice(1000) ")
    assert text.endswith(" StdIn=/dev/null Power=\n") and "\n" not in text[:-1]
    assert " JobState=PENDING Reason=Dependency Dependency=afterok:11 " in text
    assert " RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A " in text
    assert " StartTime=Unknown EndTime=Unknown Deadline=N/A " in text
    assert " NodeList=(null) NumNodes=1 " in text  # 排队：没有 BatchHost 行


def test_scontrol_show_partition_layout() -> None:
    assert format_show_partition(PARTS[1:2], NODES) == (
        "PartitionName=long\n"
        "   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL\n"
        "   AllocNodes=ALL Default=NO QoS=N/A\n"
        "   DefaultTime=01:00:00 DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO\n"
        "   MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED\n"
        "   Nodes=node4\n"
        "   PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO\n"
        "   OverTimeLimit=NONE PreemptMode=OFF\n"
        "   State=UP TotalCPUs=8 TotalNodes=1 SelectTypeParameters=NONE\n"
        "   JobDefaults=(null)\n"
        "   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED\n"
        "\n"
    )
    assert "MaxTime=UNLIMITED" in format_show_partition(PARTS[:1], NODES)
    assert "Default=YES" in format_show_partition(PARTS[:1], NODES)


def test_scontrol_show_node_layout() -> None:
    text = format_show_node([NODES[3], NODES[2]])
    first, second = text.split("\n\n")[:2]
    assert first.split("\n   ") == [
        "NodeName=node4 CoresPerSocket=1 ",
        "CPUAlloc=8 CPUEfctv=8 CPUTot=8 CPULoad=N/A",
        "AvailableFeatures=(null)",
        "ActiveFeatures=(null)",
        "Gres=gpu:2,nvme:1",
        "NodeAddr=node4 NodeHostName=node4 ",
        "RealMemory=1 AllocMem=0 FreeMem=N/A Sockets=8 Boards=1",
        "State=ALLOCATED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A",
        "Partitions=long ",
        "BootTime=None SlurmdStartTime=None",
        "LastBusyTime=Unknown",
        "CfgTRES=cpu=8,gres/gpu=2",
        "AllocTRES=cpu=8,gres/gpu=1",
        "CapWatts=n/a",
        "CurrentWatts=0 AveWatts=0",
        "ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s",
    ]
    assert "State=DOWN+NOT_RESPONDING " in second


def test_scontrol_show_hostnames_and_hostlist_need_no_service(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun 例子里取第一个节点的写法：不连服务，默认读 SLURM_JOB_NODELIST。"""
    from conductor.client.slurm import scontrol

    monkeypatch.setenv("CONDUCTOR_URL", "http://127.0.0.1:9")  # 连不上：证明没有连服务
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gw[1-2],node[08-10]")
    assert scontrol.main(["show", "hostnames"]) == 0
    assert capsys.readouterr().out == "gw1\ngw2\nnode08\nnode09\nnode10\n"
    assert scontrol.main(["show", "hostlist", "node10,node08,node09,gw1"]) == 0
    assert capsys.readouterr().out == "gw1,node[08-10]\n"
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert scontrol.main(["show", "hostnames"]) == 1
    assert capsys.readouterr().err == "no list of hosts specified\n"
