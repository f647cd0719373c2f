"""查询的代价与作业表的大小无关（真实 PostgreSQL 与 Ray）。

/metrics 不需要令牌（便于 Prometheus 抓取）：每次抓取若对 jobs 全表聚合，任何人都能用它让数据库
一遍遍扫描全部历史作业。账户令牌的列表与总览只看自己的作业，也不该为此扫描别人的全部历史。
这里记下一次请求执行的每条语句，用 EXPLAIN ANALYZE 数出它们从 jobs 读了多少行。
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from prometheus_client.parser import text_string_to_metric_families
from ray.cluster_utils import Cluster
from sqlalchemy import event, text

from api.app import create_app
from api.runtime import Runtime
from cluster.client import ClusterClient
from conductor.auth import create_token
from tests.cluster.conftest import Service, make_settings

HISTORY = 20_000


@pytest.fixture(scope="module")
def svc(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    service = Service(make_settings(database_url))
    yield service
    service.close()


def _add_finished(service: Service, n: int, account: str = "history") -> None:
    """直接在库里写入 n 个已结束的作业（在节点上运行过、资源已归还），再更新统计信息。"""
    with service.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (name, account, partition, script, environment, work_dir, "
                "stdout_path, stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, "
                "exclusive, state, submit_time, eligible_time, start_time, end_time, node_id, "
                "released_at, data_source) "
                "SELECT 'old', :account, 'default', 'true', '{}', '/tmp', '/dev/null', "
                "'/dev/null', 1, 1, 1, 10485760, false, 'COMPLETED', now() - interval '1 hour', "
                "now() - interval '1 hour', now() - interval '1 hour' + interval '2 seconds', "
                "now(), 'gone-node', now(), 'API' FROM generate_series(1, :n)"
            ),
            {"n": n, "account": account},
        )
    with service.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE jobs"))


def _jobs_rows(node: dict[str, Any]) -> int:
    """计划树里从 jobs 表读出的行（返回的加上被过滤掉的，乘以循环次数）。"""
    rows = 0
    if node.get("Relation Name") == "jobs":
        read = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        rows += read * node.get("Actual Loops", 1)
    return rows + sum(_jobs_rows(child) for child in node.get("Plans", []))


def _rows_read(service: Service, request: Callable[[], Response]) -> tuple[Response, int]:
    """发一个请求；返回响应，以及这次请求的语句从 jobs 读出的总行数。"""
    statements: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append((statement, parameters))

    event.listen(service.engine, "before_cursor_execute", record)
    try:
        resp = request()
    finally:
        event.remove(service.engine, "before_cursor_execute", record)
    assert resp.status_code == 200, resp.text
    read = 0
    with service.engine.connect() as conn:
        trans = conn.begin()
        try:
            for statement, parameters in statements:
                if (
                    not statement.lstrip()
                    .upper()
                    .startswith(("SELECT", "WITH", "DELETE", "INSERT"))
                ):
                    continue
                plan = conn.exec_driver_sql(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
                ).scalar_one()
                read += _jobs_rows(plan[0]["Plan"])
        finally:
            trans.rollback()  # EXPLAIN ANALYZE 真的执行了语句：不留下任何改动
    return resp, read


def _scrape(service: Service) -> tuple[dict[tuple[str, tuple], float], int]:
    """抓取一次 /metrics；返回指标与从 jobs 读出的行数。"""
    resp, read = _rows_read(service, lambda: service.client.get("/metrics"))
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    return metrics, read


def test_metrics_cost_does_not_grow_with_history(svc: Service) -> None:
    _add_finished(svc, HISTORY)
    first, read_first = _scrape(svc)
    assert first[("conductor_jobs", (("state", "COMPLETED"),))] == HISTORY
    assert first[("conductor_submit_to_start_seconds_count", ())] == HISTORY
    assert first[("conductor_submit_to_start_seconds_bucket", (("le", "1"),))] == 0
    assert first[("conductor_submit_to_start_seconds_bucket", (("le", "2.5"),))] == HISTORY

    _add_finished(svc, HISTORY)
    second, read_second = _scrape(svc)
    assert second[("conductor_jobs", (("state", "COMPLETED"),))] == 2 * HISTORY
    assert second[("conductor_submit_to_start_seconds_sum", ())] == pytest.approx(4 * HISTORY)
    # 没有作业占用资源：一次抓取从 jobs 读到的行数与历史作业的多少无关（原来每次读全表两遍）
    assert read_second == read_first
    assert read_second < 100, read_second


def test_account_scoped_queries_read_only_that_accounts_jobs(svc: Service) -> None:
    """账户令牌的 /jobs 与 /dashboard：从 jobs 读的行数只与该账户的作业有关（按 account 的索引），
    不随别的账户的历史作业增长。"""
    _add_finished(svc, HISTORY)  # 别的账户的大量历史
    _add_finished(svc, 30, account="small")
    settings = svc.settings.model_copy(update={"auth": "on"})
    _, token = create_token(svc.engine, account="small", admin=False)
    client = TestClient(
        create_app(Runtime(settings, svc.engine, ClusterClient(settings))),
        headers={"Authorization": f"Bearer {token}"},
    )
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/jobs", {}),
        ("/jobs", {"state": ["PENDING", "RUNNING"]}),
        ("/jobs", {"state": ["COMPLETED"], "limit": 10}),
        ("/dashboard", {}),
    ]
    for path, params in requests:
        resp, read = _rows_read(svc, lambda p=path, q=params: client.get(p, params=q))
        if path == "/dashboard":
            assert resp.json()["job_stats"]["completed"] == 30
        else:
            assert all(j["account"] == "small" for j in resp.json()["jobs"])
        assert read <= 200, (path, params, read)
