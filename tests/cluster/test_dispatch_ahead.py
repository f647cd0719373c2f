"""预派发（真实 Ray 集群，头节点 4 CPU）：节点满时后续作业进节点代理的本地队列，资源一空即启动。

对用户它们仍是 PENDING；取消、挂起、代理死亡都不会让它们运行错或运行两次。
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from sqlalchemy import text

from cluster.agent import agent_name
from tests.cluster.conftest import CLUSTER_CPUS, Service
from tests.helpers import wait_for


@pytest.fixture(autouse=True)
def clean_queue(service: Service) -> Iterator[None]:
    yield
    with service.engine.connect() as conn:
        live = conn.execute(
            text("SELECT id FROM jobs WHERE state IN ('PENDING', 'RUNNING')")
        ).scalars()
        for job_id in list(live):
            service.client.post(f"/jobs/cancel/{job_id}")
    wait_for(lambda: service.held_cpus() == 0, 60, what="资源全部归还")


def assigned(service: Service) -> set[int]:
    with service.engine.connect() as conn:
        return set(
            conn.execute(
                text("SELECT id FROM jobs WHERE state = 'PENDING' AND node_id IS NOT NULL")
            ).scalars()
        )


def fill_node(service: Service, tmp: Path) -> list[int]:
    ids = [
        service.submit("sleep 60", current_working_directory=str(tmp)) for _ in range(CLUSTER_CPUS)
    ]
    for job_id in ids:
        service.wait_state(job_id, "RUNNING")
    return ids


def queue_ahead(service: Service, tmp: Path, n: int, sleep: float = 0) -> list[int]:
    ids = [
        service.submit(
            f"touch ran-{i}; sleep {sleep}",
            current_working_directory=str(tmp),
            standard_output=f"q{i}.out",
        )
        for i in range(n)
    ]
    wait_for(lambda: set(ids) <= assigned(service), 30, what="后续作业预派发到代理队列")
    return ids


def test_queued_jobs_start_as_soon_as_cpus_free_and_look_pending(
    service: Service, tmp_path: Path
) -> None:
    sleepers = fill_node(service, tmp_path)
    queued = queue_ahead(service, tmp_path, CLUSTER_CPUS, sleep=30)
    body = service.query(queued[0])
    assert body["state"] == "PENDING" and body["state_reason"] == "Resources"
    assert body["detail"]["node_list"] == "" and body["time"]["start_time"] is None
    assert service.client.get("/dashboard").json()["resource_stats"]["allocated_cpus"] == (
        CLUSTER_CPUS
    )
    service.client.post(f"/jobs/cancel/{sleepers[0]}")
    service.wait_state(queued[0], "RUNNING")
    wait_for((tmp_path / "ran-0").exists, 30, what="预派发的作业真的启动了")
    assert all(service.state(j) == "PENDING" for j in queued[1:])  # 只空出了一个 CPU
    for job_id in sleepers[1:]:
        service.client.post(f"/jobs/cancel/{job_id}")
    for job_id in queued:
        service.wait_state(job_id, "RUNNING")
    assert service.client.get("/dashboard").json()["resource_stats"]["allocated_cpus"] == (
        CLUSTER_CPUS
    )


def test_cancel_and_hold_while_queued_on_the_node(service: Service, tmp_path: Path) -> None:
    sleepers = fill_node(service, tmp_path)
    cancelled, held, normal, _ = queue_ahead(service, tmp_path, CLUSTER_CPUS)
    assert service.client.post(f"/jobs/cancel/{cancelled}").status_code == 200
    assert service.client.post(f"/jobs/{held}/hold").status_code == 200
    for job_id in sleepers:
        service.client.post(f"/jobs/cancel/{job_id}")
    service.wait_state(normal, "COMPLETED")
    # 被取消的从未运行，资源记录也已归还；被挂起的撤回了普通队列、仍在等待
    assert not (tmp_path / "ran-0").exists()
    wait_for(lambda: service.row(cancelled)["released_at"] is not None, 30, what="归还")
    wait_for(lambda: held not in assigned(service), 30, what="挂起的作业撤回普通队列")
    assert service.state(held) == "PENDING" and not (tmp_path / "ran-1").exists()
    service.client.post(f"/jobs/{held}/release")
    service.wait_state(held, "COMPLETED")


def test_agent_death_returns_queued_jobs_to_the_queue(service: Service, tmp_path: Path) -> None:
    """代理死亡：运行中的作业随之失败（同场景 2′），本地队列里的作业从未启动，回到队列重新运行。"""
    sleepers = fill_node(service, tmp_path)
    queued = queue_ahead(service, tmp_path, 2)
    name = agent_name(_node_id(service, sleepers[0]))
    agent = ray.get_actor(name, namespace=service.settings.namespace)
    ray.kill(agent, no_restart=True)
    for job_id in sleepers:
        service.wait_state(job_id, "FAILED")
    for job_id in queued:
        service.wait_state(job_id, "COMPLETED")
    with service.engine.connect() as conn:
        runs = conn.execute(
            text("SELECT COUNT(*) FROM jobs WHERE id = ANY(:ids) AND exit_code = '0:0'"),
            {"ids": queued},
        ).scalar_one()
    assert runs == len(queued)


def _node_id(service: Service, job_id: int) -> str:
    with service.engine.connect() as conn:
        return conn.execute(
            text("SELECT node_id FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()
