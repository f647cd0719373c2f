"""多节点行为（真实 Ray 集群：头节点 4 CPU + 两个 2 CPU 的工作节点；GPU 的展示另加一个有逻辑 GPU 的节点）。"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ray.cluster_utils import Cluster

from harness.serve import cli
from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service
from tests.cluster.live_api import LiveApi

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


GPU_NODE_GPUS = 2


@pytest.fixture
def gpu_node(service: Service, ray_cluster: Cluster) -> Iterator:
    """一个 1 CPU、2 个逻辑 GPU、声明了通用资源 nvme 与特性 a100 的节点；测试结束即移除。"""
    node = ray_cluster.add_node(
        num_cpus=1,
        num_gpus=GPU_NODE_GPUS,
        resources={"nvme": 1},
        labels={"conductor.features": "a100,ib"},
    )
    try:
        wait_for(
            lambda: node.node_id in service.scheduler_status()["agents"],
            60,
            what="GPU 节点的代理就绪",
        )
        yield node
    finally:
        ray_cluster.remove_node(node)


def _node(service: Service, node_id: str) -> dict:
    return next(
        n for n in service.client.get("/dashboard").json()["node_info"] if n["node_id"] == node_id
    )


def _gauges(service: Service) -> dict[tuple[str, tuple], float]:
    text_body = service.client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text_body)
        for s in family.samples
    }


def test_gpus_and_gres_show_in_dashboard_metrics_and_info(
    service: Service, gpu_node, tmp_path: Path
) -> None:
    """一个资源向量到处一样：节点的 GPU 与通用资源总数、作业占用后的已分配与空闲，
    出现在 /dashboard（每节点与合计）、/metrics 与 conductor info 里。"""
    node = _node(service, gpu_node.node_id)
    assert (node["total_gpus"], node["allocated_gpus"], node["available_gpus"]) == (2, 0, 2)
    assert node["gres"] == {"nvme": {"total": 1, "allocated": 0, "available": 1}}
    assert node["features"] == ["a100", "ib"]
    job_id = service.submit(
        "touch started; sleep 300",
        current_working_directory=str(tmp_path),
        tres_per_node="gres/gpu:1,gres/nvme:1",
    )
    wait_for((tmp_path / "started").exists, 60, what="GPU 作业开始运行")
    node = _node(service, gpu_node.node_id)
    assert (node["total_gpus"], node["allocated_gpus"], node["available_gpus"]) == (2, 1, 1)
    assert node["gres"] == {"nvme": {"total": 1, "allocated": 1, "available": 0}}
    assert (node["allocated_cpus"], node["available_cpus"]) == (1, 0)
    dash = service.client.get("/dashboard").json()
    res = dash["resource_stats"]
    assert (res["total_gpus"], res["allocated_gpus"], res["available_gpus"]) == (2, 1, 1)
    assert res["gres"]["nvme"] == {"total": 1, "allocated": 1, "available": 0}
    detail = service.query(job_id)["detail"]
    assert "gres/gpu=1" in detail["tres_alloc_str"] and "gres/nvme=1" in detail["tres_alloc_str"]

    m = _gauges(service)
    assert (m[("conductor_gpus_total", ())], m[("conductor_gpus_allocated", ())]) == (2, 1)
    assert m[("conductor_gres_total", (("name", "nvme"),))] == 1
    assert m[("conductor_gres_allocated", (("name", "nvme"),))] == 1

    live = LiveApi(service)
    try:
        as_json = json.loads(cli(live.url, "info", "--json").stdout)
        table = cli(live.url, "info")
    finally:
        live.close()
    mine = next(n for n in as_json["nodes"] if n["node_id"] == gpu_node.node_id)
    assert (mine["available_gpus"], mine["total_gpus"]) == (1, 2)
    assert as_json["resources"]["allocated_gpus"] == 1
    assert table.returncode == 0, table.stderr
    assert "GPU 空闲/总数：1/2（已用 1）" in table.stdout
    assert "通用资源 空闲/总数：nvme 0/1" in table.stdout
    service.client.post(f"/jobs/cancel/{job_id}")
    wait_for(lambda: service.held_cpus() == 0, 30, what="GPU 作业的资源归还")
