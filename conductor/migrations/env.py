"""Alembic 环境：由 conductor.migrate 以编程方式调用，连接 URL 来自配置。"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from conductor.db import normalize_url

config = context.config
connectable = config.attributes.get("connection")

if connectable is None:
    engine = create_engine(
        normalize_url(config.get_main_option("sqlalchemy.url") or ""), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable)
    with context.begin_transaction():
        context.run_migrations()
