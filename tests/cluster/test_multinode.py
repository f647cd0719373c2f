"""多节点行为（真实 Ray 集群：头节点 4 CPU + 两个 2 CPU 的工作节点）。"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster

from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service

WORKER_CPUS = 2


@pytest.fixture(scope="module")
def workers(service: Service, ray_cluster: Cluster) -> Iterator[list]:
    nodes = [ray_cluster.add_node(num_cpus=WORKER_CPUS) for _ in range(2)]
    for node in nodes:
        wait_for(
            lambda n=node: n.node_id in service.scheduler_status()["agents"],
            60,
            what="新节点的代理就绪",
        )
    yield nodes
    for node in nodes:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


def _alive_node_names(service: Service) -> dict[str, str]:
    """存活节点 id → 名字（node_info 里也列出早先测试留下的死节点）。"""
    return {
        n["node_id"]: n["node_name"]
        for n in service.client.get("/dashboard").json()["node_info"]
        if n["available"]
    }


def test_jobs_spread_and_node_list_is_the_node_that_ran_them(
    service: Service, workers: list, tmp_path: Path
) -> None:
    total = CLUSTER_CPUS + WORKER_CPUS * len(workers)
    ids = [
        service.submit(
            'echo "$CONDUCTOR_NODE_ID"; sleep 1',
            current_working_directory=str(tmp_path),
            standard_output=f"{i}.out",
        )
        for i in range(total)
    ]
    names = _alive_node_names(service)
    used = set()
    for job_id in ids:
        body = service.wait_state(job_id, "COMPLETED")
        ran_on = body["job_log"]["stdout"].strip()  # 执行器报告的真实 Ray 节点
        assert body["detail"]["node_list"] == names[ran_on]
        used.add(ran_on)
    assert used == set(names)  # 八个 1 CPU 作业铺满了三个节点


def test_dashboard_lists_every_node_with_real_figures(
    service: Service, workers: list, tmp_path: Path
) -> None:
    job_id = service.submit(
        "touch started; sleep 300", current_working_directory=str(tmp_path), cpus_per_task=2
    )
    wait_for((tmp_path / "started").exists, 30)
    dash = service.client.get("/dashboard").json()
    alive = [n for n in dash["node_info"] if n["available"]]
    assert sorted(n["total_cpus"] for n in alive) == [WORKER_CPUS, WORKER_CPUS, CLUSTER_CPUS]
    busy = [n for n in alive if n["allocated_cpus"]]
    assert (
        len(busy) == 1
        and busy[0]["allocated_cpus"] == 2
        and busy[0]["available_cpus"] == busy[0]["total_cpus"] - 2
    )
    assert dash["resource_stats"]["total_cpus"] == CLUSTER_CPUS + 2 * WORKER_CPUS
    service.client.post(f"/jobs/cancel/{job_id}")


def test_logs_are_read_on_the_node_that_ran_the_job(
    service: Service, workers: list, ray_cluster: Cluster, tmp_path: Path
) -> None:
    worker = workers[-1]
    # 最佳适配先用空闲最少的节点：占满另一个工作节点后，两个 1 CPU 作业会落在这个节点上
    job_id = service.submit(
        "echo from-the-node", current_working_directory=str(tmp_path), cpus_per_task=WORKER_CPUS
    )
    body = service.wait_state(job_id, "COMPLETED")
    with service.engine.connect() as conn:
        from sqlalchemy import text

        node_id = conn.execute(
            text("SELECT node_id FROM jobs WHERE id=:i"), {"i": job_id}
        ).scalar_one()
    assert body["job_log"]["stdout"] == "from-the-node\n"
    assert service.client.get(f"/jobs/{job_id}/logs").text == "from-the-node\n"
    target = next((n for n in workers if n.node_id == node_id), None)
    if target is None:
        pytest.skip("作业落在头节点上，无法通过移除节点来证明读取路径")
    ray_cluster.remove_node(target, allow_graceful=False)
    # 文件仍在（同机共享文件系统），但读取必须经过那个节点：节点没了就读不到，并如实说明
    wait_for(
        lambda: any(
            n["node_id"] == node_id and not n["available"]
            for n in service.client.get("/dashboard").json()["node_info"]
        ),
        30,
        what="死亡的节点在 node_info 中显示为不可用",
    )
    assert (tmp_path / "out.txt").read_text() == "from-the-node\n"
    wait_for(
        lambda: "无法读取日志" in service.query(job_id)["job_log"]["stdout"],
        30,
        what="节点消失后日志读不到（文件虽在，读取必须经过那个节点）",
    )
    assert "节点" in service.query(job_id)["job_log"]["stdout"]
    # 日志接口同样经过那个节点：不跟随时 503，跟随时说明原因后结束
    resp = service.client.get(f"/jobs/{job_id}/logs")
    assert resp.status_code == 503 and "节点不可达" in resp.json()["detail"]
    followed = service.client.get(f"/jobs/{job_id}/logs", params={"follow": "true"})
    assert "无法继续读取日志" in followed.text
    assert worker  # 夹具在模块结束时移除剩余节点


def test_a_node_added_while_jobs_wait_gets_work_at_once(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    wait_for(lambda: service.held_cpus() == 0, 30)
    # 调度器与 API 对存活节点的看法一致后再开始（前一个测试刚移除过节点）
    wait_for(
        lambda: set(service.scheduler_status()["nodes"]) == set(_alive_node_names(service)),
        30,
        what="调度器看到的存活节点与 /dashboard 一致",
    )
    alive_cpus = service.client.get("/dashboard").json()["resource_stats"]["total_cpus"]
    blockers = [
        service.submit(
            "sleep 300", current_working_directory=str(tmp_path), standard_output=f"b{i}.out"
        )
        for i in range(alive_cpus)
    ]
    for job_id in blockers:
        service.wait_state(job_id, "RUNNING")
    waiting = service.submit(
        'echo "$CONDUCTOR_NODE_ID"',
        current_working_directory=str(tmp_path),
        standard_output="w.out",
    )
    assert service.state(waiting) == "PENDING"
    node = ray_cluster.add_node(num_cpus=1)
    try:
        body = service.wait_state(waiting, "COMPLETED", timeout=60)
        placed = {j: service.row(j) for j in blockers}
        assert body["job_log"]["stdout"].strip() == node.node_id, (node.node_id, alive_cpus, placed)
    finally:
        for job_id in blockers:
            service.client.post(f"/jobs/cancel/{job_id}")
        wait_for(lambda: service.held_cpus() == 0, 30)
        ray_cluster.remove_node(node)
