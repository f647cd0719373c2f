"""提交时的安全检查（纯函数）：路径限定、大小限制、认证开关、令牌摘要、日志属主。"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conductor.admission import PayloadTooLarge, check_limits, confine, resolve_run_as
from conductor.auth import OPEN_ACCESS, Principal, hash_token, new_token
from conductor.errors import Forbidden, InvalidJobRequest
from conductor.jobspec import JobSpec, build_env
from conductor.logtail import owner_uid, read_tail
from conductor.settings import Settings, is_loopback


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (r / "out").symlink_to(tmp_path / "outside")
    (r / "a" / "up").symlink_to("../..")
    (r / "a" / "same").symlink_to("b")
    (r / "abs-in").symlink_to(r / "a")
    return r


@pytest.mark.parametrize(
    "rel",
    ["", "a", "a/b", "a/b/new/deeper/x.out", "a/same/x.out", "abs-in/b", "a/../a/b", "new/x"],
)
def test_confine_accepts_paths_inside(root: Path, rel: str) -> None:
    path = os.path.join(str(root), rel) if rel else str(root)
    real = confine(path, root, "f")
    assert real == os.path.realpath(path)
    assert real.startswith(os.path.realpath(root))


@pytest.mark.parametrize(
    "rel",
    [
        "..",
        "../outside",
        "a/../../outside",
        "out",
        "out/x.out",
        "a/up",
        "a/up/outside/x",
        "a/up/root2",
    ],
)
def test_confine_rejects_escapes(root: Path, rel: str) -> None:
    with pytest.raises(InvalidJobRequest) as info:
        confine(os.path.join(str(root), rel), root, "job.standard_output")
    assert info.value.field == "job.standard_output"
    assert "不在允许的目录" in info.value.message


def test_confine_rejects_prefix_sibling_and_absolute(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "data2").mkdir()
    for path in (str(tmp_path / "data2" / "x"), "/etc/passwd", "/"):
        with pytest.raises(InvalidJobRequest):
            confine(path, root, "f")


def test_confine_message_shows_resolution(root: Path) -> None:
    with pytest.raises(InvalidJobRequest, match="解析为"):
        confine(str(root / "out" / "x"), root, "f")


def _settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


def test_limits() -> None:
    s = _settings(max_script_bytes=10, max_env_entries=2, max_env_bytes=8)
    check_limits("x" * 10, {"A": "1234567"}, s)
    with pytest.raises(PayloadTooLarge, match="脚本过大：11 字节"):
        check_limits("x" * 11, {}, s)
    with pytest.raises(PayloadTooLarge):
        check_limits("汉" * 4, {}, s)  # 按 UTF-8 字节计：12 字节
    with pytest.raises(InvalidJobRequest, match="环境变量过多：3 个") as info:
        check_limits("x", {"A": "", "B": "", "C": ""}, s)
    assert info.value.field == "job.environment"
    with pytest.raises(InvalidJobRequest, match="环境变量 AB 过大：9 字节"):
        check_limits("x", {"AB": "1234567"}, s)


def test_default_limits() -> None:
    s = _settings()
    assert s.max_script_bytes == 1024 * 1024
    check_limits("x" * (1024 * 1024), {f"V{i}": "v" for i in range(s.max_env_entries)}, s)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("head.example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_modes() -> None:
    # 默认开启，回环地址上也是；auto 为兼容旧配置保留，与 on 相同
    assert _settings().auth == "on"
    assert _settings(host="127.0.0.1").auth_enabled()
    assert _settings(host="127.0.0.1", auth="auto").auth_enabled()
    assert _settings(host="0.0.0.0").auth_enabled()
    assert _settings(host="127.0.0.1", auth=" ON ").auth_enabled()
    assert not _settings(host="127.0.0.1", auth="off").auth_enabled()
    assert not _settings(host="127.0.0.1", auth="Off").auth_enabled()
    _settings(host="127.0.0.1", auth="off").check_security()
    _settings(host="0.0.0.0", auth="on").check_security()
    with pytest.raises(ValueError, match="认证已关闭"):
        _settings(host="0.0.0.0", auth="off").check_security()
    # 按账户映射运行作业时不能关闭认证（开启时照常）
    _settings(auth="on", account_users={"alice": "alice"}).check_security()
    with pytest.raises(ValueError, match="CONDUCTOR_ACCOUNT_USERS"):
        _settings(host="127.0.0.1", auth="off", account_users={"alice": "alice"}).check_security()
    with pytest.raises(ValueError):
        _settings(auth="maybe")


def test_account_users_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDUCTOR_ACCOUNT_USERS", '{"alice": "root"}')
    monkeypatch.setenv("CONDUCTOR_REQUIRE_USER_MAPPING", "true")
    s = Settings()
    assert resolve_run_as("alice", s) == "root"
    with pytest.raises(Forbidden, match="bob 没有映射"):
        resolve_run_as("bob", s)
    assert resolve_run_as("bob", _settings(require_user_mapping=False), as_root=False) is None


def test_root_service_refuses_unmapped_accounts_unless_allowed() -> None:
    s = _settings(account_users={"alice": "root"})
    with pytest.raises(Forbidden, match="CONDUCTOR_ALLOW_ROOT_JOBS=true"):
        resolve_run_as("bob", s, as_root=True)
    assert resolve_run_as("bob", s, as_root=False) is None
    assert resolve_run_as("bob", _settings(allow_root_jobs=True), as_root=True) is None
    assert resolve_run_as("alice", s, as_root=True) == "root"
    assert not Settings().allow_root_jobs  # 默认不允许


def test_tokens_are_random_and_hashed() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("cdt_") and len(a) >= 40
    assert hash_token(a) != hash_token(b) and len(hash_token(a)) == 64
    assert a not in hash_token(a)


def test_principal_access() -> None:
    alice = Principal(account="alice", admin=False)
    assert alice.can_access("alice") and not alice.can_access("bob")
    assert OPEN_ACCESS.can_access("anyone")


def test_read_tail_checks_owner(tmp_path: Path) -> None:
    f = tmp_path / "out.txt"
    f.write_text("mine\n")
    assert read_tail(f, os.getuid()) == "mine\n"
    assert "拒绝读取" in (read_tail(f, os.getuid() + 12345) or "")
    assert read_tail(f, None) == "mine\n"
    assert owner_uid(None) is None
    assert owner_uid("no-such-user-for-conductor") == -1


def test_job_env_never_holds_service_settings() -> None:
    """服务的每一项配置（CONDUCTOR_*）、令牌与 Ray 变量都不进入作业环境。"""
    marker = "pw-MARKER-4711"
    node_env = {f"CONDUCTOR_{name.upper()}": marker for name in Settings.model_fields}
    node_env |= {
        "CONDUCTOR_TOKEN": marker,
        "RAY_AUTH_TOKEN": marker,
        "RAY_ADDRESS": marker,
        "PGPASSWORD": marker,
        "PATH": "/usr/bin:/bin",
    }
    spec = JobSpec(
        job_id=1,
        name="n",
        account="a",
        partition="p",
        script="true",
        environment={},
        work_dir="/tmp",
        stdout_path="/tmp/o",
        stderr_path="/tmp/e",
        ntasks_per_node=1,
        cpus_per_task=1,
        cpus=1,
        memory_bytes=1,
        time_limit_seconds=None,
        node_name="n",
        token="t",
        kill_wait=1.0,
    )
    env = build_env(spec, node_env)
    assert marker not in "".join(env.values())
    assert "CONDUCTOR_DATABASE_URL" not in env
    # CONDUCTOR_TOKEN 只是这个作业自己这次执行的凭据（议题 18），从不是服务的令牌
    assert env["CONDUCTOR_TOKEN"] == "cdj_1_t"


def test_supervisor_passes_security_settings_to_api_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from api.server import Supervisor

    s = Settings(
        data_dir=tmp_path,
        account_users={"alice": "alice", "proj": "svc"},
        require_user_mapping=True,
        work_root=tmp_path / "jobs",
        auth="on",
        max_script_bytes=1234,
    )
    for key, value in Supervisor(s)._api_env(ready_fd=3).items():
        if key.startswith("CONDUCTOR_"):
            monkeypatch.setenv(key, value)
    assert Settings() == s
