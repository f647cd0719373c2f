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
