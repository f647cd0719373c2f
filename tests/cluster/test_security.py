"""安全：令牌认证、按账户隔离、WORK_ROOT 路径限定、请求大小限制（真实 PostgreSQL 与 Ray）。"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster
from sqlalchemy import text

from api.app import create_app
from api.runtime import Runtime
from cluster.client import ClusterClient
from conductor.auth import create_token, revoke_token
from conductor.db import make_engine
from conductor.settings import Settings
from harness.waiting import wait_for
from tests.cluster.conftest import Service, job_payload, make_settings


@pytest.fixture(scope="module")
def secure(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    """认证开启的服务；svc.client 带管理员令牌（模块结束时的清理也要用它）。"""
    svc = Service(make_settings(database_url, auth="on"))
    _, admin = create_token(svc.engine, account=None, admin=True, note="测试管理员")
    svc.client.headers["Authorization"] = f"Bearer {admin}"
    yield svc
    svc.close()


def client_for(svc: Service, token: str | None = None, **overrides: object) -> TestClient:
    """同一个数据库与调度器上的另一个 API 实例（可改配置），带指定令牌。"""
    settings = svc.settings.model_copy(update=overrides)
    app = create_app(Runtime(settings, svc.engine, ClusterClient(settings)))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, headers=headers)


def account_client(svc: Service, account: str, **overrides: object) -> TestClient:
    _, token = create_token(svc.engine, account=account, admin=False)
    return client_for(svc, token, **overrides)


def job_count(svc: Service) -> int:
    with svc.engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM jobs")).scalar_one())


ROUTES = [
    ("post", "/jobs/submit"),
    ("post", "/jobs/submit/batch"),
    ("get", "/jobs/query/1"),
    ("post", "/jobs/cancel/1"),
    ("get", "/jobs"),
    ("get", "/dashboard"),
    ("get", "/jobs/1/logs"),
    ("post", "/jobs/1/hold"),
    ("post", "/nodes/n1/drain"),
    ("post", "/nodes/n1/resume"),
    ("post", "/jobs/1/release"),
    ("patch", "/jobs/1"),
]


def test_every_route_needs_a_valid_token(secure: Service, tmp_path: Path) -> None:
    anonymous = client_for(secure)
    bogus = client_for(secure, "cdt_" + "x" * 43)
    body = job_payload("echo hi", current_working_directory=str(tmp_path))
    before = job_count(secure)
    for client in (anonymous, bogus):
        for method, path in ROUTES:
            kwargs = {"json": body} if path == "/jobs/submit" else {}
            if path.endswith("batch"):
                kwargs = {"json": {"jobs": [body]}}
            if method == "patch":
                kwargs = {"json": {"priority": 1}}
            resp = getattr(client, method)(path, **kwargs)
            assert resp.status_code == 401, (path, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert "令牌" in resp.json()["detail"]
    assert job_count(secure) == before
    # /health 不需要令牌
    assert anonymous.get("/health").status_code == 200


def test_only_admins_drain_and_resume_nodes(secure: Service) -> None:
    """排空与恢复节点仅管理员：账户令牌 403 且什么都不写；管理员的请求也先校验原因与节点名。"""
    head = secure.client.get("/dashboard").json()["node_info"][0]["node_name"]
    user = account_client(secure, "alice")
    refused = user.post(f"/nodes/{head}/drain", json={"reason": "x"})
    assert refused.status_code == 403 and "管理员" in refused.json()["detail"]
    assert user.post(f"/nodes/{head}/resume").status_code == 403
    no_reason = secure.client.post(f"/nodes/{head}/drain", json={"reason": " "})
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    assert secure.client.post("/nodes/nope/drain", json={"reason": "x"}).status_code == 404
    with secure.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM node_drains")).scalar_one() == 0
    assert secure.client.post(f"/nodes/{head}/resume").status_code == 409


def test_revoked_token_is_refused_at_once(secure: Service) -> None:
    row, token = create_token(secure.engine, account="rev", admin=False)
    client = client_for(secure, token)
    assert client.get("/jobs").status_code == 200
    revoke_token(secure.engine, row.id or 0)
    resp = client.get("/jobs")
    assert resp.status_code == 401
    assert "吊销" in resp.json()["detail"]


def test_token_is_stored_hashed(secure: Service) -> None:
    row, token = create_token(secure.engine, account="h", admin=False)
    with secure.engine.connect() as conn:
        dump = " ".join(str(v) for r in conn.execute(text("SELECT * FROM api_tokens")) for v in r)
    assert token not in dump
    assert row.token_hash in dump


def test_accounts_are_isolated_admin_sees_all(secure: Service, tmp_path: Path) -> None:
    alice, bob = account_client(secure, "alice"), account_client(secure, "bob")
    wd = str(tmp_path)

    # 不能以别的账户提交：403，什么也不保存
    before = job_count(secure)
    resp = bob.post(
        "/jobs/submit", json=job_payload("echo x", account="alice", current_working_directory=wd)
    )
    assert resp.status_code == 403, resp.text
    assert "bob" in resp.json()["detail"] and "alice" in resp.json()["detail"]
    batch = {
        "jobs": [
            job_payload("echo x", account="bob", current_working_directory=wd),
            job_payload("echo x", account="alice", current_working_directory=wd),
        ]
    }
    assert bob.post("/jobs/submit/batch", json=batch).status_code == 403
    assert job_count(secure) == before

    resp = alice.post(
        "/jobs/submit",
        json=job_payload(
            "echo alice-secret-output; sleep 300", account="alice", current_working_directory=wd
        ),
    )
    assert resp.status_code == 201, resp.text
    job_id = int(resp.json()["job_id"])
    secure.wait_state(job_id, "RUNNING")
    wait_for(
        lambda: "alice-secret-output" in alice.get(f"/jobs/query/{job_id}").text,
        30,
        what="作业输出",
    )

    # bob 看不到 alice 的作业：与不存在的作业同样 404，消息相同
    missing = bob.get("/jobs/query/99999999").json()["detail"].replace("99999999", str(job_id))
    for resp in (
        bob.get(f"/jobs/query/{job_id}"),
        bob.post(f"/jobs/cancel/{job_id}"),
        bob.get(f"/jobs/{job_id}/logs"),
        bob.post(f"/jobs/{job_id}/hold"),
        bob.post(f"/jobs/{job_id}/release"),
        bob.patch(f"/jobs/{job_id}", json={"priority": 7}),
    ):
        assert resp.status_code == 404, resp.text
        assert resp.json()["detail"] == missing
        assert "alice-secret-output" not in resp.text
    assert secure.state(job_id) == "RUNNING"  # bob 的取消没有生效
    listed = bob.get("/jobs", params={"account": "alice", "state": ["RUNNING"]}).json()
    assert listed["jobs"] == []
    assert all(j["account"] == "bob" for j in bob.get("/jobs").json()["jobs"])
    dash = bob.get("/dashboard").json()
    assert job_id not in [j["job_id"] for j in dash["running_jobs"]]
    assert dash["job_stats"]["running"] == 0
    assert dash["resource_stats"]["total_cpus"] > 0  # 集群资源仍可见

    # alice 自己能看、能读日志；管理员看到全部
    body = alice.get(f"/jobs/query/{job_id}").json()
    assert body["job_log"]["stdout"] == "alice-secret-output\n"
    assert job_id in [j["job_id"] for j in alice.get("/jobs").json()["jobs"]]
    assert job_id in [j["job_id"] for j in secure.client.get("/jobs").json()["jobs"]]
    assert job_id in [j["job_id"] for j in secure.client.get("/dashboard").json()["running_jobs"]]
    assert secure.client.get(f"/jobs/query/{job_id}").status_code == 200

    resp = alice.post(f"/jobs/cancel/{job_id}")
    assert resp.status_code == 200
    secure.wait_state(job_id, "CANCELLED")


def test_work_root_confines_paths(secure: Service, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inside" / "up").symlink_to("../..")
    client = account_client(secure, "wr", work_root=root)
    before = job_count(secure)
    bad = [
        ({"current_working_directory": str(outside)}, "job.current_working_directory"),
        (
            {"current_working_directory": str(root / "inside" / ".." / ".." / "outside")},
            "job.current_working_directory",
        ),
        ({"current_working_directory": str(root / "escape")}, "job.current_working_directory"),
        (
            {"current_working_directory": str(root / "inside" / "up" / "outside")},
            "job.current_working_directory",
        ),
        (
            {"current_working_directory": str(root), "standard_output": "/etc/passwd"},
            "job.standard_output",
        ),
        (
            {"current_working_directory": str(root), "standard_output": "../x.out"},
            "job.standard_output",
        ),
        (
            {"current_working_directory": str(root), "standard_error": "escape/x.err"},
            "job.standard_error",
        ),
        (
            {"current_working_directory": str(root), "standard_error": "inside/up/x.err"},
            "job.standard_error",
        ),
    ]
    for change, field in bad:
        resp = client.post("/jobs/submit", json=job_payload("echo hi", account="wr", **change))
        assert resp.status_code == 422, (change, resp.text)
        assert resp.json()["errors"][0]["field"] == field
        assert "CONDUCTOR_WORK_ROOT" in resp.json()["detail"]
    assert job_count(secure) == before
    resp = client.post(
        "/jobs/submit",
        json=job_payload(
            "echo ok",
            account="wr",
            current_working_directory=str(root / "inside" / "new"),
            standard_output="logs/o.txt",
        ),
    )
    assert resp.status_code == 201, resp.text
    body = secure.wait_state(int(resp.json()["job_id"]), "COMPLETED")
    assert body["job_log"]["stdout"] == "ok\n"
    assert (root / "inside" / "new" / "logs" / "o.txt").read_text() == "ok\n"


def test_size_limits_refuse_and_store_nothing(secure: Service, tmp_path: Path) -> None:
    client = account_client(
        secure,
        "lim",
        max_body_bytes=64 * 1024,
        max_script_bytes=1000,
        max_env_entries=3,
        max_env_bytes=100,
    )
    wd = str(tmp_path)
    before = job_count(secure)
    cases = [
        (job_payload("x" * 1001, account="lim", current_working_directory=wd), 413, "脚本过大"),
        (
            job_payload(
                "echo",
                account="lim",
                current_working_directory=wd,
                environment={f"V{i}": "1" for i in range(4)},
            ),
            422,
            "环境变量过多",
        ),
        (
            job_payload(
                "echo", account="lim", current_working_directory=wd, environment={"BIG": "v" * 100}
            ),
            422,
            "环境变量 BIG 过大",
        ),
        (
            job_payload("echo", account="lim" * 100, current_working_directory=wd),
            422,
            "job.account",
        ),
        (
            job_payload("echo", account="lim", current_working_directory="/" + "d" * 1024),
            422,
            "job.current_working_directory",
        ),
        (job_payload("x" * 70_000, account="lim", current_working_directory=wd), 413, "请求体过大"),
    ]
    for payload, status, needle in cases:
        resp = client.post("/jobs/submit", json=payload)
        assert resp.status_code == status, resp.text
        assert needle in resp.json()["detail"], resp.text
    batch = {
        "jobs": [
            job_payload("echo", account="lim", current_working_directory=wd),
            job_payload("y" * 2000, account="lim", current_working_directory=wd),
        ]
    }
    resp = client.post("/jobs/submit/batch", json=batch)
    assert resp.status_code == 413
    assert "第 1 个作业" in resp.json()["detail"]
    # 分块传输（没有 Content-Length）也按实际读到的字节数拒绝
    chunks = (b"x" * 8192 for _ in range(20))
    resp = client.post("/jobs/submit", content=chunks, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert job_count(secure) == before
    # 默认上限：1 MiB 脚本
    assert Settings().max_script_bytes == 1024 * 1024


def test_health_and_errors_leak_no_secrets(secure: Service) -> None:
    marker = "S3cretPassw0rd"
    row, token = create_token(secure.engine, account="leak", admin=False)
    client = client_for(secure, token)
    # 一个连不上的数据库，地址里带密码：/health 报告 postgres 不可用，但不带出地址与密码
    bad_url = f"postgresql://u:{marker}@db.invalid/x"
    bad = secure.settings.model_copy(update={"database_url": bad_url})
    broken = TestClient(
        create_app(Runtime(bad, make_engine(bad_url), ClusterClient(bad))),
        headers={"Authorization": f"Bearer {token}"},
    )
    health = broken.get("/health")
    assert health.status_code == 503 and health.json()["components"]["postgres"]["status"] == "down"
    texts = [
        health.text,
        broken.get("/jobs").text,
        client.get("/health").text,
        client.get("/jobs/query/123456789").text,
        client_for(secure, token + "x").get("/jobs").text,
        client.get("/openapi.json").text,
    ]
    for t in texts:
        assert marker not in t
        assert token not in t
        assert row.token_hash not in t
    assert (secure.settings.database_url or "") not in client.get("/health").text


def test_auth_is_on_by_default_even_on_loopback(
    secure: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """默认配置监听 127.0.0.1 时也要令牌（原来 auto 在回环地址上关闭认证：本机任何用户、任何作业、
    同机反向代理后面的任何人都能以服务身份执行命令）。auto 仍可解析，含义与 on 相同。"""
    default = Settings().auth
    for mode in (default, "auto", "on"):
        resp = client_for(secure, auth=mode, host="127.0.0.1").post(
            "/jobs/submit", json=job_payload("id")
        )
        assert resp.status_code == 401, (mode, resp.text)
    # 只有明确 off 才关闭：只在回环地址上，启动时警告；按账户映射运行作业时拒绝
    with pytest.raises(ValueError, match="认证已关闭"):
        client_for(secure, host="0.0.0.0", auth="off")
    with pytest.raises(ValueError, match="CONDUCTOR_ACCOUNT_USERS"):
        client_for(secure, auth="off", account_users={"alice": "nobody"})
    with caplog.at_level("INFO", logger="conductor.api"):
        open_client = client_for(secure, auth="off")
    assert "API 认证已关闭（CONDUCTOR_AUTH=off" in caplog.text and "127.0.0.1" in caplog.text
    assert open_client.get("/jobs").status_code == 200


def test_one_time_login_code(secure: Service) -> None:
    """serve 打印的一次性登录码换一个管理员令牌：只能用一次，过期或伪造的都 401。"""
    from datetime import timedelta

    from conductor.auth import create_login_code

    anonymous = client_for(secure)
    code = create_login_code(secure.engine)
    resp = anonymous.post("/auth/login", json={"code": code})
    assert resp.status_code == 200, resp.text
    token = resp.json()["token"]
    assert client_for(secure, token).get("/jobs").status_code == 200
    again = anonymous.post("/auth/login", json={"code": code})
    assert again.status_code == 401 and "已用过" in again.json()["detail"]
    expired = create_login_code(secure.engine, ttl=timedelta(seconds=-1))
    assert anonymous.post("/auth/login", json={"code": expired}).status_code == 401
    assert anonymous.post("/auth/login", json={"code": "cdl_" + "x" * 43}).status_code == 401
    assert anonymous.post("/auth/login", json={}).status_code == 422
    with secure.engine.connect() as conn:
        stored = " ".join(
            str(v) for r in conn.execute(text("SELECT * FROM login_codes")) for v in r
        )
    assert code not in stored  # 只存摘要


def test_cli_token_commands(secure: Service, tmp_path: Path) -> None:
    import subprocess
    import sys

    conductor = str(Path(sys.executable).with_name("conductor"))
    url = secure.settings.database_url or ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [conductor, "token", *args, "--database-url", url],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    created = run("create", "--account", "cli-acct", "--note", "来自命令行")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cdt_") and "只显示这一次" in created.stderr
    client = client_for(secure, token)
    assert client.get("/jobs").status_code == 200
    listed = run("list")
    assert listed.returncode == 0 and "cli-acct" in listed.stdout
    assert token not in listed.stdout
    token_id = next(
        line.split("│")[1].strip() for line in listed.stdout.splitlines() if "cli-acct" in line
    )
    assert run("revoke", token_id).returncode == 0
    assert client.get("/jobs").status_code == 401
    assert "cli-acct" not in run("list").stdout
    assert run("create").returncode == 2
    assert run("revoke", "987654").returncode == 1


def test_logs_come_only_from_recorded_paths(secure: Service, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    client = account_client(secure, "paths", work_root=root)
    resp = client.post(
        "/jobs/submit",
        json=job_payload(
            "echo from-job",
            account="paths",
            current_working_directory=str(root / "alias"),
            standard_output="o.txt",
            standard_error="e.txt",
        ),
    )
    assert resp.status_code == 201, resp.text
    job_id = int(resp.json()["job_id"])
    body = secure.wait_state(job_id, "COMPLETED")
    assert body["job_log"]["stdout"] == "from-job\n"
    with secure.engine.connect() as conn:
        paths = conn.execute(
            text("SELECT stdout_path, stderr_path FROM jobs WHERE id = :id"), {"id": job_id}
        ).one()
    # 记录的是提交时解析后的绝对路径；查询只读这两个文件（改动文件内容，查询随之改变）
    assert tuple(paths) == (str(root / "real" / "o.txt"), str(root / "real" / "e.txt"))
    (root / "real" / "o.txt").write_text("rewritten\n")
    assert client.get(f"/jobs/query/{job_id}").json()["job_log"]["stdout"] == "rewritten\n"
    # 请求里夹带的路径参数不起作用
    resp = client.get(
        f"/jobs/query/{job_id}", params={"path": "/etc/passwd", "stdout": "/etc/passwd"}
    )
    assert "root:" not in resp.text


def test_filename_pad_widths_are_bounded(secure: Service, tmp_path: Path) -> None:
    """%<宽度>j 的宽度有上限：巨大的宽度在分配任何东西之前 422（原来 %99999999999999999999j
    是 500，%2000000000j 为每个文件名分配 2 GB）；展开后超过列长（2048）的路径也是 422。"""
    wd = str(tmp_path)
    before = job_count(secure)
    cases = [
        ({"standard_output": "o-%99999999999999999999j.out"}, "job.standard_output"),
        ({"standard_output": "o-%2000000000j.out"}, "job.standard_output"),
        ({"standard_error": "e-%3000a.err", "array": "0-1000"}, "job.standard_error"),
        ({"standard_output": "o-%11j.out"}, "job.standard_output"),
        # 展开后过长：作业名 255 个字符，%x 展开 9 次
        ({"name": "n" * 255, "standard_output": "%x" * 9}, "job.standard_output"),
    ]
    for change, field in cases:
        resp = secure.client.post("/jobs/submit", json=job_payload("true", **change))
        assert resp.status_code == 422, (change, resp.text)
        assert resp.json()["errors"][0]["field"] == field, resp.text
        assert field.removeprefix("job.") in resp.json()["detail"] or "宽度" in resp.text
    # 批量提交：字段名带上是第几个作业
    batch = {
        "jobs": [
            job_payload("true", current_working_directory=wd),
            job_payload(
                "true", current_working_directory=wd, name="n" * 255, standard_error="%x" * 9
            ),
        ]
    }
    resp = secure.client.post("/jobs/submit/batch", json=batch)
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "jobs.1.job.standard_error"
    assert job_count(secure) == before
    # 上限之内照常补零（同 Slurm，最多 10 位）
    resp = secure.client.post(
        "/jobs/submit",
        json=job_payload("true", current_working_directory=wd, standard_output="o-%10j.out"),
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["job_id"]
    with secure.engine.connect() as conn:
        path = conn.execute(
            text("SELECT stdout_path FROM jobs WHERE id = :id"), {"id": int(job_id)}
        ).scalar_one()
    assert path == os.path.join(wd, f"o-{int(job_id):010d}.out")


def test_dependency_on_another_accounts_job_looks_missing(secure: Service, tmp_path: Path) -> None:
    """afterok:<别的账户的作业> 与 afterok:<不存在的作业> 的回答一字不差（原来被接受，
    等待原因随后泄露那个作业的结局）。"""
    alice, bob = account_client(secure, "dep_alice"), account_client(secure, "dep_bob")
    wd = str(tmp_path)
    resp = alice.post(
        "/jobs/submit",
        json=job_payload("exit 3", account="dep_alice", current_working_directory=wd),
    )
    assert resp.status_code == 201, resp.text
    theirs = int(resp.json()["job_id"])
    secure.wait_state(theirs, "FAILED")
    missing = theirs + 10_000_000
    before = job_count(secure)

    def answer(target: int) -> tuple[int, str]:
        r = bob.post(
            "/jobs/submit",
            json=job_payload(
                "true",
                account="dep_bob",
                current_working_directory=wd,
                dependency=f"afterok:{target}",
            ),
        )
        return r.status_code, r.text.replace(str(target), "<id>")

    assert answer(theirs) == answer(missing)
    assert answer(missing)[0] == 422
    assert job_count(secure) == before
    # 自己的作业、管理员引用任何账户的作业照常可以
    mine = alice.post(
        "/jobs/submit",
        json=job_payload(
            "true",
            account="dep_alice",
            current_working_directory=wd,
            dependency=f"afterok:{theirs}",
        ),
    )
    assert mine.status_code == 201, mine.text
    admin = secure.client.post(
        "/jobs/submit",
        json=job_payload(
            "true", account="dep_bob", current_working_directory=wd, dependency=f"afterany:{theirs}"
        ),
    )
    assert admin.status_code == 201, admin.text


def test_batch_times_array_is_bounded(secure: Service, tmp_path: Path) -> None:
    """一次请求展开后的总行数与总字节数有上限（原来 1000 个作业 × array 0-1000 从约 300 KB 的
    请求体在一个事务里写入一百万行）：超限 422/413，什么也不保存。"""
    client = account_client(secure, "big", max_request_jobs=2500, max_request_bytes=1024 * 1024)
    wd = str(tmp_path)

    def job(script: str = "true", **extra: object) -> dict:
        return job_payload(script, account="big", current_working_directory=wd, **extra)

    before = job_count(secure)
    resp = client.post("/jobs/submit/batch", json={"jobs": [job(array="0-1000")] * 3})
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "jobs"
    assert "3003" in resp.json()["detail"] and "CONDUCTOR_MAX_REQUEST_JOBS" in resp.text
    # 脚本按任务逐个保存：2 KB 的脚本 × 1001 个任务约 2 MB，超过 1 MiB
    resp = client.post("/jobs/submit", json=job("#" * 2048, array="0-1000"))
    assert resp.status_code == 413, resp.text
    assert resp.json()["errors"][0]["field"] == "job.array"
    assert "CONDUCTOR_MAX_REQUEST_BYTES" in resp.text
    resp = client.post(
        "/jobs/submit/batch", json={"jobs": [job("#" * 600_000), job("#" * 600_000)]}
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["errors"][0]["field"] == "jobs"
    # 默认上限：一万行
    assert Settings().max_request_jobs == 10_000
    resp = account_client(secure, "big").post(
        "/jobs/submit/batch", json={"jobs": [job(array="0-1000")] * 11}
    )
    assert resp.status_code == 422, resp.text
    assert job_count(secure) == before
    # 上限之内照常接受
    resp = client.post("/jobs/submit/batch", json={"jobs": [job(array="0-9", hold=True)] * 2})
    assert resp.status_code == 201, resp.text
    assert job_count(secure) == before + 20
    for array_id in resp.json()["job_ids"]:
        assert client.post(f"/jobs/cancel/{array_id}").status_code == 200


def test_unreadable_log_path_is_a_clear_answer_not_500(secure: Service, tmp_path: Path) -> None:
    """服务读不了的日志路径（PermissionError；不能定位的特殊文件，ESPIPE）：查询仍是 200，
    日志里写明原因；日志接口给出清楚的 409，而不是 500。"""
    resp = secure.client.post(
        "/jobs/submit", json=job_payload("echo hi", current_working_directory=str(tmp_path))
    )
    assert resp.status_code == 201, resp.text
    job_id = int(resp.json()["job_id"])
    secure.wait_state(job_id, "COMPLETED")
    # root 也读不了只写的 sysctl 文件（procfs 不看 CAP_DAC_OVERRIDE）
    denied = "/proc/sys/vm/drop_caches"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # 有写端：打开不会阻塞，定位失败
    try:
        with secure.engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET stdout_path = :o, stderr_path = :e WHERE id = :id"),
                {"o": denied, "e": str(fifo), "id": job_id},
            )
        body = secure.client.get(f"/jobs/query/{job_id}")
        assert body.status_code == 200, body.text
        stdout = body.json()["job_log"]["stdout"]
        assert "无法读取" in stdout and denied in stdout and "Permission denied" in stdout
        assert body.json()["job_log"]["stderr"] != ""
        resp = secure.client.get(f"/jobs/{job_id}/logs")
        assert resp.status_code == 409, resp.text
        assert denied in resp.json()["detail"] and "无法读取" in resp.json()["detail"]
        assert (
            secure.client.get(f"/jobs/{job_id}/logs", params={"stream": "stderr"}).status_code < 500
        )
        followed = secure.client.get(f"/jobs/{job_id}/logs", params={"follow": "true"})
        assert followed.status_code == 200 and "无法读取" in followed.text
    finally:
        os.close(writer)


def test_revoked_token_stops_an_open_log_stream(secure: Service, tmp_path: Path) -> None:
    """吊销令牌后，用它打开的 logs -f 流随即结束（原来一直流到作业结束）；作业照常运行。"""
    import time

    import httpx

    from tests.cluster.live_api import LiveApi

    row, token = create_token(secure.engine, account="stream", admin=False)
    client = client_for(secure, token)
    resp = client.post(
        "/jobs/submit",
        json=job_payload(
            "while true; do echo tick; sleep 0.2; done",
            account="stream",
            current_working_directory=str(tmp_path),
        ),
    )
    assert resp.status_code == 201, resp.text
    job_id = int(resp.json()["job_id"])
    secure.wait_state(job_id, "RUNNING")
    live = LiveApi(secure)
    received = b""
    ended = False
    try:
        with httpx.stream(
            "GET",
            f"{live.url}/jobs/{job_id}/logs",
            params={"follow": "true"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30, read=60),
        ) as stream:
            assert stream.status_code == 200
            chunks = stream.iter_bytes()
            received += next(chunks)
            assert b"tick" in received
            revoke_token(secure.engine, row.id or 0)
            deadline = time.monotonic() + 60
            for chunk in chunks:
                received += chunk
                if time.monotonic() > deadline:
                    break
            else:
                ended = True
    finally:
        live.close()
    assert ended, "吊销令牌 60 秒后流仍在继续"
    assert "吊销".encode() in received
    assert secure.state(job_id) == "RUNNING"  # 只停止跟随，作业不受影响
    assert client.get(f"/jobs/query/{job_id}").status_code == 401
    assert secure.client.post(f"/jobs/cancel/{job_id}").status_code == 200


def test_authentication_comes_before_the_body(secure: Service, tmp_path: Path) -> None:
    """没有有效令牌的请求在服务读入请求体之前就得到 401：原来先读入、解析至多 16 MiB 的请求体，
    认证在那之后（超大的请求体得到 413、坏的 JSON 得到 422，都说明请求体已被读过）。"""
    import socket

    from tests.cluster.live_api import LiveApi

    before = job_count(secure)
    small = client_for(secure, max_body_bytes=64 * 1024)
    bogus = client_for(secure, "cdt_" + "y" * 43, max_body_bytes=64 * 1024)
    for client in (small, bogus):
        chunks = (b"x" * 8192 for _ in range(20))  # 分块传输、超过上限
        resp = client.post(
            "/jobs/submit", content=chunks, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 401, resp.text
        resp = client.post(
            "/jobs/submit/batch", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert resp.status_code == 401, resp.text
        assert resp.headers["www-authenticate"] == "Bearer"
    assert job_count(secure) == before

    # 真实的 HTTP：声明 16 MiB 的请求体却一个字节也不发，401 照样立即回来（服务没有等请求体）
    live = LiveApi(secure)
    try:
        with socket.create_connection(("127.0.0.1", live.port), timeout=20) as sock:
            sock.sendall(
                b"POST /jobs/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {16 * 1024 * 1024 - 1}\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    break
                head += data
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        live.close()


def test_root_service_refuses_unmapped_jobs_unless_allowed(
    secure: Service, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """服务以 root 运行时，未映射账户的作业会以 root 运行：默认在提交时 403，运维明确允许
    （CONDUCTOR_ALLOW_ROOT_JOBS=true）才接受；映射了用户的账户照常。启动日志写明这项设置。"""
    if os.geteuid() != 0:
        pytest.skip("需要以 root 运行（CI 与本仓库的测试环境都是 root）")
    wd = str(tmp_path)
    users = {"mapped": "nobody"}
    with caplog.at_level("INFO", logger="conductor.api"):
        strict = account_client(secure, "unmapped", allow_root_jobs=False, account_users=users)
    before = job_count(secure)
    resp = strict.post(
        "/jobs/submit", json=job_payload("id -u", account="unmapped", current_working_directory=wd)
    )
    assert resp.status_code == 403, resp.text
    assert "root" in resp.json()["detail"] and "CONDUCTOR_ALLOW_ROOT_JOBS" in resp.json()["detail"]
    assert "CONDUCTOR_ALLOW_ROOT_JOBS" in caplog.text
    batch = {"jobs": [job_payload("id -u", account="unmapped", current_working_directory=wd)] * 2}
    assert strict.post("/jobs/submit/batch", json=batch).status_code == 403
    assert job_count(secure) == before
    # 映射了用户的账户不受影响（挂起，不必真的以 nobody 运行）
    mapped = account_client(secure, "mapped", allow_root_jobs=False, account_users=users)
    resp = mapped.post(
        "/jobs/submit",
        json=job_payload("true", account="mapped", current_working_directory=wd, hold=True),
    )
    assert resp.status_code == 201, resp.text
    assert mapped.post(f"/jobs/cancel/{resp.json()['job_id']}").status_code == 200
    # 明确允许时接受，作业以 root 运行
    with caplog.at_level("INFO", logger="conductor.api"):
        allowed = account_client(secure, "unmapped", allow_root_jobs=True)
    assert "CONDUCTOR_ALLOW_ROOT_JOBS=true" in caplog.text
    resp = allowed.post(
        "/jobs/submit", json=job_payload("id -u", account="unmapped", current_working_directory=wd)
    )
    assert resp.status_code == 201, resp.text
    body = secure.wait_state(int(resp.json()["job_id"]), "COMPLETED")
    assert body["job_log"]["stdout"] == "0\n"
