"""作业分配与作业步的展示（conductor/allocation.py）：节点列表、CPU 总数、TRES 总量、12.batch。"""

from __future__ import annotations

from datetime import UTC, datetime

from conductor import allocation
from conductor.models import Job
from conductor.resources import Resources
from conductor.states import JobState

GIB = 2**30
T0 = datetime(2025, 11, 7, 10, 0, tzinfo=UTC)
T1 = datetime(2025, 11, 7, 10, 5, tzinfo=UTC)


def job(**kw: object) -> Job:
    fields: dict = {
        "id": 12,
        "name": "j",
        "account": "a",
        "partition": "default",
        "script": "true",
        "work_dir": "/tmp",
        "stdout_path": "/tmp/o",
        "stderr_path": "/tmp/e",
        "cpus": 4,
        "memory_bytes": 2 * GIB,
    } | kw
    return Job(**fields)


def test_a_gang_shows_its_whole_allocation() -> None:
    gang = job(
        nodes=2,
        gpus=1,
        gres={"nvme": 1},
        node_id="id1",
        node_name="node01",
        node_ids=["id1", "id2"],
        node_names=["node01", "node02"],
        start_time=T0,
    )
    assert allocation.node_list(gang) == "node[01-02]"
    assert (allocation.node_count(gang), allocation.total_cpus(gang)) == (2, 8)
    assert allocation.tres(gang, {}) == (
        "cpu=8,mem=4G,node=2,gres/gpu=2,gres/nvme=2",
        "cpu=8,mem=4G,node=2,gres/gpu=2,gres/nvme=2",
    )
    # 独占：各节点的全部 CPU 之和
    exclusive = job(**{**gang.model_dump(), "exclusive": True})
    caps = {"id1": Resources.of(16, GIB), "id2": Resources.of(8, GIB)}
    assert allocation.tres(exclusive, caps)[1].startswith("cpu=24,")


def test_pending_and_old_single_node_rows() -> None:
    pending = job(nodes=3)
    assert (allocation.node_list(pending), allocation.node_count(pending)) == ("", 3)
    assert allocation.total_cpus(pending) == 12
    assert allocation.tres(pending, {}) == ("cpu=12,mem=6G,node=3", "")
    assert allocation.steps(pending, []) == []
    # 迁移前认领的行只有 node_name
    old = job(node_id="x", node_name="n7", start_time=T0)
    assert (allocation.node_list(old), allocation.node_count(old), allocation.total_cpus(old)) == (
        "n7",
        1,
        4,
    )
    assert allocation.tres(old, {}) == ("cpu=4,mem=2G,node=1", "cpu=4,mem=2G,node=1")


def test_steps_begin_with_the_batch_step() -> None:
    done = job(
        state=JobState.TIMEOUT,
        exit_code="0:9",
        node_id="id1",
        node_name="node01",
        node_ids=["id1", "id2"],
        node_names=["node01", "node02"],
        start_time=T0,
        end_time=T1,
    )
    recorded = [
        {
            "step_id": 0,
            "name": "hostname",
            "state": "COMPLETED",
            "exit_code": "0:0",
            "ntasks": 4,
            "node_list": "node[01-02]",
            "start_time": T0,
            "end_time": T1,
        },
        {"step_id": 1, "name": "sleep", "state": "CANCELLED", "exit_code": None, "ntasks": 2,
         "node_list": "node02", "start_time": T0, "end_time": T1},
    ]  # fmt: skip
    batch, first, second = allocation.steps(done, recorded)
    assert batch == {
        "step_id": "12.batch",
        "name": "batch",
        "state": "CANCELLED",  # 超时的作业：批处理步被终止，同 Slurm
        "exit_code": "0:9",
        "start_time": "2025-11-07T10:00:00Z",
        "end_time": "2025-11-07T10:05:00Z",
        "node_list": "node01",
        "ntasks": 1,
        # 这一行没有用量记录（旧行、执行器没测到）
        "max_rss": None,
        "ave_rss": None,
        "max_rss_bytes": None,
        "ave_rss_bytes": None,
        "user_cpu_seconds": None,
        "system_cpu_seconds": None,
        "total_cpu_seconds": None,
    }
    assert (first["step_id"], first["state"], first["node_list"]) == (
        "12.0",
        "COMPLETED",
        "node[01-02]",
    )
    assert (second["step_id"], second["exit_code"]) == ("12.1", None)
    running = job(state=JobState.RUNNING, node_id="i", node_name="n1", start_time=T0)
    (only,) = allocation.steps(running, [])
    assert (only["state"], only["end_time"], only["exit_code"]) == ("RUNNING", None, None)


def test_steps_show_usage_in_sacct_form_and_job_total_cpu() -> None:
    """批处理步的用量取自作业行，作业步的取自记录；MaxRSS/AveRSS 为 sacct 的写法，TotalCPU 为
    用户态 + 内核态；作业的 TotalCPU 为全部步之和。"""
    done = job(
        state=JobState.COMPLETED,
        exit_code="0:0",
        node_id="id1",
        node_name="node01",
        start_time=T0,
        end_time=T1,
        max_rss_bytes=100 * 2**20,
        user_cpu_seconds=1.5,
        system_cpu_seconds=0.25,
    )
    recorded = [
        {"step_id": 0, "name": "a", "state": "COMPLETED", "exit_code": "0:0", "ntasks": 2,
         "node_list": "node01", "start_time": T0, "end_time": T1,
         "max_rss_bytes": 52678656, "ave_rss_bytes": 1024, "user_cpu_seconds": 2.0,
         "system_cpu_seconds": 1.0},
        {"step_id": 1, "name": "b", "state": "RUNNING", "exit_code": None, "ntasks": 1,
         "node_list": "node01", "start_time": T0, "end_time": None},
    ]  # fmt: skip
    batch, first, running = allocation.steps(done, recorded)
    assert (batch["max_rss"], batch["ave_rss"], batch["max_rss_bytes"]) == (
        "100M",
        "100M",
        100 << 20,
    )
    assert batch["total_cpu_seconds"] == 1.75
    assert (first["max_rss"], first["ave_rss"], first["total_cpu_seconds"]) == ("50.24M", "1K", 3.0)
    assert (running["max_rss"], running["total_cpu_seconds"]) == (None, None)
    assert allocation.total_cpu_seconds(done, recorded) == 4.75
    assert allocation.total_cpu_seconds(job(), []) is None
