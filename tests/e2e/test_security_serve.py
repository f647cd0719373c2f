"""端到端安全：真实的 `conductor serve`（认证开启、外部 PostgreSQL 带密码）、真实令牌、真实 CLI。"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from harness.serve import CONDUCTOR, ServeProcess
from harness.waiting import wait_for

PASSWORD = "pw-Xq7-MARKER-db"
SERVICE_TOKEN = "cdt_service-env-token-MARKER"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONDUCTOR, *args], capture_output=True, text=True, timeout=120, env=env)


def test_serve_with_auth_tokens_and_no_secrets_in_jobs(tmp_path: Path, database_url: str) -> None:
    # 测试的 PostgreSQL 对本地套接字不校验密码：URL 里的密码只作为要找的“机密”标记
    secret_url = make_url(database_url).set(password=PASSWORD).render_as_string(hide_password=False)
    serve = ServeProcess(
        tmp_path,
        tmp_path / "data",
        "--num-cpus",
        "1",
        env={
            "CONDUCTOR_DATABASE_URL": secret_url,
            "CONDUCTOR_AUTH": "on",
            "CONDUCTOR_TOKEN": SERVICE_TOKEN,
        },
    )
    home = tmp_path / "home"
    (home / ".config" / "conductor").mkdir(parents=True)
    client_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "XDG_CONFIG"))
    }
    client_env |= {"HOME": str(home), "CONDUCTOR_URL": serve.url}
    try:
        serve.wait_healthy()
        created = _run(
            client_env, "token", "create", "--account", "e2e", "--database-url", database_url
        )
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()

        script = tmp_path / "dump.sh"
        script.write_text("env\n")
        work = tmp_path / "work"
        args = ("submit", str(script), "-A", "e2e", "-D", str(work), "-o", "env.out", "--json")
        # 没有令牌：401，中文说明
        refused = _run(client_env, *args)
        assert refused.returncode == 1
        assert "401" in refused.stderr and "令牌" in refused.stderr
        # 令牌在配置文件里
        (home / ".config" / "conductor" / "token").write_text(token + "\n")
        submitted = _run(client_env, *args)
        assert submitted.returncode == 0, submitted.stderr
        job_id = json.loads(submitted.stdout)["job_id"]
        # 令牌在环境变量里（优先于配置文件）
        (home / ".config" / "conductor" / "token").write_text("cdt_wrong\n")
        env_token = client_env | {"CONDUCTOR_TOKEN": token}

        def finished() -> dict | None:
            out = _run(env_token, "query", job_id, "--json")
            assert out.returncode == 0, out.stderr
            body = json.loads(out.stdout)
            return body if body["state"] == "COMPLETED" else None

        body = wait_for(finished, 60, interval=0.5, what="作业完成")
        dumped = (work / "env.out").read_text()
        assert body["job_log"]["stdout"] == dumped
        assert "SLURM_JOB_ID=" + job_id in dumped
        for secret in (PASSWORD, SERVICE_TOKEN, token):
            assert secret not in dumped
        assert "CONDUCTOR_DATABASE_URL" not in dumped
        # 作业里唯一的令牌是它自己这次运行的凭据（只在运行中、只对本账户有效），不是服务或提交者的
        tokens = re.findall(r"^CONDUCTOR_TOKEN=(.*)$", dumped, re.MULTILINE)
        assert len(tokens) == 1 and tokens[0].startswith(f"cdj_{job_id}_"), tokens
        assert _run(client_env | {"CONDUCTOR_TOKEN": tokens[0]}, "query", job_id).returncode == 1
        # 只有配置文件里的错误令牌时被拒绝
        assert _run(client_env, "query", job_id).returncode == 1
    finally:
        code = serve.stop() if serve.proc.poll() is None else serve.proc.returncode
        serve.cleanup()
    assert code == 0
    log = serve.log_path.read_text()
    assert "API 认证已开启" in log
    for secret in (PASSWORD, SERVICE_TOKEN, token):
        assert secret not in log


def test_serve_refuses_open_api_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env["CONDUCTOR_AUTH"] = "off"
    out = _run(env, "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 2
    assert "认证已关闭" in out.stderr + out.stdout
    assert not (tmp_path / "data" / "pg").exists()  # 什么也没有启动


def test_first_start_is_safe_and_leaves_the_local_cli_working(tmp_path: Path) -> None:
    """新机器（空 HOME）上以默认配置第一次启动：API 监听 127.0.0.1 也要令牌（原来不要：本机任何用户、
    任何作业都能以服务身份执行命令）；serve 为自己的用户写入管理员令牌（0600），本机 CLI 不用任何
    步骤就能用；启动日志里的一次性登录地址让网页换到令牌，只能用一次。"""
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "1")
    try:
        serve.wait_healthy()
        # 本机别的用户、作业、同机反向代理后面的人：没有令牌就是 401
        anonymous = httpx.post(serve.url + "/jobs/submit", json={}, timeout=10)
        assert anonymous.status_code == 401, anonymous.text
        assert httpx.get(serve.url + "/jobs", timeout=10).status_code == 401
        token_file = serve.token_path
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        # 本机 CLI：同一个 HOME，不设任何令牌
        script = tmp_path / "hi.sh"
        script.write_text("echo hi-from-cli\n")
        work = tmp_path / "work"
        submitted = serve.cli("submit", str(script), "-D", str(work), "-o", "hi.out", "--parsable")
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        wait_for(
            lambda: serve.query(job_id)["state"] == "COMPLETED", 60, interval=0.3, what="作业完成"
        )
        queue = serve.cli("history")
        assert queue.returncode == 0 and job_id in queue.stdout, queue.stderr
        # 一次性登录地址：换到的令牌可用；同一个地址第二次无效
        log = serve.log_path.read_text()
        found = re.search(rf"http://127\.0\.0\.1:{serve.port}/ui#login=(cdl_[\w-]+)", log)
        assert found, log[-3000:]
        login = httpx.post(serve.url + "/auth/login", json={"code": found[1]}, timeout=10)
        assert login.status_code == 200, login.text
        browser = {"Authorization": f"Bearer {login.json()['token']}"}
        assert httpx.get(serve.url + "/jobs", headers=browser, timeout=10).status_code == 200
        again = httpx.post(serve.url + "/auth/login", json={"code": found[1]}, timeout=10)
        assert again.status_code == 401
        assert f"已为本机用户生成管理员令牌：{token_file}（权限 0600）" in log
        assert "API 认证已开启" in log
        code = serve.stop()
    finally:
        serve.cleanup()
    assert code == 0
    assert token_file.read_text().strip() not in serve.log_path.read_text()  # 令牌本身不进日志


def test_serve_refuses_auth_off_with_account_mapping(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env |= {"CONDUCTOR_AUTH": "off", "CONDUCTOR_ACCOUNT_USERS": '{"alice": "nobody"}'}
    out = _run(env, "serve", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 2
    assert "CONDUCTOR_ACCOUNT_USERS" in out.stderr + out.stdout
    assert not (tmp_path / "data" / "pg").exists()  # 什么也没有启动
