"""PostgreSQL 停机再恢复：API 答 503（不是 500），执行器与调度器退避重试并补记结局。"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from conductor.db import normalize_url
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from harness.postgres import private_postgres
from harness.waiting import wait_for
from tests.cluster.conftest import Service, job_payload


@pytest.fixture(scope="module")
def own_pg() -> Iterator[EmbeddedPostgres]:
    """本模块独占的 PostgreSQL：测试会把它停掉，不能影响其他模块。"""
    with private_postgres("conductor-outage-pg-") as server:
        yield server


@pytest.fixture(scope="module")
def database_url(own_pg: EmbeddedPostgres) -> str:
    admin = create_engine(normalize_url(own_pg.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('CREATE DATABASE "outage"'))
    admin.dispose()
    url = normalize_url(own_pg.url).replace("/postgres?", "/outage?")
    upgrade(url)
    return url


def test_postgres_down_then_up(service: Service, own_pg: EmbeddedPostgres, tmp_path: Path) -> None:
    wd = str(tmp_path)
    jobs = [
        service.submit(
            "touch started-$SLURM_JOB_ID; sleep 2; echo done",
            current_working_directory=wd,
            standard_output=f"{i}.out",
        )
        for i in range(3)
    ]
    for job_id in jobs:
        wait_for((tmp_path / f"started-{job_id}").exists, 30)

    own_pg.stop()
    try:
        resp = service.client.get(f"/jobs/query/{jobs[0]}")
        assert resp.status_code == 503
        assert "PostgreSQL" in resp.json()["detail"]
        resp = service.client.post(
            "/jobs/submit", json=job_payload("echo hi", current_working_directory=wd)
        )
        assert resp.status_code == 503
        health = service.client.get("/health")
        assert health.status_code == 503
        assert health.json()["components"]["postgres"]["status"] == "down"
        assert "postgres" in health.json()["detail"]
        assert service.client.get("/dashboard").status_code == 503
        # 作业在数据库停机期间结束：结局先留在节点代理手里
        for job_id in jobs:
            wait_for(
                lambda j=job_id: (tmp_path / f"{jobs.index(j)}.out").read_text() == "done\n", 30
            )
    finally:
        own_pg.start()

    for job_id in jobs:
        body = service.wait_state(job_id, "COMPLETED", timeout=60)
        assert body["detail"]["exit_code"] == "0:0"
    wait_for(lambda: service.held_cpus() == 0, 30, what="资源全部归还")
    after = service.submit("echo after", current_working_directory=wd, standard_output="after.out")
    assert service.wait_state(after, "COMPLETED")["job_log"]["stdout"] == "after\n"
    assert service.client.get("/health").status_code == 200
