"""现实路径（issue 20 第 1–3 项）：像新用户那样提交，并与同一机器上的“FastAPI + PostgreSQL
每个请求一条 INSERT”并排测量（这套技术栈的天花板）。

- fresh：8 个线程，每个请求新建一个连接（同 curl / sbatch 循环），输出写到工作目录里的真实文件，
  另一个线程每秒 GET /dashboard；报告接受速率与接受延迟，再等作业全部结束报告端到端速率，
  与同一次运行里紧挨着测的裸 Ray 任务相比。
- keepalive：32 个保持连接的客户端，每个请求一个作业。
- insert_ceiling：最小的 FastAPI 应用（uvicorn，与 conductor serve 相同的进程数），每个请求
  往同一个 PostgreSQL 的一张表里 INSERT 一行，用同样的两种客户端循环驱动。

客户端用标准库 http.client（Slurm 替身命令也用它），客户端与服务端在同一台 2 核机器上。
只打印数字，不做断言。
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import ray

from bench.session import CPUS, Session, job, pct
from harness.serve import free_port
from harness.waiting import wait_for

FRESH_THREADS = 8
KEEPALIVE_CLIENTS = 32
# 天花板应用用的 API 进程数：与 conductor serve 相同（api/process.py 只起一个 uvicorn 进程）
CEILING_WORKERS = 1


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> float:
    """发一个 POST，读完应答；返回耗时（毫秒）。非 2xx 抛出。"""
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status >= 300:
        raise RuntimeError(f"POST {path} → {resp.status}：{data[:200]!r}")
    return elapsed


class Driver:
    """两种客户端循环：每个请求新建连接 / 保持连接；返回接受速率与延迟分位。"""

    def __init__(self, url: str, path: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = path
        self.headers = {**headers, "Content-Type": "application/json"}

    def _conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def fresh(self, bodies: list[bytes], threads: int = FRESH_THREADS) -> dict:
        def one(body: bytes) -> float:
            conn = self._conn()
            try:
                # 与 curl 一样：请求完就关闭连接（Connection: close）
                return _post(conn, self.path, body, {**self.headers, "Connection": "close"})
            finally:
                conn.close()

        return self._run(bodies, threads, lambda chunk: [one(b) for b in chunk])

    def keepalive(self, bodies: list[bytes], clients: int = KEEPALIVE_CLIENTS) -> dict:
        def lane(chunk: list[bytes]) -> list[float]:
            conn = self._conn()
            try:
                return [_post(conn, self.path, b, self.headers) for b in chunk]
            finally:
                conn.close()

        return self._run(bodies, clients, lane)

    @staticmethod
    def _run(bodies: list[bytes], width: int, lane: Callable[[list[bytes]], list[float]]) -> dict:
        chunks = [bodies[i::width] for i in range(width)]
        started = time.perf_counter()
        with ThreadPoolExecutor(width) as pool:
            times = [t for part in pool.map(lane, chunks) for t in part]
        elapsed = time.perf_counter() - started
        return {
            "requests": len(bodies),
            "clients": width,
            "accepted_per_second": round(len(bodies) / elapsed, 1),
            "latency_ms": {q: round(pct(times, int(q[1:])), 1) for q in ("p50", "p90", "p99")},
        }


class DashboardPoller:
    """另一个线程每秒 GET /dashboard 一次（像开着网页），记录每次耗时。"""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.times: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="dashboard-poll", daemon=True)

    def _loop(self) -> None:
        conn = self.driver._conn()
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/dashboard", headers=self.driver.headers)
                conn.getresponse().read()
                self.times.append((time.perf_counter() - started) * 1000)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self.driver._conn()
            self.stop.wait(1.0)
        conn.close()

    def __enter__(self) -> DashboardPoller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        if not self.times:
            return {"polls": 0}
        return {"polls": len(self.times), "p50_ms": round(pct(self.times, 50), 1)}


def _bodies(session: Session, n: int, outdir: Path) -> list[bytes]:
    """n 个 `true` 作业，标准输出与标准错误写到 outdir 里的真实文件（%j.out / %j.err）。"""
    outdir.mkdir(parents=True, exist_ok=True)
    payload = job(
        "true",
        str(outdir),
        standard_output="%j.out",
        standard_error="%j.err",
        name="realistic",
    )
    return [json.dumps(payload).encode()] * n


def realistic(session: Any, n: int) -> dict:
    """fresh（含端到端与对照的裸 Ray 任务）与 keepalive，都在 conductor serve 上。"""
    driver = Driver(session.url, "/jobs/submit", session.serve.headers)
    results: dict[str, Any] = {}
    # 裸 Ray 任务：同一次运行、紧挨着端到端测量
    ceiling = session.ray_ceiling(n)
    outdir = Path(session.wd) / f"realistic-{time.time_ns()}"
    first = _last_id(session)
    started = time.time()
    with DashboardPoller(driver) as poller:
        fresh = driver.fresh(_bodies(session, n, outdir))
        ids = [r[0] for r in session.sql("SELECT id FROM jobs WHERE id > :f", f=first)]
        session.wait_terminal(ids)
    last_end = session.sql(
        "SELECT EXTRACT(EPOCH FROM MAX(end_time)) FROM jobs WHERE id = ANY(:ids)", ids=ids
    )[0][0]
    states = dict(
        session.sql("SELECT state, COUNT(*) FROM jobs WHERE id = ANY(:ids) GROUP BY state", ids=ids)
    )
    e2e = n / (float(last_end) - started)
    written = sum(1 for _ in outdir.glob("*.out"))
    results["fresh"] = {
        **fresh,
        "end_to_end_per_second": round(e2e, 1),
        "ray_ceiling_per_second": ceiling["per_second"],
        "end_to_end_vs_ray_ceiling": round(e2e / ceiling["per_second"], 3),
        "states": states,
        "output_files": written,
        "dashboard": poller.summary(),
    }
    # keepalive：只量接受；先占满集群，作业保持 PENDING，不与执行争 CPU
    blocker = session.block_cluster()
    try:
        results["keepalive"] = driver.keepalive(_bodies(session, 2 * n, outdir), KEEPALIVE_CLIENTS)
        session.drain_pending()
        # 同样占满集群时的 fresh 接受速率：与天花板一项条件相同（不含作业执行）
        results["fresh_blocked"] = driver.fresh(_bodies(session, n, outdir))
        session.drain_pending()
    finally:
        session.cancel(blocker)
    return results


def _last_id(session: Session) -> int:
    return int(session.sql("SELECT COALESCE(MAX(id), 0) FROM jobs")[0][0])


CEILING_APP = """
import os
from fastapi import FastAPI, Request
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["CEILING_DB"], pool_size=10, max_overflow=20, pool_pre_ping=True)
with engine.begin() as c:
    c.execute(text("CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, body jsonb)"))
app = FastAPI()

@app.post("/submit", status_code=201)
def submit(body: dict) -> dict:
    with engine.begin() as c:
        new = c.execute(text("INSERT INTO bench_ceiling (body) VALUES (CAST(:b AS jsonb)) RETURNING id"),
                        {"b": __import__("json").dumps(body)}).scalar_one()
    return {"job_id": str(new)}
"""


def insert_ceiling(session: Any, n: int) -> dict:
    """最小 FastAPI 应用 + 同一 PostgreSQL，每个请求一条 INSERT：两种客户端循环。"""
    port = free_port()
    app_dir = session.workdir / "ceiling"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "ceiling_app.py").write_text(CEILING_APP)
    env = {
        **os.environ,
        "CEILING_DB": f"postgresql+psycopg2://postgres:@/postgres?host={session.workdir / 'data' / 'pg'}",
        "PYTHONPATH": str(app_dir),
    }
    log = (app_dir / "uvicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ceiling_app:app", "--port", str(port)]
        + ["--workers", str(CEILING_WORKERS), "--log-level", "info"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        driver = Driver(f"http://127.0.0.1:{port}", "/submit", {})
        wait_for(lambda: _up(driver), 60, 0.2, what="天花板应用就绪")
        bodies = _bodies(session, n, Path(session.wd) / "ceiling")
        driver.keepalive(bodies[:100], 8)  # 预热
        return {
            "fresh": driver.fresh(bodies),
            "keepalive": driver.keepalive(bodies * 2, KEEPALIVE_CLIENTS),
        }
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _up(driver: Driver) -> bool:
    try:
        conn = driver._conn()
        conn.request("GET", "/docs")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def memory(session: Any) -> dict:
    """执行器的 Ray worker 在作业运行 sleep 时的 USS，与一个裸 Ray 任务 worker 运行同样子进程时对比。"""

    @ray.remote(num_cpus=1)
    def bare(seconds: int) -> int:
        return subprocess.run(["sleep", str(seconds)]).returncode

    ref = bare.remote(20)
    bare_uss = wait_for(lambda: _uss_of_parent("sleep 20"), 60, 0.2, what="裸任务的 sleep")
    ray.cancel(ref, force=True)
    job_id = session.submit(job("sleep 21", session.wd, time_limit="2"))
    exec_uss = wait_for(lambda: _uss_of_parent("sleep 21"), 60, 0.2, what="作业的 sleep")
    session.cancel(job_id)
    per_mb = exec_uss / 2**20
    return {
        "bare_task_worker_uss_mb": round(bare_uss / 2**20, 1),
        "executor_worker_uss_mb": round(per_mb, 1),
        "node_128_cores_1cpu_jobs_gb": round(128 * per_mb / 1024, 1),
        "node_128_cores_bare_gb": round(128 * bare_uss / 2**30, 1),
    }


def _uss_of_parent(cmdline: str) -> int | None:
    """找到命令行为 cmdline 的进程，返回其祖先里第一个 Ray worker（ray::）的 USS。"""
    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(proc.info["cmdline"] or []) != cmdline:
            continue
        for parent in proc.parents():
            try:
                if parent.name().startswith("ray::") or "ray::" in " ".join(parent.cmdline()):
                    return int(parent.memory_full_info().uss)
            except psutil.Error:
                continue
    return None


__all__ = ["CPUS", "insert_ceiling", "memory", "realistic"]
