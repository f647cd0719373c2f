"""依赖的复查（真实 PostgreSQL）：被依赖作业开始/结束时立刻复查它的等待者，其余按 id 分批轮转；
每轮读的行数有上限，等待者再多也不会有人永远轮不到。"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from conductor.db import make_engine, normalize_url, session_scope
from conductor.dependencies import parse_dependency
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import MIGRATIONS
from conductor.models import Job
from conductor.resolver import DEPENDENCY_LOOKBACK, DependencyCursor, resolve_dependencies
from conductor.store.dependencies import set_dependency_states

BATCH = 10


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def empty(engine: Engine) -> Iterator[None]:
    yield
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs"))


def add(engine: Engine, dependency: str | None = None, **fields: Any) -> int:
    """插入一个作业，依赖的写法与作业号同 API 提交时一样存两份。"""
    if dependency is not None:
        fields |= {
            "dependency": dependency,
            "dependency_ids": sorted(parse_dependency(dependency).job_ids),
            "dependency_state": "WAITING",
        }
    job = Job(
        name=fields.pop("name", "t"),
        account="acct",
        partition="default",
        script="true",
        work_dir="/tmp",
        stdout_path="/dev/null",
        stderr_path="/dev/null",
        memory_bytes=2**20,
        **fields,
    )
    with session_scope(engine) as s:
        s.add(job)
        s.flush()
        assert job.id is not None
        return job.id


def end(
    engine: Engine, job_id: int, state: str = "COMPLETED", ago: timedelta | None = None
) -> None:
    """作业结束（ago：结束于多久之前）。"""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET state = :state, start_time = clock_timestamp() - :ago, "
                "end_time = clock_timestamp() - :ago WHERE id = :id"
            ),
            {"id": job_id, "state": state, "ago": ago or timedelta(0)},
        )


def check(engine: Engine, cursor: DependencyCursor) -> tuple[dict[int, str], DependencyCursor]:
    with session_scope(engine) as s:
        return resolve_dependencies(s, cursor, batch=BATCH)


def waiting_on_held(engine: Engine, n: int) -> list[int]:
    held = add(engine, held=True)
    return [add(engine, f"afterok:{held}") for _ in range(n)]


def test_rotation_reaches_every_waiting_job_in_bounded_batches(engine: Engine) -> None:
    """被依赖作业早已结束（不在回看范围内）：只有轮转复查能发现它的等待者，至多 ⌈等待数 / 批⌉ 轮。"""
    stuck = waiting_on_held(engine, 3 * BATCH + 1)
    old = add(engine)
    end(engine, old, ago=DEPENDENCY_LOOKBACK * 2)
    later = add(engine, f"afterok:{old}")
    cursor, seen = DependencyCursor(), {}
    for _ in range(4):  # 32 个等待者，每轮 10 个
        changed, cursor = check(engine, cursor)
        seen |= changed
    assert seen == {later: "SATISFIED"}
    assert not set(seen) & set(stuck)


def test_dependents_of_a_job_that_just_ended_are_checked_in_the_next_pass(engine: Engine) -> None:
    """等待者远多于一批：刚结束的作业的等待者不必等轮转，下一轮就判定（afterok 成功、失败两种）。"""
    waiting_on_held(engine, 3 * BATCH)
    cursor = check(engine, DependencyCursor())[1]
    ok, bad = add(engine), add(engine)
    after_ok, never = add(engine, f"afterok:{ok}"), add(engine, f"afterok:{bad}")
    end(engine, ok)
    end(engine, bad, state="FAILED")
    changed, cursor = check(engine, cursor)
    assert changed == {after_ok: "SATISFIED", never: "NEVER"}


def test_array_after_and_singleton_targets_are_found_by_the_change(engine: Engine) -> None:
    """数组任务结束代表主作业号；after 看开始；singleton 看同名同账户的作业结束。"""
    waiting_on_held(engine, 3 * BATCH)
    cursor = check(engine, DependencyCursor())[1]
    master = add(engine)
    task = add(engine)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET array_job_id = :m WHERE id IN (:m, :t)"),
            {"m": master, "t": task},
        )
    solo = add(engine, name="solo")
    started = add(engine)
    on_array = add(engine, f"afterany:{master}")
    on_start = add(engine, f"after:{started}")
    singleton = add(engine, "singleton", name="solo")
    end(engine, master)
    changed, cursor = check(engine, cursor)
    assert changed == {}  # 数组还有一个任务没结束；solo 与 started 都还在排队
    end(engine, task)
    end(engine, solo, state="CANCELLED")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET state = 'RUNNING', start_time = clock_timestamp() WHERE id = :id"
            ),
            {"id": started},
        )
    changed, cursor = check(engine, cursor)
    assert changed == {on_array: "SATISFIED", on_start: "SATISFIED", singleton: "SATISFIED"}


def test_burst_of_endings_is_read_in_batches_without_losing_any(engine: Engine) -> None:
    """一次结束的作业多于一批：游标分几轮读完（每轮至多一批），轮转复查还没轮到它们。"""
    waiting_on_held(engine, 5 * BATCH)
    cursor = check(engine, DependencyCursor())[1]
    targets = [add(engine) for _ in range(3 * BATCH)]
    dependents = {add(engine, f"afterok:{t}") for t in targets}
    with engine.begin() as conn:  # 一条 UPDATE 里全部结束
        conn.execute(
            text(
                "UPDATE jobs SET state = 'COMPLETED', end_time = clock_timestamp() "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": targets},
        )
    seen: dict[int, str] = {}
    for _ in range(4):  # 相邻两批重叠一行：30 个要 4 轮；轮转复查 4 轮只看到前 40 个等待者
        changed, cursor = check(engine, cursor)
        assert len(changed) <= BATCH
        with session_scope(engine) as s:  # 像调度器一样写回判定
            set_dependency_states(s, changed)
        seen |= changed
    assert set(seen) == dependents


def test_migration_fills_dependency_ids_of_existing_jobs(pg_server: EmbeddedPostgres) -> None:
    """升级前已排队的作业：迁移从依赖写法里取出作业号，升级后照样按被依赖作业找得到。"""
    admin = create_engine(normalize_url(pg_server.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('CREATE DATABASE "t_dependency_backfill"'))
    url = make_url(normalize_url(pg_server.url)).set(database="t_dependency_backfill")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option(
        "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
    )
    eng = create_engine(url)
    try:
        command.upgrade(cfg, "0003_auth")
        with eng.begin() as conn:
            for dependency in ("afterok:12:13,afterany:14", "singleton", None):
                conn.execute(
                    text(
                        "INSERT INTO jobs (name, account, partition, script, environment, "
                        "work_dir, stdout_path, stderr_path, ntasks_per_node, cpus_per_task, "
                        "cpus, memory_bytes, exclusive, state, submit_time, data_source, "
                        "dependency, dependency_state) VALUES ('t', 'a', 'default', 'true', '{}', "
                        "'/tmp', '/dev/null', '/dev/null', 1, 1, 1, 1, false, 'PENDING', now(), "
                        "'API', :dep, :state)"
                    ),
                    {"dep": dependency, "state": "NONE" if dependency is None else "WAITING"},
                )
        command.upgrade(cfg, "head")
        with eng.connect() as conn:
            ids = conn.execute(text("SELECT dependency_ids FROM jobs ORDER BY id")).scalars()
            assert list(ids) == [[12, 13, 14], [], None]
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE "t_dependency_backfill" WITH (FORCE)'))
        admin.dispose()
