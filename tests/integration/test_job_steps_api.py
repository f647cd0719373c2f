"""查询与列表的多节点字段（node_list、allocated_*、steps）：真实 PostgreSQL 上直接调用路由函数。

集群客户端换成不连 Ray 的替身（只回答日志与节点列表）：这里要看的是数据库里的分配与作业步如何显示。"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.routes import jobs as routes
from api.runtime import Runtime
from cluster.client import ClusterClient
from conductor.auth import Principal
from conductor.db import make_engine, session_scope
from conductor.models import Job
from conductor.policy import Placement
from conductor.settings import Settings
from conductor.states import JobState
from conductor.store import steps, transitions
from conductor.store.transitions import Outcome
from conductor.usage import Usage

ADMIN = Principal(account=None, admin=True)


class NoRay:
    """集群客户端的替身：没有节点，日志为空。"""

    def nodes(self) -> list[Any]:
        return []

    def read_logs(self, *args: Any, **kwargs: Any) -> dict[str, str | None]:
        return {"stdout": "", "stderr": ""}


@pytest.fixture(scope="module")
def rt(database_url: str) -> Iterator[Runtime]:
    engine = make_engine(database_url)
    yield Runtime(Settings(database_url=database_url), engine, cast(ClusterClient, NoRay()))
    engine.dispose()


@pytest.fixture(autouse=True)
def empty(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))


def add_job(engine: Engine, **fields: Any) -> int:
    job = Job(
        name="mn",
        account="acct",
        partition="default",
        script="true",
        work_dir="/tmp",
        stdout_path="/tmp/o",
        stderr_path="/tmp/e",
        memory_bytes=2**30,
        **fields,
    )
    with session_scope(engine) as s:
        s.add(job)
        s.flush()
        assert job.id is not None
        return job.id


def test_a_finished_gang_shows_its_nodes_cpus_and_steps(rt: Runtime) -> None:
    job = add_job(rt.engine, nodes=2, cpus=3, ntasks=4, ntasks_per_node=2)
    placement = Placement(job, "id1", "node01", ("id1", "id2"), ("node01", "node02"))
    with session_scope(rt.engine) as s:
        transitions.claim(s, [placement], ["tok"], ["agent"], 1)
        steps.start_step(s, job, "tok", 0, "hostname", 4, "node[01-02]")
        steps.finish_step(s, job, "tok", 0, "COMPLETED", "0:0")
        steps.start_step(s, job, "tok", 1, "sleep", 2, "node02")
        transitions.finish(s, [Outcome(job, JobState.COMPLETED, "0:0", None, "tok")])

    body = routes.query(str(job), ADMIN, rt)
    d = body.detail
    assert (d.node_list, d.allocated_nodes, d.allocated_cpus) == ("node[01-02]", 2, 6)
    assert d.tres_alloc_str == "cpu=6,mem=2G,node=2"
    assert [(s.step_id, s.state, s.exit_code, s.node_list) for s in body.steps] == [
        (f"{job}.batch", "COMPLETED", "0:0", "node01"),
        (f"{job}.0", "COMPLETED", "0:0", "node[01-02]"),
        (f"{job}.1", "CANCELLED", None, "node02"),  # 批处理脚本结束时还在运行
    ]

    (item,) = routes.list_jobs(ADMIN, rt).jobs
    assert (item.node_list, item.nodes, item.allocated_cpus) == ("node[01-02]", 2, 6)
    assert [s.step_id for s in item.steps] == [f"{job}.batch", f"{job}.0", f"{job}.1"]


def test_a_pending_gang_has_no_steps_and_no_nodes(rt: Runtime) -> None:
    job = add_job(rt.engine, nodes=3, cpus=2)
    body = routes.query(str(job), ADMIN, rt)
    assert (body.detail.node_list, body.detail.allocated_nodes, body.steps) == ("", 0, [])
    assert body.detail.allocated_cpus == 6  # 请求的：每节点 2 个 × 3 个节点
    (item,) = routes.list_jobs(ADMIN, rt).jobs
    assert (item.nodes, item.steps) == (3, [])


def test_the_account_limit_reason_counts_every_node(database_url: str, rt: Runtime) -> None:
    """每节点 3 个 CPU × 2 个节点 = 6，超过账户上限 4：原因同调度器（按总量计）。"""
    from conductor.account_limits import AccountLimit

    limited = Runtime(
        Settings(database_url=database_url, account_limits={"acct": AccountLimit(max_cpus=4)}),
        rt.engine,
        rt.cluster,
    )
    job = add_job(rt.engine, nodes=2, cpus=3)
    single = add_job(rt.engine, cpus=3)
    assert routes.query(str(job), ADMIN, limited).state_reason == "AssocGrpCpuLimit"
    assert routes.query(str(single), ADMIN, limited).state_reason != "AssocGrpCpuLimit"


def test_usage_is_stored_with_the_outcome_and_shown_in_steps(rt: Runtime) -> None:
    """执行器测得的用量：批处理步的随结局写进作业行（已取消的作业也写），作业步的随作业步的结束写进
    job_steps；查询与列表的 steps 给出原始数与 sacct 写法，列表另给作业的 TotalCPU。"""
    job = add_job(rt.engine, cpus=1)
    cancelled = add_job(rt.engine, cpus=1)
    with session_scope(rt.engine) as s:
        transitions.claim(
            s,
            [Placement(job, "id1", "node01"), Placement(cancelled, "id1", "node01")],
            ["tok", "tok2"],
            ["agent", "agent"],
            1,
        )
        steps.start_step(s, job, "tok", 0, "python3", 2, "node01")
        used = {
            "max_rss_bytes": 200 << 20,
            "ave_rss_bytes": 150 << 20,
            "user_cpu_seconds": 2.0,
            "system_cpu_seconds": 0.5,
        }
        assert steps.finish_step(s, job, "tok", 0, "OUT_OF_MEMORY", "0:125", used)
        with pytest.raises(ValueError, match="max_rss_bytes"):
            steps.finish_step(s, job, "tok", 0, "COMPLETED", "0:0", {"max_rss_bytes": -1})
        transitions.cancel(s, cancelled)
        batch = Usage(100 << 20, 1.0, 0.25, oom_killed=True)
        transitions.finish(
            s,
            [
                Outcome(job, JobState.OUT_OF_MEMORY, "0:125", "超出内存", "tok", batch),
                Outcome(cancelled, JobState.FAILED, "0:15", None, "tok2", Usage(5 << 20, 0.1, 0.0)),
            ],
        )
    with rt.engine.connect() as conn:
        sql = "SELECT id, state, max_rss_bytes, user_cpu_seconds, system_cpu_seconds FROM jobs"
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(text(sql))}
    assert rows[job] == ("OUT_OF_MEMORY", 100 << 20, 1.0, 0.25)
    assert rows[cancelled] == ("CANCELLED", 5 << 20, 0.1, 0.0)

    body = routes.query(str(job), ADMIN, rt)
    assert body.state == "OUT_OF_MEMORY" and body.detail.exit_code == "0:125"
    b, s0 = body.steps
    assert (b.max_rss, b.max_rss_bytes, b.total_cpu_seconds) == ("100M", 100 << 20, 1.25)
    assert (s0.state, s0.exit_code, s0.max_rss, s0.ave_rss) == (
        "OUT_OF_MEMORY",
        "0:125",
        "200M",
        "150M",
    )
    assert (s0.user_cpu_seconds, s0.system_cpu_seconds, s0.total_cpu_seconds) == (2.0, 0.5, 2.5)
    items = {i.job_id: i for i in routes.list_jobs(ADMIN, rt).jobs}
    assert items[job].total_cpu_seconds == 3.75
    assert items[job].steps[1].max_rss == "200M"
