"""资源列（迁移 0006_resources）在 PostgreSQL 里的往返，以及认领时按节点展开 %N。"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

from conductor.arrays import defer_node, expand_node
from conductor.db import make_engine, session_scope
from conductor.jobspec import JobSpec
from conductor.migrate import MIGRATIONS
from conductor.models import Job
from conductor.policy import Placement
from conductor.store import transitions


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def _add(engine: Engine, **fields: object) -> int:
    base: dict[str, object] = {"stdout_path": "/tmp/o.log", "stderr_path": "/tmp/o.log"}
    job = Job(
        name="t",
        account="acct",
        partition="default",
        script="#!/bin/bash\ntrue\n",
        work_dir="/tmp",
        **{"memory_bytes": 0, **base, **fields},  # type: ignore[arg-type]
    )
    with session_scope(engine) as s:
        s.add(job)
        s.flush()
        assert job.id is not None
        return job.id


def test_resource_columns_round_trip_into_the_job_spec(engine: Engine) -> None:
    job_id = _add(
        engine,
        ntasks=2,
        cpus=8,
        gpus=2,
        gpu_type="a100",
        gres={"nvme": 1.0},
        whole_node_memory=True,
        constraints="a100&ib",
        required_nodes=["node-1"],
        excluded_nodes=["node-2", "node-3"],
        slurm_request={"gpus_per_node": "a100:2", "cpus_per_gpu": 4},
    )
    with session_scope(engine) as s:
        rows = transitions.claim(s, [Placement(job_id, "nid", "node-1")], ["tok"], ["ag"], 1)
    spec = JobSpec.from_row(rows[0], token="tok", kill_wait=1.0, node_memory=2**33)
    assert (spec.ntasks, spec.gpus, spec.gpu_type, spec.gres) == (2, 2, "a100", {"nvme": 1.0})
    assert spec.whole_node_memory and spec.node_memory == 2**33
    assert (rows[0]["required_nodes"], rows[0]["excluded_nodes"]) == (
        ["node-1"],
        ["node-2", "node-3"],
    )
    assert spec.slurm_request == {"gpus_per_node": "a100:2", "cpus_per_gpu": 4}


def test_claim_expands_the_node_name_into_the_output_paths(engine: Engine) -> None:
    pattern = defer_node("/tmp/%x-%N-%j.out", job_id=7, name="a%N", account="acct")
    job_id = _add(
        engine,
        stdout_path=expand_node(pattern, "%N"),
        stderr_path=expand_node(pattern, "%N"),
        stdout_pattern=pattern,
        stderr_pattern=pattern,
    )
    with session_scope(engine) as s:
        rows = transitions.claim(s, [Placement(job_id, "nid", "gpu-3.cluster")], ["t2"], ["a"], 1)
    assert rows[0]["stdout_path"] == "/tmp/a%N-gpu-3-7.out"
    with session_scope(engine) as s:
        stored = s.execute(
            text("SELECT stdout_path, stderr_path FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    assert tuple(stored) == ("/tmp/a%N-gpu-3-7.out", "/tmp/a%N-gpu-3-7.out")


def test_old_rows_get_defaults_from_the_migration(database_url: str, engine: Engine) -> None:
    """降级到 0005 插入旧行，再升级：旧行的任务数取 ntasks_per_node，其余取默认值。"""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.downgrade(cfg, "0005_security")
    try:
        with engine.begin() as conn:
            job_id = conn.execute(
                text(
                    "INSERT INTO jobs (name, account, partition, script, environment, work_dir, "
                    "stdout_path, stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, "
                    "exclusive, state, submit_time, data_source) VALUES ('o', 'a', 'default', 's', "
                    "'{}', '/tmp', '/tmp/o', '/tmp/o', 3, 1, 3, 1, false, 'COMPLETED', now(), 'API') "
                    "RETURNING id"
                )
            ).scalar_one()
    finally:
        command.upgrade(cfg, "head")
    with engine.connect() as conn:
        row = (
            conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one()
        )
    assert (row["ntasks"], row["gpus"], row["gres"], row["whole_node_memory"]) == (3, 0, {}, False)
    assert (row["required_nodes"], row["excluded_nodes"], row["slurm_request"]) == ([], [], {})


def test_whole_node_memory_is_recorded_at_claim_and_cleared_on_requeue(engine: Engine) -> None:
    """--mem=0：排队时内存列为 0；认领时记下所在节点的内存（查询的 tres_alloc_str 照实显示），
    重新排队后回到 0，改派到别的节点时按新节点重记。按量申请内存的作业不受影响。"""
    whole = _add(engine, whole_node_memory=True)
    sized = _add(engine, memory_bytes=2**30)
    placements = [Placement(whole, "nid", "node-1"), Placement(sized, "nid", "node-1")]
    with session_scope(engine) as s:
        rows = transitions.claim(
            s, placements, ["t1", "t2"], ["ag", "ag"], 1, node_memories=[2**33, 2**33]
        )
    assert {r["id"]: r["memory_bytes"] for r in rows} == {whole: 2**33, sized: 2**30}
    with session_scope(engine) as s:
        assert sorted(transitions.requeue(s, [(whole, "t1"), (sized, "t2")])) == sorted(
            [whole, sized]
        )
        memory = dict(
            s.execute(
                text("SELECT id, memory_bytes FROM jobs WHERE id = ANY(:ids)"),
                {"ids": [whole, sized]},
            ).all()
        )
    assert memory == {whole: 0, sized: 2**30}
    with session_scope(engine) as s:
        rows = transitions.claim(
            s, [Placement(whole, "nid2", "node-2")], ["t3"], ["ag"], 1, node_memories=[2**32]
        )
    assert rows[0]["memory_bytes"] == 2**32
