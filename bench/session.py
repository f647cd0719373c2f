"""基准的会话：一个 conductor serve、一个数据库连接、一个 Ray driver，以及各项测量共用的工具
（提交、SQL、等待结束、占满与放开集群、调度器状态）。测量本身在 bench/run.py。"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import ray
from sqlalchemy import create_engine, text

from cluster.ray_auth import PATH_VAR, use_token_if_available
from harness.serve import ServeProcess
from harness.waiting import wait_for

CPUS = 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def job(script: str, wd: str, **extra: object) -> dict:
    body: dict[str, object] = {
        "account": "bench",
        "current_working_directory": wd,
        "standard_output": "/dev/null",
        "standard_error": "/dev/null",
        "name": "bench",
        "time_limit": "10",
        "partition": "default",
        "memory_per_node": "10M",
    }
    body.update(extra)
    return {"job": body, "script": script}


class Session:
    """一次基准运行：一个 conductor serve、一个数据库连接、一个 Ray driver。"""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.serve = ServeProcess(workdir, workdir / "data", "--num-cpus", str(CPUS))
        try:
            self.serve.wait_healthy()
        except BaseException:
            self.serve.cleanup()
            raise
        self.url = self.serve.url
        self.db = create_engine(
            f"postgresql+psycopg2://postgres:@/postgres?host={workdir / 'data' / 'pg'}",
            pool_size=4,
        )
        # serve 在它自己的（空）HOME 里生成了 Ray 令牌：基准的 driver 读同一个文件
        os.environ[PATH_VAR] = str(self.serve.ray_token_path)
        use_token_if_available()
        ray.init(
            address=f"127.0.0.1:{self.serve.ray_port}", namespace="conductor", log_to_driver=False
        )
        self.local = threading.local()
        self.wd = str(workdir / "jobs")

    # ---- 工具 ----

    def client(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            # 认证默认开启：带上 serve 为本机用户写入的令牌
            self.local.client = httpx.Client(
                base_url=self.url, headers=self.serve.headers, timeout=60
            )
        return self.local.client

    def submit(self, payload: dict) -> int:
        resp = self.client().post("/jobs/submit", json=payload)
        resp.raise_for_status()
        return int(resp.json()["job_id"])

    def submit_batch(self, payloads: list[dict]) -> list[int]:
        resp = self.client().post("/jobs/submit/batch", json={"jobs": payloads})
        resp.raise_for_status()
        return [int(j) for j in resp.json()["job_ids"]]

    def sql(self, query: str, **params: object) -> list:
        with self.db.begin() as conn:
            result = conn.execute(text(query), params)
            return list(result) if result.returns_rows else []

    def wait_terminal(self, ids: list[int], timeout: float = 600) -> None:
        lo, hi = min(ids), max(ids)
        wait_for(
            lambda: (
                self.sql(
                    "SELECT COUNT(*) FROM jobs WHERE id BETWEEN :lo AND :hi AND end_time IS NULL",
                    lo=lo,
                    hi=hi,
                )[0][0]
                == 0
            ),
            timeout,
            interval=0.2,
            what="作业全部结束",
        )

    def scheduler_status(self) -> dict:
        handle = ray.get_actor("conductor-scheduler", namespace="conductor")
        return ray.get(handle.status.remote(), timeout=30)

    def block_cluster(self) -> int:
        """占满全部 CPU 的作业：其后提交的作业都保持 PENDING。"""
        blocker = self.submit(
            job("sleep 3600", self.wd, cpus_per_task=CPUS, time_limit="UNLIMITED")
        )
        wait_for(
            lambda: self.sql("SELECT state FROM jobs WHERE id=:i", i=blocker)[0][0] == "RUNNING", 60
        )
        return blocker

    def drain_pending(self) -> None:
        """清理基准留下的排队作业（直接用带条件的 UPDATE，与 transitions.cancel 同一规则）。"""
        # 按 id 顺序锁行、跳过调度器正锁着的行，分批直到清空：不与调度器的批量更新死锁
        while self.sql(
            "UPDATE jobs SET state='CANCELLED', end_time=clock_timestamp(), error_msg='基准清理' "
            "WHERE id IN (SELECT id FROM jobs WHERE state='PENDING' ORDER BY id "
            "LIMIT 10000 FOR UPDATE SKIP LOCKED) RETURNING id"
        ):
            pass

    def cancel(self, job_id: int) -> None:
        self.client().post(f"/jobs/cancel/{job_id}").raise_for_status()

    # ---- 各项测量 ----

    def _epoch(self) -> int:
        try:
            return self.scheduler_status()["epoch"] if self.scheduler_status()["ready"] else 0
        except Exception:  # noqa: BLE001 - 重启中
            return 0

    def close(self) -> None:
        ray.shutdown()
        self.db.dispose()
        self.serve.stop()
        self.serve.cleanup()
