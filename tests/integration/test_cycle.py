"""一轮调度（conductor/cycle.py）：真实 PostgreSQL、假时钟、没有 Ray。

节点以 ReadyNode 直接给出；认领之后的派发不在这里（cluster/dispatch.py）。
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.cycle import ReadyNode, SchedulingCycle
from conductor.db import make_engine
from conductor.pacing import DEEP_INTERVAL, DEEP_RETRY, DEPENDENCY_INTERVAL, QUICK_SLACK
from conductor.policy import NodeView
from conductor.settings import Settings
from harness.rows import insert_job

ROOT = Path(__file__).resolve().parents[2]
EPOCH = 7
NODE = ReadyNode(NodeView("node-a", "a", 2, 4 << 30), agent_id="agent-a", host="10.0.0.1")


class FakeClock:
    """单调时钟的替身：只在测试拨动时前进。"""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def empty_queue(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))


def make_cycle(database_url: str, engine: Engine, clock: FakeClock) -> SchedulingCycle:
    return SchedulingCycle(engine, Settings(database_url=database_url), EPOCH, clock=clock)


def row(engine: Engine, job_id: int) -> dict:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT state, state_reason, node_id, agent_id, node_host, epoch, token, "
                "xmin::text AS version FROM jobs WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
    return dict(found._mapping)


def test_a_pending_job_that_fits_is_claimed(database_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        job = insert_job(conn, cpus="2")
    result = make_cycle(database_url, engine, FakeClock()).run([NODE])
    assert [r["id"] for r in result.claimed] == [job]
    assert (result.read, result.placed) == (1, 1)
    assert result.again  # 读到的都放下了：可能还有空闲，马上再来一轮
    claimed = row(engine, job)
    assert claimed["state"] == "RUNNING"
    assert (claimed["node_id"], claimed["agent_id"], claimed["node_host"], claimed["epoch"]) == (
        "node-a",
        "agent-a",
        "10.0.0.1",
        EPOCH,
    )
    assert claimed["token"] == result.claimed[0]["token"]


def test_a_job_that_does_not_fit_gets_resources_once(database_url: str, engine: Engine) -> None:
    """放不下（要 4 个 CPU，节点只有 2 个）：写下 Resources；原因没变的下一轮不再写这一行。"""
    with engine.begin() as conn:
        job = insert_job(conn, cpus="4")
    clock = FakeClock()
    cycle = make_cycle(database_url, engine, clock)
    first = cycle.run([NODE])
    assert (first.claimed, first.read, first.placed) == ([], 1, 0)
    written = row(engine, job)
    assert (written["state"], written["state_reason"]) == ("PENDING", "Resources")
    for _ in range(3):
        clock.advance(DEEP_INTERVAL)  # 深轮也读到它
        assert cycle.run([NODE]).read == 1
    # 行的版本（xmin）不变：没有被重写
    assert row(engine, job)["version"] == written["version"]


def test_pacing_picks_quick_or_deep_pass_as_the_clock_advances(
    database_url: str, engine: Engine
) -> None:
    # 放不下的作业比快速轮的窗口（空闲 2 CPU + QUICK_SLACK）多：快速轮读满窗口、仍有空闲 CPU
    with engine.begin() as conn:
        for _ in range(QUICK_SLACK + 5):
            insert_job(conn, cpus="4")
    clock = FakeClock()
    cycle = make_cycle(database_url, engine, clock)

    first = cycle.run([NODE])  # 从未深轮过：深轮，读到全部
    assert (first.deep, first.read, first.window_full) == (True, QUICK_SLACK + 5, False)

    clock.advance(DEEP_RETRY / 2)
    quick = cycle.run([NODE])  # 刚深轮过：快速轮，读满窗口
    assert (quick.deep, quick.read, quick.window_full) == (False, 2 + QUICK_SLACK, True)
    # 依赖刚判定过，稍后补一轮；窗口读满，DEEP_RETRY 后补一次深轮：取较早的
    assert quick.wake_at == pytest.approx(1000.0 + DEEP_RETRY)
    assert quick.wake_at < 1000.0 + DEPENDENCY_INTERVAL

    clock.t = quick.wake_at + 1e-6  # 定时器到点（总在约定时刻之后）：补的深轮
    retry = cycle.run([NODE])
    assert (retry.deep, retry.read) == (True, QUICK_SLACK + 5)

    clock.advance(DEEP_RETRY)  # 没有要补的：快速轮
    assert not cycle.run([NODE]).deep
    clock.advance(DEEP_INTERVAL)  # 到了深轮的周期
    assert cycle.run([NODE]).deep


def test_the_cycle_runs_without_ray(database_url: str, engine: Engine) -> None:
    """另起一个进程，先让 import ray 失败，再跑一轮：认领照常，进程里没有任何 ray 模块。"""
    with engine.begin() as conn:
        job = insert_job(conn)
    script = f"""
import json, sys
sys.modules["ray"] = None  # 谁 import ray 都会 ImportError
from conductor.cycle import ReadyNode, SchedulingCycle
from conductor.db import make_engine
from conductor.policy import NodeView
from conductor.settings import Settings

url = sys.argv[1]
node = ReadyNode(NodeView("node-a", "a", 2, 4 << 30), agent_id="agent-a", host="10.0.0.1")
cycle = SchedulingCycle(make_engine(url), Settings(database_url=url), {EPOCH}, clock=lambda: 1000.0)
result = cycle.run([node])
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print(json.dumps({{"claimed": [r["id"] for r in result.claimed], "ray": loaded}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, database_url],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"claimed": [job], "ray": ["ray"]}  # 只有那个占位的 None
    assert row(engine, job)["state"] == "RUNNING"
