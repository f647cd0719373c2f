"""迁移建出的表结构与模型一致（防止模型改了却忘了写迁移）。"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import conductor.models  # noqa: F401 - 注册表到 SQLModel.metadata
from conductor.db import normalize_url


def test_migrations_match_models(database_url: str) -> None:
    engine = create_engine(normalize_url(database_url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_job_stats_buckets_match_the_metrics_buckets(database_url: str) -> None:
    """触发器里的延迟桶（迁移 0005_security）与 /metrics 的 LATENCY_BUCKETS 一致。"""
    from sqlalchemy import text

    from conductor.stats import LATENCY_BUCKETS, _bucket

    engine = create_engine(normalize_url(database_url))
    with engine.connect() as conn:
        for i, bound in enumerate(LATENCY_BUCKETS):
            for lat, expected in ((bound, i), (bound * 1.0001, i + 1)):
                label = conn.execute(text("SELECT job_stats_bucket(:lat)"), {"lat": lat}).scalar()
                assert _bucket(label) == expected, (lat, label)
    engine.dispose()
