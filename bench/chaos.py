"""混沌基准：一边运行 2,000 个短作业，一边在随机时刻杀掉服务的各个部分，最后核对账目。

    .venv/bin/python -m bench.chaos [--jobs 2000] [--seed N] [--cpus 4]

真实的 `conductor serve`（本地 Ray，空 HOME）加一个本基准自己的 PostgreSQL（可以停掉再启动）。
每个作业把自己的作业号追加到同一个账本文件。运行期间在随机时刻：
调度器被 SIGKILL 5 次、节点代理被 SIGKILL 1 次、API 进程被 SIGKILL 1 次、PostgreSQL 停 5 秒。
之后核对：账本里没有重复的作业号；每个 COMPLETED 作业的作业号恰好出现一次；其余作业都已结束
且写明原因；没有 RUNNING 的作业；没有残留的作业进程；Ray 与数据库的空闲 CPU 都等于总数。
只打印结果，不做断言（退出码：全部核对通过为 0，否则为 1）。
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import ray
from sqlalchemy import create_engine, text

from cluster.ray_auth import PATH_VAR, use_token_if_available
from conductor.db import normalize_url
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from conductor.proctree import TOKEN_VAR
from harness.postgres import private_postgres
from harness.serve import ServeProcess
from harness.waiting import wait_for

BATCH = 50
PG_DOWN_SECONDS = 5.0


class Chaos:
    """一次混沌运行：服务、数据库、账本与事件记录。"""

    def __init__(self, workdir: Path, pg: EmbeddedPostgres, cpus: int) -> None:
        self.workdir = workdir
        self.pg = pg
        self.url = normalize_url(pg.url)
        upgrade(self.url)
        self.db = create_engine(self.url, pool_size=2, pool_pre_ping=True)
        self.ledger = workdir / "ledger"
        self.events: list[str] = []
        self.serve = ServeProcess(
            workdir, workdir / "data", "--num-cpus", str(cpus), "--database-url", self.url
        )
        self.serve.wait_healthy()
        os.environ[PATH_VAR] = str(self.serve.ray_token_path)
        use_token_if_available()
        ray.init(address=f"127.0.0.1:{self.serve.ray_port}", log_to_driver=False)
        self.started = time.monotonic()  # 事件时刻从服务就绪算起

    started = 0.0

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:6.1f}s {what}"
        self.events.append(line)
        print(line, flush=True)

    # ---- 提交 ----

    def payload(self, i: int) -> dict:
        """一个提交请求：短暂运行，最后把作业号追加到账本（O_APPEND 的一行写入是原子的）。"""
        script = f"sleep 0.{i % 4}\necho $SLURM_JOB_ID >> {self.ledger}\n"
        job = {
            "account": "chaos",
            "current_working_directory": str(self.workdir / "jobs"),
            "standard_output": "/dev/null",
            "standard_error": "/dev/null",
            "name": f"chaos-{i}",
            "time_limit": "5",
            "partition": "default",
            "memory_per_node": "10M",
        }
        return {"job": job, "script": script}

    def submit_all(self, n: int, spread: float) -> int:
        """分批提交，均匀摊在 spread 秒里；API 正在重启时重试同一批（连接未建立时请求没有发出）。"""
        lost = 0
        batches = [list(range(i, min(n, i + BATCH))) for i in range(0, n, BATCH)]
        for k, batch in enumerate(batches):
            body = {"jobs": [self.payload(i) for i in batch]}
            while True:
                try:
                    resp = httpx.post(
                        self.serve.url + "/jobs/submit/batch",
                        json=body,
                        headers=self.serve.headers,  # serve 为本机用户写入的令牌
                        timeout=30,
                    )
                except httpx.ConnectError:
                    time.sleep(0.3)
                    continue
                except httpx.HTTPError:
                    lost += 1  # 请求已发出、应答丢失：这批是否保存不得而知，以数据库为准
                    break
                if resp.status_code == 201:
                    break
                time.sleep(0.3)  # 503：数据库或调度器暂不可用，稍后重试
            time.sleep(max(0.0, spread / len(batches)))
            if k % 10 == 0:
                self.note(f"已提交 {min(n, (k + 1) * BATCH)} 个作业")
        return lost

    # ---- 故障 ----

    def kill_child(self, needle: str, label: str) -> None:
        """SIGKILL 一个后代进程；它正在重启（例如上一次刚杀掉的调度器）时等它回来再杀，不跳过。"""

        def found() -> int | None:
            try:
                return self.serve.child_pid(needle)
            except AssertionError:
                return None

        pid = wait_for(found, 60, interval=0.2, what=f"{label}的进程出现")
        os.kill(pid, signal.SIGKILL)
        self.note(f"SIGKILL {label}（pid {pid}）")

    def stop_postgres(self) -> None:
        self.note("停止 PostgreSQL")
        self.pg.stop()
        time.sleep(PG_DOWN_SECONDS)
        self.pg.start()
        self.note(f"PostgreSQL 停了 {PG_DOWN_SECONDS:.0f} 秒后重新启动")

    def faults(
        self, window: float, rng: random.Random
    ) -> list[tuple[float, str, Callable[[], None]]]:
        plan: list[tuple[float, str, Callable[[], None]]] = []
        for _ in range(5):
            plan.append(
                (
                    rng.uniform(2, window),
                    "调度器",
                    lambda: self.kill_child("ray::Scheduler", "调度器"),
                )
            )
        plan.append(
            (
                rng.uniform(2, window),
                "节点代理",
                lambda: self.kill_child("ray::NodeAgent", "节点代理"),
            )
        )
        plan.append(
            (rng.uniform(2, window), "API", lambda: self.kill_child("api.process", "API 进程"))
        )
        plan.append((rng.uniform(2, window), "PostgreSQL", self.stop_postgres))
        return sorted(plan, key=lambda p: p[0])

    def run_faults(self, plan: list[tuple[float, str, Callable[[], None]]]) -> None:
        base = time.monotonic()
        for at, _, action in plan:
            time.sleep(max(0.0, base + at - time.monotonic()))
            action()

    # ---- 核对 ----

    def jobs(self) -> list[tuple[int, str, str | None, str | None]]:
        with self.db.connect() as conn:
            return [
                (r[0], r[1], r[2], r[3])
                for r in conn.execute(
                    text("SELECT id, state, error_msg, token FROM jobs ORDER BY id")
                )
            ]

    def unfinished(self) -> int:
        try:
            with self.db.connect() as conn:
                return int(
                    conn.execute(
                        text(
                            "SELECT count(*) FROM jobs WHERE state IN ('PENDING', 'RUNNING') "
                            "OR (node_id IS NOT NULL AND released_at IS NULL)"
                        )
                    ).scalar_one()
                )
        except Exception:  # noqa: BLE001 - 数据库刚恢复时再问一次
            return -1

    def leftover_job_processes(self) -> list[int]:
        """环境里带作业标记的存活进程（作业的任何进程都不该活过作业）。"""
        marker = f"{TOKEN_VAR}=".encode()
        found = []
        for p in psutil.process_iter():
            try:
                environ = Path(f"/proc/{p.pid}/environ").read_bytes()
                if marker in environ and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p.pid)
            except (OSError, psutil.Error):
                continue
        return found

    def verify(self) -> dict[str, object]:
        jobs = self.jobs()
        ids = [int(x) for x in self.ledger.read_text().split()] if self.ledger.exists() else []
        counts = collections.Counter(ids)
        states = collections.Counter(s for _, s, _, _ in jobs)
        completed = {j for j, s, _, _ in jobs if s == "COMPLETED"}
        no_reason = [
            j for j, s, msg, _ in jobs if s not in ("COMPLETED",) and not (msg or "").strip()
        ]
        unfinished = [j for j, s, _, _ in jobs if s in ("PENDING", "RUNNING")]
        total = ray.cluster_resources().get("CPU", 0)
        wait_for(lambda: ray.available_resources().get("CPU", 0) == total, 30, interval=0.5)
        with self.db.connect() as conn:
            held = conn.execute(
                text(
                    "SELECT COALESCE(SUM(cpus), 0) FROM jobs WHERE node_id IS NOT NULL AND released_at IS NULL"
                )
            ).scalar_one()
        return {
            "作业总数": len(jobs),
            "各状态": dict(states),
            "账本中重复的作业号": sorted(j for j, c in counts.items() if c > 1),
            "COMPLETED 但不在账本里（或不止一次）": sorted(j for j in completed if counts[j] != 1),
            "未结束的作业": unfinished,
            "没有原因的非 COMPLETED 作业": no_reason,
            "残留的作业进程": self.leftover_job_processes(),
            "数据库里仍占用的 CPU": int(held),
            "Ray 空闲 / 总 CPU": f"{ray.available_resources().get('CPU', 0):.0f} / {total:.0f}",
        }

    def close(self) -> None:
        ray.shutdown()
        self.serve.stop()
        self.serve.cleanup()
        self.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--spread", type=float, default=40.0, help="提交摊开的秒数（故障落在其中）")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"种子 {seed}：{args.jobs} 个作业，{args.cpus} 个 CPU", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="conductor-chaos-"))
    (workdir / "jobs").mkdir()
    with private_postgres("conductor-chaos-pg-") as pg:
        chaos = Chaos(workdir, pg, args.cpus)
        try:
            plan = chaos.faults(args.spread, rng)
            faults = threading.Thread(target=chaos.run_faults, args=(plan,), daemon=True)
            faults.start()
            lost = chaos.submit_all(args.jobs, args.spread)
            faults.join()
            chaos.note(f"提交完成（{lost} 批应答丢失），故障全部注入；等所有作业结束")
            wait_for(lambda: chaos.unfinished() == 0, 600, interval=1.0, what="所有作业结束")
            chaos.note("所有作业已结束")
            result = chaos.verify()
        finally:
            chaos.close()
    print("\n== 核对 ==")
    ok = True
    for key, value in result.items():
        bad = (
            isinstance(value, list)
            and bool(value)
            or (key == "数据库里仍占用的 CPU" and value != 0)
        )
        ok = ok and not bad
        shown = (
            value
            if not isinstance(value, list)
            else (f"{len(value)} 个 {value[:10]}" if value else "无")
        )
        print(f"{'✘' if bad else '✔'} {key}：{shown}")
    free, _, total = str(result["Ray 空闲 / 总 CPU"]).partition(" / ")
    ok = ok and free == total
    print("结论：" + ("全部核对通过" if ok else "有核对未通过"))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
