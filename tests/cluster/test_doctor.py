"""`conductor doctor`：真实的命令行进程，检查真实的数据库与 Ray 集群。"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from sqlalchemy import text

from harness.serve import CONDUCTOR
from tests.cluster.conftest import Service


def doctor(
    service: Service, cluster: Cluster, *args: str, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env["CONDUCTOR_NAMESPACE"] = namespace or service.settings.namespace
    return subprocess.run(
        [
            CONDUCTOR,
            "doctor",
            "--database-url",
            service.settings.database_url or "",
            "--ray-address",
            cluster.address,
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _insert_held(service: Service, state: str, node_id: str) -> int:
    with service.engine.begin() as conn:
        return conn.execute(
            text(
                """
                INSERT INTO jobs (name, account, partition, script, environment, work_dir, stdout_path,
                    stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, exclusive, state,
                    submit_time, start_time, node_id, node_name, token, agent_id, data_source)
                VALUES ('x', 'a', 'default', 'true', '{}', '/tmp', '/tmp/o', '/tmp/e', 1, 1, 1, 1024,
                    false, :state, now(), now(), :node, 'ghost-node', 'tok-doctor', 'agent-x', 'API')
                RETURNING id
                """
            ),
            {"state": state, "node": node_id},
        ).scalar_one()


def test_doctor_healthy_then_finds_and_fixes(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    job = service.submit("true", current_working_directory=str(tmp_path))
    service.wait_state(job, "COMPLETED")
    ok = doctor(service, ray_cluster)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PostgreSQL 可达" in ok.stdout and "调度器存活" in ok.stdout

    # 调度器本身会在对账中修好这些问题；doctor 的用处正是在它不在的时候
    ray.kill(service.scheduler, no_restart=True)
    ghost = _insert_held(service, "RUNNING", "f" * 56)  # 节点不存在：执行不可能活着
    done = _insert_held(service, "COMPLETED", "f" * 56)
    found = doctor(service, ray_cluster)
    assert found.returncode == 1
    assert "调度器不可用" in found.stderr
    assert f"作业 {ghost}（RUNNING）占用资源，但节点 ghost-node 已失联" in found.stderr
    assert f"作业 {done}（COMPLETED）占用资源" in found.stderr
    assert service.state(ghost) == "RUNNING"  # 不带 --fix 只报告

    fixed = doctor(service, ray_cluster, "--fix")
    assert fixed.returncode == 1  # 调度器仍不可用：无法自动修复
    assert f"作业 {ghost}（RUNNING）占用资源，但节点 ghost-node 已失联——已修复" in fixed.stdout
    assert service.state(ghost) == "NODE_FAIL"
    assert service.state(done) == "COMPLETED"
    assert service.held_cpus() == 0
    again = doctor(service, ray_cluster)
    assert "所有占用资源的作业都有存活的执行" in again.stdout
