"""serve 为本机用户写入的令牌文件（真实 PostgreSQL）：位置遵从 XDG_CONFIG_HOME，0600、O_EXCL，
已有的文件（包括别人放的符号链接）一律不动、不跟随；写入的是有效的管理员令牌。"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from conductor.auth import authenticate, ensure_local_token
from conductor.db import make_engine
from conductor.tokenfile import read_token, token_path


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def test_token_path_honours_xdg_config_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert token_path() == tmp_path / "home" / ".config" / "conductor" / "token"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert token_path() == tmp_path / "xdg" / "conductor" / "token"


def test_writes_an_admin_token_once(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "config" / "conductor" / "token"
    assert ensure_local_token(engine, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = read_token(path)
    assert token is not None
    principal = authenticate(engine, token)
    assert principal is not None and principal.admin
    # 第二次启动：文件已存在，不覆盖
    assert not ensure_local_token(engine, path)
    assert read_token(path) == token


def test_never_follows_or_replaces_someone_elses_file(engine: Engine, tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("keep\n")
    path = tmp_path / "conductor" / "token"
    path.parent.mkdir()
    path.symlink_to(target)
    assert not ensure_local_token(engine, path)
    assert target.read_text() == "keep\n"
    dangling = tmp_path / "conductor" / "other"
    dangling.symlink_to(tmp_path / "nowhere")
    assert not ensure_local_token(engine, dangling)
    assert not (tmp_path / "nowhere").exists()
