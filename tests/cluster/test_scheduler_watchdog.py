"""主循环停滞（真实 Ray 集群与真实 PostgreSQL）：调度轮卡在一条永远等不到的语句上。
/health 与 conductor doctor 报告它，看门狗让调度器进程退出、由 Ray 重启。

本模块的调度器把停滞时限调得很短（scheduler_stall_timeout），所以单独成一个模块。"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from sqlalchemy import text

from cluster.doctor import check_scheduler
from harness.waiting import wait_for
from tests.cluster.conftest import Service, make_settings

STALL = 5.0


@pytest.fixture(scope="module")
def service(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    svc = Service(make_settings(database_url, scheduler_stall_timeout=STALL))
    yield svc
    svc.close()


def test_stalled_main_loop_is_reported_and_restarted(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """测试持有一个排队作业的行锁，调度轮认领它时一直等锁：主循环不再前进。
    /health 报告调度器停滞、doctor 报告它不健康；看门狗在两倍时限后让进程退出，Ray 重启调度器
    （新纪元）。放开行锁后作业照常运行，/health 恢复。"""
    booking = service.book_head_cpus(4)  # 占满头节点：在它释放之前，作业放不下、不会被认领
    job = service.submit("echo ran", current_working_directory=str(tmp_path))
    assert service.state(job) == "PENDING"
    old_epoch = service.scheduler_status()["epoch"]
    lock = service.engine.connect()
    txn = lock.begin()
    try:
        lock.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": job})
        service.unbook(booking)

        def stalled() -> dict | None:
            resp = service.client.get("/health")
            scheduler = resp.json()["components"]["scheduler"]
            return scheduler if resp.status_code == 503 and "没有进展" in str(scheduler) else None

        scheduler = wait_for(stalled, 60, interval=0.1, what="/health 报告主循环停滞")
        assert scheduler["status"] == "down" and scheduler["main_alive"] is True

        # doctor 的调度器检查，在测试进程里对真实的调度器执行（命令行进程连不上测试集群：Ray 令牌）
        wait_for(
            lambda: (
                "调度器存活但不健康" in (found := check_scheduler(service.settings)).message
                and "没有进展" in found.message
            ),
            60,
            interval=0.1,
            what="conductor doctor 报告调度器不健康",
        )
        wait_for(
            lambda: service.scheduler_status()["epoch"] > old_epoch,
            60,
            what="看门狗让停滞的调度器退出，Ray 重启它",
        )
    finally:
        txn.rollback()
        lock.close()
    assert service.wait_state(job, "COMPLETED", timeout=60)["job_log"]["stdout"] == "ran\n"
    wait_for(lambda: service.client.get("/health").status_code == 200, 60, what="/health 恢复")
