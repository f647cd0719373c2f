"""用量与 --mem（议题 18）：真实 Ray 集群、真实 PostgreSQL、真实进程。

- 超出 --mem 的作业被内核 OOM 杀掉，以 OUT_OF_MEMORY（退出码 0:125）结束（要 root 与可写的
  memory cgroup，没有时跳过：那时 Conductor 不执行 --mem，见 docs/scheduling.md）；
- 上限之内的作业照常完成，查询的批处理步给出峰值内存与 CPU 时间；
- srun 的作业步（本节点与另一个节点上的任务）给出各自的用量；
- 作业结束后不留 cgroup。
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from conductor import usage
from conductor.hostlist import expand
from harness.waiting import wait_for
from tests.cluster.conftest import Service

MB = 1 << 20
CGROUP = usage.detect() is not None
needs_cgroup = pytest.mark.skipif(not CGROUP, reason="需要 root 与可写的 memory cgroup")
ENDS = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
# 分配 100 MB 并驻留半秒（采样测量也看得见），再做一小段纯计算（CPU 时间一定大于 0）
ALLOC_100 = (
    "python3 -c 'b = bytearray(100 << 20); import time; time.sleep(0.5)\n"
    "x = 0\nfor i in range(2_000_000): x += i'\n"
)


def _leftovers(job: int) -> list[Path]:
    return [p for p in usage.leftover_cgroups() if p.name.startswith(f"{usage.PREFIX}job{job}-")]


def _steps(service: Service, job: int) -> dict[str, dict]:
    return {s["step_id"]: s for s in service.query(job)["steps"]}


@needs_cgroup
def test_a_job_over_its_memory_ends_out_of_memory(service: Service, tmp_path: Path) -> None:
    job = service.submit(
        "python3 -c 'b = bytearray(200 << 20)'\necho after=$?\n",
        memory_per_node="60M",
        current_working_directory=str(tmp_path),
    )
    body = service.wait_state(job, *ENDS, timeout=90)
    assert body["state"] == "OUT_OF_MEMORY", body
    assert body["detail"]["exit_code"] == "0:125"
    assert "内存" in (body["error_msg"] or "")
    # 被杀的是超出的那个进程：脚本本身接着运行（同 Slurm），作业仍记 OUT_OF_MEMORY
    assert "after=137" in (tmp_path / "out.txt").read_text()
    batch = _steps(service, job)[f"{job}.batch"]
    assert batch["state"] == "OUT_OF_MEMORY" and batch["exit_code"] == "0:125"
    assert _leftovers(job) == []
    # 仪表盘的作业统计单独数它（触发器维护的计数，稍后才合并）
    wait_for(
        lambda: service.client.get("/dashboard").json()["job_stats"]["out_of_memory"] >= 1,
        30,
        what="仪表盘数到 OUT_OF_MEMORY 的作业",
    )


def test_a_job_within_its_memory_completes_with_its_peak(service: Service, tmp_path: Path) -> None:
    job = service.submit(ALLOC_100, memory_per_node="1G", current_working_directory=str(tmp_path))
    body = service.wait_state(job, *ENDS, timeout=90)
    assert body["state"] == "COMPLETED", (body, (tmp_path / "err.txt").read_text())
    batch = _steps(service, job)[f"{job}.batch"]
    assert batch["max_rss_bytes"] >= 100 * MB, batch
    assert batch["max_rss"].endswith("M") and float(batch["max_rss"][:-1]) >= 100
    assert batch["user_cpu_seconds"] > 0 and batch["total_cpu_seconds"] > 0
    (item,) = [j for j in service.client.get("/jobs").json()["jobs"] if j["job_id"] == job]
    assert item["total_cpu_seconds"] >= batch["total_cpu_seconds"]
    assert _leftovers(job) == []


def test_an_srun_step_shows_its_usage(service: Service, tmp_path: Path) -> None:
    job = service.submit(
        f"srun -n2 {ALLOC_100}",
        ntasks_per_node=2,
        memory_per_node="1G",
        current_working_directory=str(tmp_path),
    )
    body = service.wait_state(job, *ENDS, timeout=90)
    assert body["state"] == "COMPLETED", (body, (tmp_path / "err.txt").read_text())
    step = _steps(service, job)[f"{job}.0"]
    assert step["state"] == "COMPLETED"
    # 每个任务的峰值都不小于 100 MB：最大与平均都是
    assert step["max_rss_bytes"] >= 100 * MB and step["ave_rss_bytes"] >= 100 * MB, step
    assert step["user_cpu_seconds"] > 0
    assert step["total_cpu_seconds"] == pytest.approx(
        step["user_cpu_seconds"] + step["system_cpu_seconds"]
    )
    assert _leftovers(job) == []


@needs_cgroup
def test_an_srun_step_over_the_memory_is_out_of_memory(service: Service, tmp_path: Path) -> None:
    """作业步的任务与批处理脚本共用作业在本节点的上限：超出的作业步记 OUT_OF_MEMORY，
    批处理脚本照常结束（srun 非零退出由脚本决定作业的结局）。"""
    job = service.submit(
        "srun python3 -c 'b = bytearray(300 << 20)'\necho srun=$?\n",
        memory_per_node="100M",
        current_working_directory=str(tmp_path),
    )
    body = service.wait_state(job, *ENDS, timeout=90)
    assert body["state"] == "COMPLETED", body
    step = _steps(service, job)[f"{job}.0"]
    assert (step["state"], step["exit_code"]) == ("OUT_OF_MEMORY", "0:125")
    assert _leftovers(job) == []


@pytest.fixture(scope="module")
def second_node(service: Service, ray_cluster: Cluster) -> Iterator[object]:
    node = ray_cluster.add_node(num_cpus=2, labels={"conductor.node-name": "un1"})
    wait_for(
        lambda: node.node_id in service.scheduler_status()["agents"], 60, what="节点 un1 的代理就绪"
    )
    yield node
    if node in ray_cluster.worker_nodes:
        ray_cluster.remove_node(node)


def test_a_step_on_two_nodes_measures_the_remote_tasks(
    service: Service, second_node: object, tmp_path: Path
) -> None:
    """两个节点各一个任务：另一个节点上的任务在那里测量（run_part），结果随结局带回。"""
    job = service.submit(
        f"srun {ALLOC_100}",
        nodes=2,
        ntasks_per_node=1,
        memory_per_node="1G",
        current_working_directory=str(tmp_path),
    )
    body = service.wait_state(job, *ENDS, timeout=120)
    assert body["state"] == "COMPLETED", (body, (tmp_path / "err.txt").read_text())
    step = _steps(service, job)[f"{job}.0"]
    assert step["ntasks"] == 2 and len(expand(step["node_list"])) == 2, step
    # 平均不小于 100 MB：两个节点上的任务都测到了
    assert step["ave_rss_bytes"] >= 100 * MB, step
    assert _leftovers(job) == []
