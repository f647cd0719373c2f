"""节点排空的纯逻辑：策略不往排空的节点放作业（运行中的照常占着资源）、节点状态、sinfo / scontrol 的显示
（逐字节同 Slurm：drng/drain、draining/drained、IDLE+DRAIN、Reason=… [用户@时刻]、sinfo -R）、
scontrol update NodeName=… 的参数错误。"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conductor.client.slurm import scontrol
from conductor.drains import node_state, reason_error
from conductor.policy import NodeView, PendingJob, RunningJob, Snapshot, free_cpus, plan
from conductor.reasons import REQ_NODE_NOT_AVAIL, RESOURCES
from conductor.slurm_show import (
    NodeView as ShowNode,
)
from conductor.slurm_show import (
    PartitionView,
    format_show_node,
    format_sinfo,
    format_sinfo_reasons,
    node_from_api,
)

GIB = 1024**3
NOW = 1_000_000.0


def nodes(drained: str | None = None) -> list[NodeView]:
    return [NodeView(i, i, 4, 16 * GIB, drain=(i == drained)) for i in ("a", "b")]


def test_new_jobs_go_elsewhere_and_running_ones_keep_their_resources() -> None:
    running = [RunningJob(1, "a", 1, 1 * GIB, NOW + 60)]
    pending = [PendingJob(i, 1, GIB) for i in range(2, 6)]
    result = plan(Snapshot(nodes(drained="a"), running, pending, NOW))
    assert [p.node_id for p in result.placements] == ["b"] * 4
    # 排空的节点的空闲不算：窗口只按能接作业的节点读
    assert free_cpus(nodes(drained="a"), running, ["default"]) == (4, {"default": 4})


def test_job_that_fits_only_on_the_drained_node_waits_for_resources_without_reservation() -> None:
    big = [NodeView("a", "a", 8, 16 * GIB, drain=True), NodeView("b", "b", 2, 16 * GIB)]
    result = plan(Snapshot(big, [], [PendingJob(1, 8, GIB), PendingJob(2, 1, GIB)], NOW))
    assert result.reasons[1] == RESOURCES
    assert not result.reservations  # 不为它预留：后面的作业照常放
    assert [p.job_id for p in result.placements] == [2]


def test_job_that_names_a_drained_node_waits_for_it() -> None:
    result = plan(
        Snapshot(nodes(drained="a"), [], [PendingJob(1, 1, GIB, required_nodes=["a"])], NOW)
    )
    assert result.reasons[1] == REQ_NODE_NOT_AVAIL and not result.placements


def test_gang_never_takes_a_drained_node() -> None:
    result = plan(Snapshot(nodes(drained="a"), [], [PendingJob(1, 1, GIB, nodes=2)], NOW))
    assert not result.placements and result.reasons[1] == RESOURCES


def test_resumed_node_takes_jobs_again() -> None:
    result = plan(Snapshot(nodes(), [], [PendingJob(i, 4, GIB) for i in (1, 2)], NOW))
    assert sorted(p.node_id for p in result.placements) == ["a", "b"]


@pytest.mark.parametrize(
    ("alive", "drained", "busy", "free", "state"),
    [
        (False, True, True, True, "down"),
        (True, True, True, False, "draining"),
        (True, True, False, True, "drained"),
        (True, False, False, True, "idle"),
        (True, False, True, True, "mixed"),
        (True, False, True, False, "allocated"),
    ],
)
def test_node_state(alive: bool, drained: bool, busy: bool, free: bool, state: str) -> None:
    assert node_state(alive, drained, busy, free) == state


def test_reason_is_required() -> None:
    assert (
        reason_error(None) == reason_error("  ") == "You must specify a reason when DRAINING a node"
    )
    assert reason_error("换内存") is None


WHEN = datetime(2026, 12, 6, 7, 10, 0, tzinfo=UTC)
PARTS = [PartitionView("debug", True, None)]


def show_nodes() -> list[ShowNode]:
    return [
        ShowNode("n1", ("debug",), True, 4, 0),
        ShowNode("n2", ("debug",), True, 4, 2, reason="bad dimm", reason_user="root", reason_time=WHEN),
        ShowNode("n3", ("debug",), True, 4, 0, reason="bad dimm", reason_user="root", reason_time=WHEN),
        ShowNode("n4", ("debug",), True, 4, 0, reason="fan", reason_user="alice", reason_time=WHEN),
    ]  # fmt: skip


def test_sinfo_shows_drng_and_drain() -> None:
    assert format_sinfo(PARTS, show_nodes()) == (
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\n"
        "debug*       up   infinite      1   drng n2\n"
        "debug*       up   infinite      2  drain n[3-4]\n"
        "debug*       up   infinite      1   idle n1\n"
    )
    assert format_sinfo(PARTS, show_nodes(), "%N %T", header=False, per_node=True) == (
        "n1 idle\nn2 draining\nn3 drained\nn4 drained\n"
    )
    # -t drain 同 Slurm 匹配 DRAIN 标志（两种都算），drained 只要没有作业的
    assert format_sinfo(PARTS, show_nodes(), "%N", header=False, state_filter=["drain"]) == (
        "n2\nn[3-4]\n"
    )
    assert format_sinfo(PARTS, show_nodes(), "%N", header=False, state_filter=["drained"]) == (
        "n[3-4]\n"
    )


def test_sinfo_list_reasons() -> None:
    assert format_sinfo_reasons(show_nodes()) == (
        "REASON               USER      TIMESTAMP           NODELIST\n"
        "bad dimm             root      2026-12-06T07:10:00 n[2-3]\n"
        "fan                  alice     2026-12-06T07:10:00 n4\n"
    )


def test_scontrol_show_node_state_and_reason() -> None:
    shown = format_show_node(show_nodes()[1:3])
    assert "   State=MIXED+DRAIN ThreadsPerCore=1" in shown
    assert "   State=IDLE+DRAIN ThreadsPerCore=1" in shown
    assert "   Reason=bad dimm [root@2026-12-06T07:10:00]\n" in shown
    assert "Reason=" not in format_show_node(show_nodes()[:1])


def test_node_from_api_reads_drain_fields() -> None:
    item = {
        "node_name": "n2",
        "partition": "debug",
        "available": True,
        "total_cpus": 4,
        "allocated_cpus": 0,
        "state": "drained",
        "drain_reason": "fan",
        "drained_by": "root",
        "drain_since": "2026-12-06T07:10:00Z",
    }
    node = node_from_api(item)
    assert node.state == "drain" and node.reason == "fan" and node.reason_user == "root"
    assert node.reason_time == WHEN
    assert node_from_api({**item, "drain_reason": None}).state == "idle"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["NodeName=n1", "State=DRAIN"], "You must specify a reason when DRAINING a node\nRequest aborted\n"),
        (["NodeName=n1", "State=DOWN", "Reason=x"], "不支持 State=DOWN"),
        (["NodeName=n1", "Weight=3"], "Update of this parameter is not supported: Weight=3\n"),
        (["NodeName=n1"], "No changes specified\n"),
    ],
)  # fmt: skip
def test_scontrol_update_node_refuses_bad_requests_before_sending_anything(
    words: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 地址指向一个不存在的端口：请求真发出去就会报连不上，而不是这里期望的用法错误
    monkeypatch.setenv("CONDUCTOR_URL", "http://127.0.0.1:9")
    assert scontrol.main(["update", *words]) == 1
    assert message in capsys.readouterr().err
