"""没有任何崩溃却搁浅的认领（真实 Ray 集群与真实 PostgreSQL）：作业在数据库里是 RUNNING，
却不在任何代理手里、也不在派发途中。周期对账必须把它们了结，而不是等到调度器下次重启。"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import ray
from sqlalchemy import text

from cluster.names import agent_name
from harness.rows import insert_job
from harness.waiting import wait_for
from tests.cluster.conftest import Service, actor_pid


def test_claim_never_dispatched_is_requeued_by_periodic_reconcile(
    service: Service, tmp_path: Path
) -> None:
    """认领已提交而派发从未发生（例如派发前出错）：同一个存活代理不持有它——
    代理持有每个作业直到结局写入，所以它从未启动；周期对账把它重新排队，它恰好运行一次。"""
    node_id, agent_id = service.head_agent()
    ledger = tmp_path / "ledger"
    with service.engine.begin() as conn:
        job_id = insert_job(
            conn,
            f'echo "$SLURM_JOB_ID" >> {ledger}',
            str(tmp_path),
            state="'RUNNING'",
            start_time="now() - interval '1 hour'",
            node_id=f"'{node_id}'",
            node_name="'head'",
            node_host="'127.0.0.1'",
            agent_id=f"'{agent_id}'",
            token="'stranded-never-dispatched'",
            epoch="1",
        )
    service.wait_state(job_id, "COMPLETED", timeout=60)
    assert ledger.read_text().split() == [str(job_id)]  # 恰好运行一次
    wait_for(lambda: service.held_cpus() == 0, 10, what="资源全部归还")


def test_row_whose_spec_cannot_be_built_fails_with_the_reason(
    service: Service, tmp_path: Path
) -> None:
    """认领之后由作业行构造执行规格失败（库里的 environment 是 JSON 字符串而不是对象）：
    这个作业判 FAILED 并写明原因，不会被重新排队、再认领、再失败；同一轮认领的其他作业照常运行。"""
    ledger = tmp_path / "ledger"
    with service.engine.begin() as conn:  # 同一个事务：两个作业在同一轮里被认领
        bad = insert_job(conn, f"echo bad >> {ledger}", str(tmp_path), environment="'\"oops\"'")
        good = insert_job(conn, f"echo good >> {ledger}", str(tmp_path))
    body = service.wait_state(bad, "FAILED", timeout=60)
    assert "environment" in body["error_msg"], body["error_msg"]
    service.wait_state(good, "COMPLETED", timeout=60)
    assert ledger.read_text().split() == ["good"]
    wait_for(lambda: service.held_cpus() == 0, 10, what="资源全部归还")


def test_launch_error_other_than_actor_death_fails_only_that_job(
    service: Service, tmp_path: Path
) -> None:
    """派发调用抛出的不是 RayActorError（这里：代理的 launch 因库里的负内存值而报错，
    调度器收到 RayTaskError）：出错的作业判 FAILED 并写明原因，同一批派发的其他作业照常运行，
    都不搁浅为 RUNNING。"""
    ledger = tmp_path / "ledger"
    with service.engine.begin() as conn:  # 同一个事务：两个作业在同一轮里被认领、同一批派发
        bad = insert_job(conn, f"echo bad >> {ledger}", str(tmp_path), memory_bytes="-1")
        good = insert_job(conn, f"echo good >> {ledger}", str(tmp_path))
    body = service.wait_state(bad, "FAILED", timeout=60)
    assert "memory" in body["error_msg"], body["error_msg"]
    service.wait_state(good, "COMPLETED", timeout=60)
    assert ledger.read_text().split() == ["good"]  # 正常作业恰好运行一次
    wait_for(lambda: service.held_cpus() == 0, 10, what="资源全部归还")


def _claim_waits_for_a_lock(service: Service) -> bool:
    """调度器的认领语句正在等行锁。"""
    with service.engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' "
                    "AND query LIKE '%SET state = ''RUNNING'', start_time%'"
                )
            ).scalar_one()
        )


def test_agent_dropped_while_a_pass_is_in_its_thread_strands_nothing(
    service: Service, tmp_path: Path
) -> None:
    """一轮调度在线程里决策、认领时，另一个派发发现代理已死、丢弃了它的句柄：认领已提交的作业
    照样派发给决策时的那个代理（线程切换前的快照），随后按代理丢失了结，不会永远搁浅。

    用真实机制排出这个时序：SIGSTOP 冻住代理，让先前的一次派发挂起；测试持有大作业的行锁，
    让这一轮停在认领上；此时 SIGKILL 代理，挂起的派发得到 RayActorError、丢弃句柄；再放开行锁。"""
    node_id, _ = service.head_agent()
    pid = actor_pid(ray.get_actor(agent_name(node_id), namespace=service.settings.namespace))
    wd = str(tmp_path)
    booking = service.book_head_cpus(3)  # 在它释放之前，3 CPU 的大作业放不下
    os.kill(pid, signal.SIGSTOP)
    lock = service.engine.connect()
    try:
        first = service.submit("true", current_working_directory=wd)
        service.wait_state(first, "RUNNING")  # 已认领；派发挂在冻住的代理上
        big = service.submit("true", current_working_directory=wd, cpus_per_task=3)
        assert service.state(big) == "PENDING"
        txn = lock.begin()
        lock.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": big})
        service.unbook(booking)
        wait_for(lambda: _claim_waits_for_a_lock(service), 60, what="这一轮停在认领大作业的行锁上")
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: node_id not in service.scheduler_status()["agents"],
        30,
        what="挂起的派发发现代理已死，丢弃了它的句柄",
    )
    txn.rollback()
    lock.close()
    for job_id in (first, big):
        body = service.wait_state(job_id, "FAILED", timeout=60)
        assert "节点代理已退出" in body["error_msg"], body["error_msg"]
    wait_for(lambda: service.held_cpus() == 0, 30, what="资源全部归还")
