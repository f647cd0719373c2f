"""故障场景（真实 Ray 集群与真实 PostgreSQL）：调度器被杀、执行进程被杀、节点死亡、
混沌测试、并发取消。每个场景都检查：作业不丢、不重跑、CPU 不泄漏、不留孤儿进程。"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from pathlib import Path

import pytest
import ray
from sqlalchemy import text

from cluster.names import agent_name
from conductor.proctree import kill_job_tree
from harness.waiting import pid_alive, wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service, actor_pid


def _wait_file(path: Path, timeout: float = 30.0) -> None:
    wait_for(path.exists, timeout, what=f"文件 {path} 出现")


def test_scheduler_killed_running_jobs_survive_and_queue_resumes(
    service: Service, tmp_path: Path
) -> None:
    script = 'echo "$SLURM_JOB_ID" >> ledger; touch "started-$SLURM_JOB_ID"; sleep 3; echo "out-$SLURM_JOB_ID"; echo err >&2; exit 3'
    wd = str(tmp_path)
    running = [
        service.submit(
            script,
            current_working_directory=wd,
            cpus_per_task=2,
            standard_output=f"{i}.out",
            standard_error=f"{i}.err",
        )
        for i in range(2)
    ]
    pending = [
        service.submit('echo "$SLURM_JOB_ID" >> ledger', current_working_directory=wd)
        for _ in range(3)
    ]
    for job_id in running:
        _wait_file(tmp_path / f"started-{job_id}")
    assert {service.state(j) for j in pending} == {"PENDING"}

    old_epoch = service.kill_scheduler()
    status = service.wait_scheduler_restarted(old_epoch)
    assert f"重新接管 2 个 {sorted(running)}" in status["last_reconcile"]

    for job_id in running:
        body = service.wait_state(job_id, "FAILED")
        assert body["detail"]["exit_code"] == "3:0"  # 真实的退出码
        assert body["job_log"]["stdout"] == f"out-{job_id}\n"
        assert body["job_log"]["stderr"] == "err\n"
    for job_id in pending:
        service.wait_state(job_id, "COMPLETED")
    ledger = (tmp_path / "ledger").read_text().split()
    assert sorted(ledger) == sorted(str(j) for j in running + pending)  # 每个作业恰好运行一次
    wait_for(lambda: service.held_cpus() == 0, 10, what="资源全部归还")


def test_executor_process_killed_fails_job_and_leaves_nothing(
    service: Service, tmp_path: Path
) -> None:
    script = """
echo $PPID > executor.pid
sleep 300 & echo $! >> pids
setsid sleep 301 & echo $! >> pids
bash -c 'sleep 302 & echo $! >> pids; wait' & echo $! >> pids
touch started
wait
"""
    job_id = service.submit(script, current_working_directory=str(tmp_path), cpus_per_task=2)
    _wait_file(tmp_path / "started")
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    wait_for(lambda: len((tmp_path / "pids").read_text().split()) == 4, 10)
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    os.kill(int((tmp_path / "executor.pid").read_text()), signal.SIGKILL)

    body = service.wait_state(job_id, "FAILED", timeout=30)
    assert "执行作业的进程意外退出" in body["error_msg"]
    for pid in pids:
        wait_for(lambda p=pid: not pid_alive(p), 10, what=f"作业进程 {pid} 已被清理")
    wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")
    # 归还的 CPU 真的能再用：一个占满集群的作业可以运行
    again = service.submit(
        "true", current_working_directory=str(tmp_path), cpus_per_task=CLUSTER_CPUS
    )
    service.wait_state(again, "COMPLETED")


def test_two_concurrent_cancels_one_outcome_one_release(service: Service, tmp_path: Path) -> None:
    job_id = service.submit("touch started; sleep 300", current_working_directory=str(tmp_path))
    _wait_file(tmp_path / "started")
    barrier = threading.Barrier(2)
    messages: list[str] = []

    def cancel() -> None:
        barrier.wait()
        resp = service.client.post(f"/jobs/cancel/{job_id}")
        assert resp.status_code == 200
        messages.append(resp.json()["msg"])

    threads = [threading.Thread(target=cancel) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum("已取消" in m for m in messages) == 1, messages
    assert sum("无需取消" in m for m in messages) == 1, messages
    wait_for(lambda: service.held_cpus() == 0, 10, what="资源归还")
    with service.engine.connect() as conn:
        row = conn.execute(
            text("SELECT state, released_at, end_time FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert row.state == "CANCELLED" and row.released_at is not None
    assert row.released_at >= row.end_time  # 进程树真正结束后才归还资源


def test_chaos_scheduler_killed_five_times(service: Service, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    script = f'echo "$SLURM_JOB_ID" >> {ledger}'
    ids: list[int] = []
    rng = random.Random(20261130)
    kills = 0

    def killer() -> None:
        nonlocal kills
        for _ in range(5):
            threading.Event().wait(rng.uniform(0.2, 1.5))
            epoch = service.kill_scheduler()
            kills += 1
            service.wait_scheduler_restarted(epoch)

    thread = threading.Thread(target=killer)
    thread.start()
    for _ in range(300):
        ids.append(service.submit(script, current_working_directory=str(tmp_path)))
    thread.join()
    assert kills == 5
    for job_id in ids:
        service.wait_state(job_id, "COMPLETED", timeout=120)
    entries = ledger.read_text().split()
    assert sorted(entries) == sorted(str(j) for j in ids)  # 每个作业恰好一次
    wait_for(lambda: service.held_cpus() == 0, 10, what="资源全部归还")
    res = service.client.get("/dashboard").json()["resource_stats"]
    assert res["available_cpus"] == res["total_cpus"] == CLUSTER_CPUS


@pytest.fixture
def worker_node(service: Service, ray_cluster):  # type: ignore[no-untyped-def]
    """临时加入的第二个节点（2 CPU）；测试结束时若还在就移除。"""
    node = ray_cluster.add_node(num_cpus=2)
    wait_for(
        lambda: node.node_id in service.scheduler_status()["agents"],
        60,
        what="调度器为新节点建好代理",
    )
    yield node
    if node in ray_cluster.worker_nodes:
        ray_cluster.remove_node(node)


def test_node_death_fails_only_its_jobs(
    service: Service, worker_node, ray_cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    wd = str(tmp_path)
    # 最佳适配先填满小节点：前两个作业在新节点上，后两个在头节点上
    jobs = [
        service.submit("touch started-$SLURM_JOB_ID; sleep 300", current_working_directory=wd)
        for _ in range(4)
    ]
    for job_id in jobs:
        _wait_file(tmp_path / f"started-{job_id}")
    node_name = {j: service.query(j)["detail"]["node_list"] for j in jobs}
    doomed_node = worker_node.node_id
    with service.engine.connect() as conn:
        on_worker = (
            conn.execute(text("SELECT id FROM jobs WHERE node_id = :n"), {"n": doomed_node})
            .scalars()
            .all()
        )
        tokens = (
            conn.execute(text("SELECT token FROM jobs WHERE node_id = :n"), {"n": doomed_node})
            .scalars()
            .all()
        )
    st = service.scheduler_status()
    assert len(on_worker) == 2, (node_name, doomed_node, st["agents"], st["nodes"])
    survivors = [j for j in jobs if j not in on_worker]
    big = service.submit(
        "echo big", current_working_directory=wd, cpus_per_task=3
    )  # 只有头节点放得下，等待中
    assert service.state(big) == "PENDING"

    ray_cluster.remove_node(worker_node, allow_graceful=False)
    try:
        for job_id in on_worker:
            body = service.wait_state(job_id, "NODE_FAIL", timeout=60)
            assert node_name[job_id] in body["error_msg"]
        for job_id in survivors:
            assert service.state(job_id) == "RUNNING"
        assert service.held_cpus() == 2  # 失联节点上的 CPU 已从账上移除
        wait_for(
            lambda: (
                service.client.get("/dashboard").json()["resource_stats"]["total_cpus"]
                == CLUSTER_CPUS
            ),
            30,
            what="失联节点的 CPU 离开集群总数",
        )
        dead = [
            n for n in service.client.get("/dashboard").json()["node_info"] if not n["available"]
        ]
        # 本会话里先前的测试也可能移除过节点：只要求失联节点在列、幸存节点不在列
        assert doomed_node in [n["node_id"] for n in dead]
        with service.engine.connect() as conn:
            alive_nodes = set(
                conn.execute(
                    text("SELECT node_id FROM jobs WHERE id = ANY(:ids)"), {"ids": survivors}
                )
                .scalars()
                .all()
            )
        assert not alive_nodes & {n["node_id"] for n in dead}
        for job_id in survivors:
            service.client.post(f"/jobs/cancel/{job_id}")
        body = service.wait_state(big, "COMPLETED")  # 排队作业在幸存节点上运行
        assert body["detail"]["node_list"] != node_name[on_worker[0]]
    finally:
        # 同一台机器模拟的“死节点”上，脱离会话的脚本进程仍在：按标记清理
        for token in tokens:
            kill_job_tree(token, grace=0)


def test_orphan_sweep_is_retried_until_an_agent_confirms(
    service: Service, worker_node, ray_cluster, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """节点死亡后的孤儿清理重试到某个代理确认为止。第一次清理请求交给了同一主机上
    一个被冻住（SIGSTOP）、随后被杀死（SIGKILL）的代理，请求随之丢失；调度器为头节点新建代理后
    再清理一次，失联节点上作业留下的进程被终止。"""
    job_id = service.submit(
        "sleep 300 & echo $! > orphan.pid; touch started; wait",
        current_working_directory=str(tmp_path),
    )
    _wait_file(tmp_path / "started")
    orphan = int((tmp_path / "orphan.pid").read_text())
    with service.engine.connect() as conn:
        node_id, token = conn.execute(
            text("SELECT node_id, token FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert node_id == worker_node.node_id  # 最佳适配：1 CPU 的作业先放进小节点
    (head_id,) = set(service.scheduler_status()["agents"]) - {worker_node.node_id}
    agents = [
        actor_pid(ray.get_actor(agent_name(n), namespace=service.settings.namespace))
        for n in (head_id, worker_node.node_id)
    ]
    # 两个代理都冻住：失联节点上的代理来不及自己清理，头节点上的代理收到清理请求也不执行
    for pid in agents:
        os.kill(pid, signal.SIGSTOP)
    try:
        ray_cluster.remove_node(worker_node, allow_graceful=False)
        service.wait_state(job_id, "NODE_FAIL", timeout=60)
        assert pid_alive(orphan)  # 清理请求挂在冻住的代理上
    finally:
        for pid in agents:
            with contextlib.suppress(ProcessLookupError):  # 失联节点上的代理可能已随节点退出
                os.kill(pid, signal.SIGKILL)
    try:
        wait_for(lambda: not pid_alive(orphan), 60, what="新代理确认清理，孤儿进程被终止")
    finally:
        kill_job_tree(token, grace=0)


def test_shutdown_kills_running_jobs_and_never_starts_queued_ones(
    service: Service, tmp_path: Path
) -> None:
    """服务关闭（本地 Ray 将停止）：调度器终止运行中的作业。终止释放出的 CPU 不能再派给排队的作业，
    否则它刚启动就随集群一起被杀、判 NODE_FAIL，而它本该留在队列里等下次启动（CI 里偶发的
    test_restart_keeps_queue_and_settles_running_jobs 失败就是这样）。"""
    wd = str(tmp_path)
    running = service.submit(
        "touch started; sleep 300", current_working_directory=wd, cpus_per_task=CLUSTER_CPUS
    )
    _wait_file(tmp_path / "started")
    queued = service.submit("touch queued-ran", current_working_directory=wd)
    assert service.state(queued) == "PENDING"

    stopped = ray.get(service.scheduler.shutdown_jobs.remote("服务关闭（测试）", 1.0), timeout=60)
    assert stopped == 1
    assert service.row(running)["state"] == "NODE_FAIL"
    status = service.scheduler_status()
    assert status["closing"] is True

    # 关闭之后调度器主循环照常转（还没被杀，空闲时每 0.5 秒醒来），只是不再做调度轮：
    # 等到上一轮已过去 3 秒而主循环仍在转，排队的作业仍在排队
    def loop_turns_without_passes() -> bool:
        s = service.scheduler_status()
        return s["last_pass_s"] >= 3.0 and s["loop_idle_s"] < 1.0

    wait_for(
        loop_turns_without_passes,
        30,
        what=lambda: f"关闭后主循环空转：{service.scheduler_status()}",
    )
    assert service.state(queued) == "PENDING"
    assert not (tmp_path / "queued-ran").exists()

    # 调度器重启（正如服务重新启动）：排队的作业照常运行
    service.wait_scheduler_restarted(service.kill_scheduler())
    service.wait_state(queued, "COMPLETED")
