"""真实 Ray 集群上的测试：会话级一个 4 CPU 的集群，每个模块一套独立的调度器与数据库。"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest
import ray
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster
from sqlalchemy import text

from api.app import create_app
from api.runtime import Runtime
from cluster.bootstrap import ensure_scheduler
from cluster.client import ClusterClient
from cluster.names import AGENT_PREFIX, SCHEDULER_NAME, agent_name
from conductor.db import make_engine
from conductor.settings import Settings
from harness.rows import insert_job
from harness.serve import free_port
from harness.waiting import wait_for

CLUSTER_CPUS = 4


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    """一个真实的本地 Ray 集群（头节点 4 个逻辑 CPU）；多节点测试在其上增删节点。"""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": CLUSTER_CPUS,
            "include_dashboard": False,
            # 仪表盘代理默认固定监听 52365：同机并行的测试会话会抢同一个端口
            "dashboard_agent_listen_port": free_port(),
            # 节点失联更快被判定（默认约 15 秒），让节点故障测试不必久等
            "_system_config": {
                "health_check_period_ms": 500,
                "health_check_timeout_ms": 500,
                "health_check_failure_threshold": 3,
            },
        },
    )
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


class Service:
    """一个模块专用的 Conductor：独立数据库、独立 Ray 命名空间中的调度器，API 在进程内。"""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scheduler = ensure_scheduler(settings)
        self.engine = make_engine(settings.database_url or "")
        self.client = TestClient(
            create_app(Runtime(settings, self.engine, ClusterClient(settings)))
        )

    def submit(self, script: str, **job: object) -> int:
        resp = self.client.post("/jobs/submit", json=job_payload(script, **job))
        assert resp.status_code == 201, resp.text
        return int(resp.json()["job_id"])

    def query(self, job_id: int) -> dict:
        resp = self.client.get(f"/jobs/query/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def state(self, job_id: int) -> str:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id}
            ).scalar_one()

    def row(self, job_id: int) -> dict:
        with self.engine.connect() as conn:
            r = conn.execute(
                text(
                    "SELECT state, error_msg, exit_code, node_name, released_at, epoch, start_time "
                    "FROM jobs WHERE id = :id"
                ),
                {"id": job_id},
            ).one()
            return dict(r._mapping)

    def wait_state(self, job_id: int, *states: str, timeout: float = 60.0) -> dict:
        wait_for(
            lambda: self.state(job_id) in states,
            timeout,
            what=lambda: f"作业 {job_id} 进入 {states}，当前 {self.row(job_id)}",
        )
        return self.query(job_id)

    def held_cpus(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT COALESCE(SUM(cpus), 0) FROM jobs WHERE node_id IS NOT NULL AND released_at IS NULL"
                    )
                ).scalar_one()
            )

    def held(self) -> list[tuple]:
        with self.engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT id, state, cpus, exit_code FROM jobs WHERE node_id IS NOT NULL AND released_at IS NULL"
                    )
                )
            ]

    def scheduler_status(self, timeout: float = 60.0) -> dict:
        """调度器状态；它正在重启时等到它回来。"""

        def attempt() -> dict | None:
            try:
                return ray.get(self.scheduler.status.remote(), timeout=5)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return None

        return wait_for(attempt, timeout, interval=0.2, what="调度器应答")

    def head_agent(self) -> tuple[str, str]:
        """唯一存活节点（头节点）的 (节点 id, 其代理的身份)：测试据此写出认领给它的作业行。"""
        nodes = self.scheduler_status()["nodes"]
        assert len(nodes) == 1, nodes
        agent = ray.get_actor(agent_name(nodes[0]), namespace=self.settings.namespace)
        return nodes[0], ray.get(agent.identity.remote(), timeout=30)

    def book_head_cpus(self, cpus: int) -> int:
        """写一行占着头节点 cpus 个 CPU 的记账（已结束却未释放，同一代理不持有，对账不碰它），返回 id。
        在 unbook 之前放不下的作业只能排队：测试用它决定调度器何时能认领某个作业。"""
        node_id, agent_id = self.head_agent()
        with self.engine.begin() as conn:
            return insert_job(
                conn,
                state="'COMPLETED'",
                cpus=str(cpus),
                start_time="now()",
                node_id=f"'{node_id}'",
                node_name="'head'",
                agent_id=f"'{agent_id}'",
                token="'booking'",
            )

    def unbook(self, booking: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET released_at = now() WHERE id = :id"), {"id": booking}
            )

    def kill_scheduler(self) -> int:
        """SIGKILL 调度器 actor 的进程，返回它被杀前的纪元。"""
        status = self.scheduler_status()
        os.kill(status["pid"], signal.SIGKILL)
        return status["epoch"]

    def wait_scheduler_restarted(self, old_epoch: int, timeout: float = 60.0) -> dict:
        def restarted() -> dict | None:
            status = self.scheduler_status(timeout)
            return status if status["epoch"] > old_epoch and status["ready"] else None

        return wait_for(restarted, timeout, interval=0.2, what="调度器重启完成")

    def close(self) -> None:
        # 取消本模块遗留的作业并等资源归还，再移除本命名空间的 actor，避免影响后续模块
        with self.engine.connect() as conn:
            live = (
                conn.execute(text("SELECT id FROM jobs WHERE state IN ('PENDING', 'RUNNING')"))
                .scalars()
                .all()
            )
        for job_id in live:
            self.client.post(f"/jobs/cancel/{job_id}")
        wait_for(lambda: self.held_cpus() == 0, 60, what="模块结束时资源全部归还")
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["namespace"] == self.settings.namespace and (
                actor["name"] == SCHEDULER_NAME or actor["name"].startswith(AGENT_PREFIX)
            ):
                ray.kill(
                    ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True
                )
        self.client.close()
        self.engine.dispose()


def actor_pid(handle: ray.actor.ActorHandle) -> int:
    """actor 所在 worker 进程的 pid（GCS 的 actor 表），供测试向它发信号。"""
    return int(ray._private.state.actors(handle._actor_id.hex())["Pid"])


def job_payload(script: str, **job: object) -> dict:
    """契约格式的提交请求；测试只写关心的字段。"""
    base: dict[str, object] = {
        "account": "test",
        "current_working_directory": "/tmp/conductor-tests",
        "standard_output": "out.txt",
        "standard_error": "err.txt",
        "name": "t",
        "time_limit": "10",
        "partition": "default",
        "memory_per_node": "100M",
    }
    base.update(job)
    return {"job": base, "script": script}


def make_settings(database_url: str, **overrides: object) -> Settings:
    """测试用的服务配置：独立命名空间、短宽限、快对账；overrides 覆盖任意一项。

    测试以 root 运行（CI 也是），作业以服务自身的用户运行：须明确允许以 root 运行作业
    （allow_root_jobs，生产默认不允许）；不测这一项的测试都照此运行。
    进程内的测试服务明确关闭认证（auth="off"，生产默认开启）：不测认证的测试不必带令牌；
    测认证的测试（test_security、test_fuzz…）传 auth="on"。"""
    values: dict[str, object] = {
        "database_url": database_url,
        "namespace": f"test-{uuid.uuid4().hex[:8]}",
        "kill_wait": 2.0,
        "idle_resync": 0.5,
        "allow_root_jobs": True,
        "auth": "off",
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def service(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    svc = Service(make_settings(database_url))
    yield svc
    svc.close()
