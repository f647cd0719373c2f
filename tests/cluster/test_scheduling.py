"""调度策略端到端（真实 Ray 集群：头节点 4 CPU 属默认分区 batch，另加一个带标签的 gpu 分区节点）。

每条都经 API 提交、经真实调度器与节点代理执行：分区、exclusive、内存、优先级与等待原因、
EASY 回填、作业数组、依赖、挂起/放行/修改、账户上限。
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from sqlalchemy import text

from conductor.pacing import QUEUE_SLACK, QUICK_SLACK
from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service, job_payload, make_settings

GPU_CPUS = 2
LONG = "sleep 60"


@pytest.fixture(scope="module")
def service(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    settings = make_settings(
        database_url,
        partitions={
            "batch": {"default": True, "max_time": "1:00:00"},
            "gpu": {"max_time": "0:30:00", "default_time": "0:10:00"},
        },
        account_limits={
            "limited": {"max_running_jobs": 1},
            "cpucap": {"max_cpus": 2},
        },
    )
    svc = Service(settings)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def gpu_node(service: Service, ray_cluster: Cluster) -> Iterator[str]:
    node = ray_cluster.add_node(
        num_cpus=GPU_CPUS,
        labels={"conductor.partition": "gpu", "conductor.node-name": "gpu-1"},
    )
    wait_for(
        lambda: node.node_id in service.scheduler_status()["agents"], 60, what="gpu 节点的代理就绪"
    )
    yield node.node_id
    ray_cluster.remove_node(node)


@pytest.fixture(autouse=True)
def clean_queue(service: Service) -> Iterator[None]:
    """每个测试结束时取消遗留作业并等资源归还，互不影响。"""
    yield
    with service.engine.connect() as conn:
        live = conn.execute(
            text("SELECT id FROM jobs WHERE state IN ('PENDING', 'RUNNING')")
        ).scalars()
        for job_id in list(live):
            service.client.post(f"/jobs/cancel/{job_id}")
    wait_for(lambda: service.held_cpus() == 0, 60, what="资源全部归还")


def submit(service: Service, script: str, tmp: Path, **job: object) -> int:
    job.setdefault("partition", "batch")
    return service.submit(script, current_working_directory=str(tmp), **job)


def post(service: Service, path: str, **kw: object):  # type: ignore[no-untyped-def]
    return service.client.post(path, **kw)


def reason(service: Service, job_id: int | str) -> str | None:
    return service.client.get(f"/jobs/query/{job_id}").json()["state_reason"]


def wait_reason(service: Service, job_id: int, expected: str) -> None:
    wait_for(
        lambda: reason(service, job_id) == expected,
        30,
        what=lambda: f"作业 {job_id} 的等待原因为 {expected}，当前 {reason(service, job_id)}",
    )


def times(service: Service, job_id: int) -> dict:
    with service.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT EXTRACT(EPOCH FROM start_time) AS s, EXTRACT(EPOCH FROM end_time) AS e "
                "FROM jobs WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
    return {"start": float(row.s) if row.s else None, "end": float(row.e) if row.e else None}


# ---------- 分区 ----------


def test_partitions_route_jobs_and_check_limits(
    service: Service, gpu_node: str, tmp_path: Path
) -> None:
    resp = post(service, "/jobs/submit", json=job_payload("true", partition="nope"))
    assert resp.status_code == 422 and "未知分区：'nope'" in resp.json()["detail"]
    resp = post(
        service, "/jobs/submit", json=job_payload("true", partition="gpu", time_limit="1:00:00")
    )
    assert resp.status_code == 422
    assert "超过分区 gpu 的上限 0:30:00" in resp.json()["detail"]

    gpu_job = submit(service, "true", tmp_path, partition="gpu", time_limit="5")
    batch_job = submit(service, "true", tmp_path)
    assert service.wait_state(gpu_job, "COMPLETED")["detail"]["node_list"] == "gpu-1"
    assert service.wait_state(batch_job, "COMPLETED")["detail"]["node_list"] != "gpu-1"
    # 没给时限：取分区的默认时限
    payload = job_payload("true", partition="gpu")
    del payload["job"]["time_limit"]
    resp = post(service, "/jobs/submit", json=payload)
    assert resp.status_code == 201
    assert service.query(int(resp.json()["job_id"]))["time"]["limit_time"] == "0:10:00"
    # 没给分区（sbatch 不带 -p）：默认分区，而不是名叫 default 的分区
    payload = job_payload("true")
    del payload["job"]["partition"]
    resp = post(service, "/jobs/submit", json=payload)
    assert resp.status_code == 201, resp.text
    assert service.query(int(resp.json()["job_id"]))["detail"]["partition"] == "batch"
    nodes = service.client.get("/dashboard").json()["node_info"]
    assert {"gpu-1": "gpu"}.items() <= {n["node_name"]: n["partition"] for n in nodes}.items()


def test_partition_time_limit_lowered_after_submit(service: Service, tmp_path: Path) -> None:
    """分区上限改小后，已排队的超限作业不启动，原因 PartitionTimeLimit。"""
    job_id = submit(service, "true", tmp_path, hold=True)
    with service.engine.begin() as conn:  # 模拟：提交时上限更大，之后配置被改小
        conn.execute(
            text("UPDATE jobs SET time_limit_seconds = 7200 WHERE id = :id"), {"id": job_id}
        )
    assert post(service, f"/jobs/{job_id}/release").status_code == 200
    wait_reason(service, job_id, "PartitionTimeLimit")
    assert service.state(job_id) == "PENDING"


# ---------- exclusive 与内存 ----------


def test_exclusive_job_gets_a_whole_node(service: Service, tmp_path: Path) -> None:
    other = submit(service, LONG, tmp_path)
    service.wait_state(other, "RUNNING")
    excl = submit(service, "echo $SLURM_CPUS_ON_NODE > cpus; sleep 60", tmp_path, exclusive=True)
    wait_reason(service, excl, "Resources")  # 还空着 3 个 CPU，但节点上有别人
    post(service, f"/jobs/cancel/{other}")
    service.wait_state(excl, "RUNNING")
    # 独占作业拿到整个节点：脚本看到的是节点的全部 CPU，而不是所申请的 1 个
    wait_for(lambda: (tmp_path / "cpus").exists() and (tmp_path / "cpus").read_text(), 30)
    assert (tmp_path / "cpus").read_text().strip() == str(CLUSTER_CPUS)
    small = submit(service, "true", tmp_path)
    wait_reason(service, small, "Resources")  # 独占期间空闲 CPU 也不给别人
    post(service, f"/jobs/cancel/{excl}")
    service.wait_state(small, "COMPLETED")


def test_memory_is_reserved(service: Service, tmp_path: Path) -> None:
    head = next(n for n in ray.nodes() if n["Alive"] and "conductor.partition" not in n["Labels"])
    mem_mb = int(head["Resources"]["memory"] // 2**20)
    big = f"{mem_mb * 6 // 10}M"
    first = submit(service, LONG, tmp_path, memory_per_node=big)
    service.wait_state(first, "RUNNING")
    second = submit(service, LONG, tmp_path, memory_per_node=big)
    wait_reason(service, second, "Resources")  # CPU 还有，内存不够
    post(service, f"/jobs/cancel/{first}")
    service.wait_state(second, "RUNNING")


# ---------- 优先级、等待原因、回填 ----------


def test_priority_orders_the_queue_and_reasons_explain_it(service: Service, tmp_path: Path) -> None:
    blocker = submit(service, LONG, tmp_path, cpus_per_task=CLUSTER_CPUS)
    service.wait_state(blocker, "RUNNING")
    low = submit(service, LONG, tmp_path, cpus_per_task=CLUSTER_CPUS)
    high = submit(service, LONG, tmp_path, cpus_per_task=CLUSTER_CPUS, priority=100)
    wait_reason(service, high, "Resources")
    wait_reason(service, low, "Priority")
    listed = service.client.get("/jobs", params={"state": "PENDING"}).json()["jobs"]
    assert {j["job_id"]: j["state_reason"] for j in listed} == {high: "Resources", low: "Priority"}
    post(service, f"/jobs/cancel/{blocker}")
    service.wait_state(high, "RUNNING")  # 后提交但优先级高的先运行
    assert service.state(low) == "PENDING"


def test_easy_backfill_never_delays_the_head(service: Service, tmp_path: Path) -> None:
    """头节点 4 CPU：2 CPU 的作业还要跑约 60 秒；要 4 CPU 的队首预留在它结束时。
    30 秒的小作业先跑（不推迟队首），10 分钟的小作业等待（会推迟队首）。"""
    blocker = submit(service, LONG, tmp_path, cpus_per_task=2, time_limit="1")
    service.wait_state(blocker, "RUNNING")
    head = submit(service, "true", tmp_path, cpus_per_task=CLUSTER_CPUS, time_limit="10")
    long_small = submit(service, LONG, tmp_path, cpus_per_task=2, time_limit="10")
    short_small = submit(service, "sleep 1", tmp_path, cpus_per_task=2, time_limit="0:30")
    service.wait_state(short_small, "RUNNING", "COMPLETED")
    wait_reason(service, head, "Resources")
    wait_reason(service, long_small, "Priority")
    assert service.state(long_small) == "PENDING"
    # 回填的作业结束后，长的小作业依然不能占用队首的预留
    service.wait_state(short_small, "COMPLETED")
    time.sleep(1.0)  # 给调度器几轮机会犯错
    assert service.state(long_small) == "PENDING"
    post(service, f"/jobs/cancel/{blocker}")
    service.wait_state(head, "COMPLETED")
    service.wait_state(long_small, "RUNNING")


def test_backfill_reaches_beyond_the_quick_window(service: Service, tmp_path: Path) -> None:
    """快速轮只读“空闲 CPU + 8”行：排在 12 个不能回填的作业之后的短作业要靠深轮找到并回填。"""
    blocker = submit(service, LONG, tmp_path, cpus_per_task=2, time_limit="1")
    service.wait_state(blocker, "RUNNING")
    head = submit(service, "true", tmp_path, cpus_per_task=CLUSTER_CPUS, time_limit="10")
    stuck = [
        submit(service, LONG, tmp_path, cpus_per_task=2, time_limit="10")
        for _ in range(QUICK_SLACK + 4)
    ]
    deep = submit(service, "true", tmp_path, cpus_per_task=2, time_limit="0:30")
    service.wait_state(deep, "COMPLETED")
    assert service.state(head) == "PENDING"
    assert all(service.state(j) == "PENDING" for j in stuck)


def test_busy_partition_queue_does_not_hide_an_idle_partition(
    service: Service, gpu_node: str, tmp_path: Path
) -> None:
    """batch 分区占满，105 个作业排在它的队里；之后提交到空闲 gpu 分区的作业立即运行
    （原先全集群只读“空闲 CPU + 余量”行，全被 batch 此刻放不下的作业占满）。"""
    blocker = submit(service, LONG, tmp_path, cpus_per_task=CLUSTER_CPUS)
    service.wait_state(blocker, "RUNNING")
    payload = job_payload(LONG, partition="batch", current_working_directory=str(tmp_path))
    resp = post(service, "/jobs/submit/batch", json={"jobs": [payload] * (QUEUE_SLACK + 5)})
    assert resp.status_code == 201, resp.text
    queued = [int(j) for j in resp.json()["job_ids"]]
    gpu_job = submit(service, LONG, tmp_path, partition="gpu", time_limit="5")
    service.wait_state(gpu_job, "RUNNING", timeout=30)
    assert all(service.state(j) == "PENDING" for j in queued)
    assert service.query(gpu_job)["detail"]["node_list"] == "gpu-1"


# ---------- 作业数组 ----------


def test_job_array_runs_every_task_with_slurm_variables_and_throttle(
    service: Service, tmp_path: Path
) -> None:
    script = (
        'echo "$SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT '
        '$SLURM_ARRAY_TASK_MIN $SLURM_ARRAY_TASK_MAX"; sleep 0.5'
    )
    array_id = submit(
        service, script, tmp_path, array="1-6%2", name="arr", standard_output="%x-%A_%a.out"
    )
    tasks = service.client.get("/jobs", params={"array_job_id": array_id}).json()["jobs"]
    assert sorted(t["array_task_id"] for t in tasks) == [1, 2, 3, 4, 5, 6]
    ids = [t["job_id"] for t in tasks]
    for job_id in ids:
        service.wait_state(job_id, "COMPLETED")
    for task in tasks:
        out = (tmp_path / f"arr-{array_id}_{task['array_task_id']}.out").read_text().split()
        assert out == [str(array_id), str(task["array_task_id"]), "6", "1", "6"]
    spans = sorted((times(service, j)["start"], times(service, j)["end"]) for j in ids)
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2, "同时运行的任务不超过 %2"
    body = service.query(array_id)
    assert [t["array_task_id"] for t in body["array_tasks"]] == [1, 2, 3, 4, 5, 6]
    third = service.client.get(f"/jobs/query/{array_id}_3").json()
    assert third["detail"]["array_task_id"] == 3 and third["array_tasks"] is None


def test_cancel_whole_array_or_one_task(service: Service, tmp_path: Path) -> None:
    array_id = submit(service, LONG, tmp_path, array="0-3", hold=True)
    resp = post(service, f"/jobs/cancel/{array_id}_2")
    assert resp.status_code == 200
    states = {t["array_task_id"]: t["state"] for t in service.query(array_id)["array_tasks"]}
    assert states == {0: "PENDING", 1: "PENDING", 2: "CANCELLED", 3: "PENDING"}
    resp = post(service, f"/jobs/cancel/{array_id}")
    assert "取消了 3 / 4 个任务" in resp.json()["msg"]
    states = {t["state"] for t in service.query(array_id)["array_tasks"]}
    assert states == {"CANCELLED"}
    bad = post(service, "/jobs/submit", json=job_payload("true", partition="batch", array="0-5000"))
    assert bad.status_code == 422 and "job.array" in bad.json()["detail"]


# ---------- 依赖 ----------


def test_dependencies(service: Service, tmp_path: Path) -> None:
    first = submit(service, "sleep 1", tmp_path)
    after_ok = submit(service, "true", tmp_path, dependency=f"afterok:{first}")
    wait_reason(service, after_ok, "Dependency")
    service.wait_state(after_ok, "COMPLETED")
    assert times(service, after_ok)["start"] >= times(service, first)["end"]

    failing = submit(service, "exit 3", tmp_path)
    never = submit(service, "true", tmp_path, dependency=f"afterok:{failing}")
    not_ok = submit(service, "true", tmp_path, dependency=f"afternotok:{failing}")
    service.wait_state(not_ok, "COMPLETED")
    wait_reason(service, never, "DependencyNeverSatisfied")
    assert service.state(never) == "PENDING"  # 直到被取消

    resp = post(
        service,
        "/jobs/submit",
        json=job_payload("true", partition="batch", dependency="afterok:999999"),
    )
    assert resp.status_code == 422 and "999999" in resp.json()["detail"]


def test_dependency_behind_a_thousand_waiting_jobs_is_not_starved(
    service: Service, tmp_path: Path
) -> None:
    """1,001 个作业等待一个永不放行的挂起作业；之后提交的依赖照样被判定并运行（原先每轮只复查
    最早的 1,000 个等待者，它永远轮不到）。"""
    held = submit(service, "true", tmp_path, hold=True)
    array_id = submit(service, "true", tmp_path, array="0-1000", dependency=f"afterok:{held}")
    short = submit(service, "true", tmp_path)
    later = submit(service, "true", tmp_path, dependency=f"afterok:{short}")
    service.wait_state(short, "COMPLETED")
    service.wait_state(later, "COMPLETED", timeout=30)
    with service.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT COUNT(*) FROM jobs WHERE array_job_id = :a "
                "AND state = 'PENDING' AND dependency_state = 'WAITING'"
            ),
            {"a": array_id},
        ).scalar_one()
    assert waiting == 1001
    post(service, f"/jobs/cancel/{array_id}")
    post(service, f"/jobs/cancel/{held}")


def test_singleton(service: Service, tmp_path: Path) -> None:
    one = submit(service, "sleep 2", tmp_path, name="solo", dependency="singleton")
    two = submit(service, "true", tmp_path, name="solo", dependency="singleton")
    service.wait_state(one, "RUNNING")
    wait_reason(service, two, "Dependency")
    service.wait_state(two, "COMPLETED")
    assert times(service, two)["start"] >= times(service, one)["end"]


# ---------- 挂起、放行、修改 ----------


def test_hold_release_and_update(service: Service, tmp_path: Path) -> None:
    job_id = submit(service, "true", tmp_path, hold=True)
    wait_reason(service, job_id, "JobHeldUser")
    resp = service.client.patch(f"/jobs/{job_id}", json={"priority": 50, "time_limit": "20"})
    assert resp.status_code == 200, resp.text
    body = service.query(job_id)
    assert body["detail"]["priority"] == 50 and body["time"]["limit_time"] == "0:20:00"
    resp = service.client.patch(f"/jobs/{job_id}", json={"time_limit": "2:00:00"})
    assert resp.status_code == 422 and "超过分区 batch 的上限" in resp.json()["detail"]
    assert post(service, f"/jobs/{job_id}/release").status_code == 200
    service.wait_state(job_id, "COMPLETED")
    for path in (f"/jobs/{job_id}/hold", f"/jobs/{job_id}/release"):
        resp = post(service, path)
        assert resp.status_code == 409 and "COMPLETED" in resp.json()["detail"]
    assert service.client.patch(f"/jobs/{job_id}", json={"priority": 1}).status_code == 409
    assert post(service, "/jobs/999999/hold").status_code == 404


# ---------- 账户上限 ----------


def test_account_limits(service: Service, tmp_path: Path) -> None:
    first = submit(service, LONG, tmp_path, account="limited")
    second = submit(service, LONG, tmp_path, account="limited")
    other = submit(service, LONG, tmp_path, account="someone")
    service.wait_state(first, "RUNNING")
    service.wait_state(other, "RUNNING")  # 别的账户不受影响
    wait_reason(service, second, "AssocMaxJobsLimit")
    capped = submit(service, LONG, tmp_path, account="cpucap", cpus_per_task=2)
    over = submit(service, "true", tmp_path, account="cpucap")
    service.wait_state(capped, "RUNNING")
    wait_reason(service, over, "AssocGrpCpuLimit")
    post(service, f"/jobs/cancel/{first}")
    service.wait_state(second, "RUNNING")


def test_scheduler_restart_keeps_holds_dependencies_and_throttles(
    service: Service, tmp_path: Path
) -> None:
    """调度状态都在作业行里：调度器被杀重启后，挂起仍挂起、依赖仍等待、数组 %N 仍生效。"""
    first = submit(service, "sleep 2", tmp_path)
    waiting = submit(service, "true", tmp_path, dependency=f"afterok:{first}")
    held = submit(service, "true", tmp_path, hold=True)
    array_id = submit(service, "sleep 1", tmp_path, array="0-3%1")
    wait_reason(service, waiting, "Dependency")
    service.wait_scheduler_restarted(service.kill_scheduler())
    service.wait_state(waiting, "COMPLETED")
    assert times(service, waiting)["start"] >= times(service, first)["end"]
    assert service.state(held) == "PENDING" and reason(service, held) == "JobHeldUser"
    tasks = [t["job_id"] for t in service.query(array_id)["array_tasks"]]
    for job_id in tasks:
        service.wait_state(job_id, "COMPLETED")
    spans = sorted((times(service, j)["start"], times(service, j)["end"]) for j in tasks)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), "%1：一次只跑一个"
    post(service, f"/jobs/{held}/release")
    service.wait_state(held, "COMPLETED")
