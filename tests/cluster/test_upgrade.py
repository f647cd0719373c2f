"""升级：停掉调度器与空闲代理、再以新代码重建，运行中的作业不受影响（cluster/upgrade.py）。"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from cluster.bootstrap import ensure_scheduler
from cluster.names import SCHEDULER_NAME, agent_name
from cluster.upgrade import retire_actors
from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service


def _actor_exists(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True


def test_retire_then_rebuild_keeps_running_job(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    ns = service.settings.namespace
    node = ray_cluster.add_node(num_cpus=1)
    try:
        wait_for(
            lambda: node.node_id in service.scheduler_status()["agents"], 60, what="新节点的代理"
        )
        # 占满头节点的作业，等文件 go 出现才结束：升级全程都在运行
        busy = service.submit(
            "touch started; while [ ! -f go ]; do sleep 0.1; done; echo done",
            current_working_directory=str(tmp_path),
            cpus_per_task=CLUSTER_CPUS,
            standard_output="busy.out",
        )
        wait_for((tmp_path / "started").exists, 30, what="作业启动")
        head_node = next(n for n in service.scheduler_status()["agents"] if n != node.node_id)
        old_idle_agent = ray.get(
            ray.get_actor(agent_name(node.node_id), namespace=ns).identity.remote()
        )

        report = retire_actors(service.settings)

        assert report.scheduler_stopped
        assert not _actor_exists(SCHEDULER_NAME, ns)  # 永久停止，不被 Ray 重启
        assert report.retired == [node.node_id]  # 空闲的代理被停止
        assert report.kept == {head_node: [busy]}  # 忙碌的代理保留
        assert _actor_exists(agent_name(head_node), ns)
        assert service.state(busy) == "RUNNING"

        # 重启后的 API 进程做的事：以（新）代码建调度器；它为空闲节点新建代理，接管忙碌代理手中的作业
        service.scheduler = ensure_scheduler(service.settings)
        wait_for(lambda: node.node_id in service.scheduler_status()["agents"], 60, what="新代理")
        new_idle_agent = ray.get(
            ray.get_actor(agent_name(node.node_id), namespace=ns).identity.remote()
        )
        assert new_idle_agent != old_idle_agent

        # 头节点已满：新作业只能在被替换了代理的节点上运行
        fresh = service.submit(
            'echo "$CONDUCTOR_NODE_ID"',
            current_working_directory=str(tmp_path),
            standard_output="fresh.out",
        )
        body = service.wait_state(fresh, "COMPLETED")
        assert body["job_log"]["stdout"].strip() == node.node_id

        (tmp_path / "go").touch()
        body = service.wait_state(busy, "COMPLETED")
        assert body["detail"]["exit_code"] == "0:0" and body["job_log"]["stdout"] == "done\n"
        assert service.held_cpus() == 0
    finally:
        (tmp_path / "go").touch()
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)
