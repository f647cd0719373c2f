"""会话级共享：一个 PostgreSQL 服务器、一个 Ray 集群。测试按数据隔离（每个模块一个数据库）。"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cluster.ray_auth import PATH_VAR, ensure_cluster_token
from conductor.db import normalize_url
from conductor.embedded_pg import EmbeddedPostgres
from conductor.migrate import upgrade
from harness.postgres import private_postgres


@pytest.fixture(scope="session", autouse=True)
def ray_token(tmp_path_factory: pytest.TempPathFactory) -> str | None:
    """测试会话的 Ray 与生产一样开启令牌认证（serve 用的同一个函数准备令牌）。

    令牌放在会话自己的临时文件里（RAY_AUTH_TOKEN_PATH），不读也不写用户的 ~/.ray：
    测试不依赖本机以前留下的任何东西；会话启动的 Ray 与连接它的子进程都继承这个设置。"""
    if not os.environ.get(PATH_VAR):
        os.environ[PATH_VAR] = str(tmp_path_factory.mktemp("ray-auth") / "auth_token")
    return ensure_cluster_token()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """整个测试会话共用的真实 PostgreSQL。"""
    with private_postgres("conductor-test-pg-") as server:
        yield server


def _module_db_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", request.module.__name__.lower())[-40:]
    return f"t_{base}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def database_url(pg_server: EmbeddedPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """每个测试模块一个全新的数据库，已迁移到最新结构。"""
    name = _module_db_name(request)
    admin = create_engine(normalize_url(pg_server.url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = (
        make_url(normalize_url(pg_server.url))
        .set(database=name)
        .render_as_string(hide_password=False)
    )
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
