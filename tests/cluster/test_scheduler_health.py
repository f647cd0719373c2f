"""活着却什么也不做的调度器（真实 Ray 集群与真实 PostgreSQL）：主循环已退出、读取节点列表的线程卡住。
健康检查必须如实报告，调度器必须自己恢复。"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster
from sqlalchemy import text

from harness.waiting import wait_for
from tests.cluster.conftest import Service


def _status_or_none(service: Service) -> dict | None:
    try:
        return ray.get(service.scheduler.status.remote(), timeout=5)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_healthy_status_reports_liveness(service: Service) -> None:
    """健康时 status() 与 /health 给出主循环与节点读取的状态。"""
    # 刚就绪时第一轮调度可能还没做完：等到它完成过一轮
    status = wait_for(
        lambda: (s := _status_or_none(service)) and s.get("last_pass_s") is not None and s, 30
    )
    assert status["healthy"] is True and status["problems"] == []
    assert status["main_alive"] is True and status["main_error"] is None
    assert 0 <= status["loop_idle_s"] < 60
    assert status["gcs_reader"]["timeouts"] == 0
    health = service.client.get("/health")
    assert health.status_code == 200
    assert health.json()["components"]["scheduler"]["healthy"] is True


def test_main_loop_death_is_unhealthy_and_heals_itself(service: Service, tmp_path: Path) -> None:
    """重启后的调度器领取纪元失败（一个 with_retry 不重试的错误：scheduler_epochs 上的 CHECK 约束
    拒绝插入），主循环随之退出。/health 报告调度器不健康并说明原因；看门狗让进程退出，Ray 重启它，
    约束去掉后它自己恢复，作业照常运行。"""
    with service.engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE scheduler_epochs ADD CONSTRAINT no_new_epochs CHECK (id < 0) NOT VALID"
            )
        )
    try:
        old_epoch = service.kill_scheduler()

        def unhealthy() -> dict | None:
            resp = service.client.get("/health")
            scheduler = resp.json()["components"]["scheduler"]
            return (
                scheduler if resp.status_code == 503 and "主循环已退出" in str(scheduler) else None
            )

        scheduler = wait_for(unhealthy, 60, interval=0.02, what="/health 报告主循环已退出")
        assert scheduler["status"] == "down"
        assert "no_new_epochs" in scheduler["error"]  # 原因写明是哪个错误
    finally:
        with service.engine.begin() as conn:
            conn.execute(text("ALTER TABLE scheduler_epochs DROP CONSTRAINT no_new_epochs"))
    status = service.wait_scheduler_restarted(old_epoch, timeout=60)
    assert status["main_alive"] and status["healthy"]
    wait_for(lambda: service.client.get("/health").status_code == 200, 30, what="/health 恢复")
    job = service.submit("echo after", current_working_directory=str(tmp_path))
    assert service.wait_state(job, "COMPLETED")["job_log"]["stdout"] == "after\n"


def test_hung_gcs_read_is_reported_and_the_reader_replaced(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """GCS 不应答（SIGSTOP GCS 进程）：读取节点列表的线程卡住。status() 报告不健康、说明节点列表
    读不到，并换用新的读取线程而不是排在卡住的线程后面；GCS 恢复后重新健康，作业照常运行。"""
    gcs = ray_cluster.head_node.all_processes[ray_constants.PROCESS_TYPE_GCS_SERVER][0].process
    os.kill(gcs.pid, signal.SIGSTOP)
    try:

        def reported() -> dict | None:
            s = _status_or_none(service)
            if s is None or s.get("healthy", True) or not s["gcs_reader"].get("replaced"):
                return None
            return s

        status = wait_for(reported, 45, interval=0.5, what="status() 报告节点读取卡住")
        assert any("节点列表" in p for p in status["problems"]), status["problems"]
        assert status["main_alive"]
    finally:
        os.kill(gcs.pid, signal.SIGCONT)
    wait_for(
        lambda: (s := _status_or_none(service)) is not None and s["healthy"],
        60,
        what="GCS 恢复后调度器重新健康",
    )
    job = service.submit("echo after", current_working_directory=str(tmp_path))
    service.wait_state(job, "COMPLETED")
