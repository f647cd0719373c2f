"""API 进程在 200 个并发提交中被 SIGKILL：拿到 201 的作业都存在且恰好运行一次，没有半截作业。

服务以 `conductor serve --database-url … --ray-address …` 运行在本会话的 Ray 集群上，
与进程内的 service 共用同一个数据库和调度器（同一命名空间）。"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from ray.cluster_utils import Cluster
from sqlalchemy import text

from harness.serve import ServeProcess
from harness.waiting import wait_for
from tests.cluster.conftest import Service, job_payload

SUBMISSIONS = 200


def test_api_killed_during_concurrent_submissions(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    serve = ServeProcess(
        tmp_path,
        tmp_path / "data",
        "--database-url",
        service.settings.database_url or "",
        "--ray-address",
        ray_cluster.address,
        env={"CONDUCTOR_NAMESPACE": service.settings.namespace},
    )
    accepted: list[int] = []
    lock = threading.Lock()
    done = 0
    try:
        serve.wait_healthy()
        api_pid = serve.child_pid("api.process")

        def submit(i: int) -> None:
            nonlocal done
            payload = job_payload(
                f'echo "$SLURM_JOB_ID" >> {ledger}', current_working_directory=str(tmp_path)
            )
            try:
                resp = httpx.post(
                    serve.url + "/jobs/submit", json=payload, headers=serve.headers, timeout=30
                )
                if resp.status_code == 201:
                    with lock:
                        accepted.append(int(resp.json()["job_id"]))
            except httpx.HTTPError:
                pass  # 连接被切断：客户端不知道结果，正如真实客户端
            with lock:
                done += 1

        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(submit, i) for i in range(SUBMISSIONS)]
            wait_for(lambda: done >= 40, 60, what="已有一批提交完成")
            os.kill(api_pid, signal.SIGKILL)
            for f in futures:
                f.result()
        assert 40 <= len(accepted) < SUBMISSIONS

        # 监督进程把 API 拉起来了
        serve.wait_healthy(120)
        assert serve.child_pid("api.process") != api_pid

        with service.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, name, script, account FROM jobs")).all()
        stored = {r.id for r in rows}
        assert set(accepted) <= stored  # 拿到 201 的作业都在
        assert all(r.script and r.name and r.account for r in rows)  # 没有半截的行
        for job_id in stored:
            service.wait_state(job_id, "COMPLETED", timeout=120)
        entries = [int(x) for x in ledger.read_text().split()]
        assert sorted(entries) == sorted(stored)  # 每个已保存的作业恰好运行一次
        assert serve.stop() == 0
    finally:
        serve.cleanup()


def test_serve_restart_on_external_ray_reattaches_running_jobs(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """外部 Ray 集群上 `conductor serve` 停止再启动：调度器与作业都在集群里，运行中的作业照常结束。"""
    args = (
        "--database-url",
        service.settings.database_url or "",
        "--ray-address",
        ray_cluster.address,
    )
    env = {"CONDUCTOR_NAMESPACE": service.settings.namespace}
    first = ServeProcess(tmp_path, tmp_path / "data", *args, env=env)
    try:
        first.wait_healthy()
        payload = job_payload(
            "touch started; sleep 4; echo survived", current_working_directory=str(tmp_path)
        )
        job_id = int(
            httpx.post(first.url + "/jobs/submit", json=payload, headers=first.headers).json()[
                "job_id"
            ]
        )
        wait_for((tmp_path / "started").exists, 30)
        assert first.stop() == 0
    finally:
        first.cleanup()
    assert service.state(job_id) == "RUNNING"  # 服务停了，作业还在跑

    second = ServeProcess(tmp_path, tmp_path / "data", *args, env=env)
    try:
        second.wait_healthy()
        wait_for(
            lambda: second.query(job_id)["state"] == "COMPLETED", 60, what="重新接管的作业完成"
        )
        assert second.query(job_id)["job_log"]["stdout"] == "survived\n"
        assert second.stop() == 0
    finally:
        second.cleanup()
