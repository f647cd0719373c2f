"""作业以映射的 Unix 用户运行（服务以 root 运行时）：两个为测试创建的真实用户。"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster
from sqlalchemy import text

from api.app import create_app
from api.runtime import Runtime
from cluster.client import ClusterClient
from cluster.spool import spool_dir
from conductor.auth import create_token
from conductor.proctree import find_job_pids
from harness.waiting import wait_for
from tests.cluster.conftest import Service, job_payload, make_settings

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="切换用户需要以 root 运行")

# 启动预算（秒）：切换用户、进入工作目录、打开日志文件必须在这么久内完成
LAUNCH_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def service(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    svc = Service(make_settings(database_url, launch_timeout=LAUNCH_TIMEOUT))
    yield svc
    svc.close()


class Users:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b, self.group = f"cdta{tag}", f"cdtb{tag}", f"cdtg{tag}"
        self.base = Path(tempfile.mkdtemp(prefix="cdt-runas-", dir="/tmp"))
        self.base.chmod(0o755)


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    """两个真实用户（A 另属一个附加组）与各自的目录；结束时删除。"""
    u = Users()
    subprocess.run(["groupadd", u.group], check=True)
    try:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-G", u.group, u.a], check=True)
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", u.b], check=True)
        a, b = pwd.getpwnam(u.a), pwd.getpwnam(u.b)
        for name, entry, mode in (("a", a, 0o755), ("b", b, 0o700)):
            d = u.base / name
            d.mkdir()
            os.chown(d, entry.pw_uid, entry.pw_gid)
            d.chmod(mode)
        secret = u.base / "b" / "secret.txt"
        secret.write_text("b-private-data\n")
        os.chown(secret, b.pw_uid, b.pw_gid)
        root_only = u.base / "root-only.txt"
        root_only.write_text("root-only-data\n")
        root_only.chmod(0o600)
        yield u
    finally:
        for name in (u.a, u.b):
            subprocess.run(["userdel", "-r", name], capture_output=True)
        subprocess.run(["groupdel", u.group], capture_output=True)
        shutil.rmtree(u.base, ignore_errors=True)


@pytest.fixture(scope="module")
def mapped(service: Service, users: Users) -> TestClient:
    """账户 acct-a → 用户 A，acct-b → 用户 B，要求每个账户都有映射。

    按用户运行时不能关闭认证（服务拒绝启动）：这个 API 开启认证，客户端带管理员令牌。"""
    settings = service.settings.model_copy(
        update={
            "account_users": {"acct-a": users.a, "acct-b": users.b, "ghost": "no-such-user-x"},
            "require_user_mapping": True,
            "auth": "on",
        }
    )
    _, admin = create_token(service.engine, account=None, admin=True, note="按用户运行的测试")
    return TestClient(
        create_app(Runtime(settings, service.engine, ClusterClient(settings))),
        headers={"Authorization": f"Bearer {admin}"},
    )


def submit(client: TestClient, script: str, **job: object) -> int:
    resp = client.post("/jobs/submit", json=job_payload(script, **job))
    assert resp.status_code == 201, resp.text
    return int(resp.json()["job_id"])


def test_job_runs_as_mapped_user(service: Service, users: Users, mapped: TestClient) -> None:
    run = users.base / "a" / "run"  # 尚不存在：由用户 A 自己创建
    job_id = submit(
        mapped,
        f'id -un; id -Gn; echo "HOME=$HOME USER=$USER LOGNAME=$LOGNAME"\n'
        f"cat {users.base}/b/secret.txt && echo LEAKED || echo DENIED\n"
        'echo "args=$#|$1|$2"\n',
        account="acct-a",
        current_working_directory=str(run),
        standard_output="logs/out.txt",
        standard_error="err.txt",
        argv=["x y", "$HOME"],  # 切换用户的引导把参数原样交给脚本
    )
    body = service.wait_state(job_id, "COMPLETED")
    out = body["job_log"]["stdout"].splitlines()
    a = pwd.getpwnam(users.a)
    assert out[0] == users.a
    assert users.group in out[1].split()  # initgroups：附加组也在
    assert out[2] == f"HOME={a.pw_dir} USER={users.a} LOGNAME={users.a}"
    assert out[3] == "DENIED"
    assert out[4] == "args=2|x y|$HOME"
    assert "b-private-data" not in body["job_log"]["stdout"]
    assert "Permission denied" in body["job_log"]["stderr"]
    for path in (run, run / "logs", run / "logs" / "out.txt", run / "err.txt"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (a.pw_uid, a.pw_gid), path


def test_user_cannot_write_outside_its_permissions(
    service: Service, users: Users, mapped: TestClient
) -> None:
    # 日志路径在 B 的私有目录里：A 无法创建，作业以清楚的原因失败，B 的目录不受影响
    job_id = submit(
        mapped,
        "echo hi",
        account="acct-a",
        current_working_directory=str(users.base / "a"),
        standard_output=str(users.base / "b" / "planted.txt"),
    )
    body = service.wait_state(job_id, "FAILED")
    assert "作业无法启动" in body["error_msg"] and "Permission denied" in body["error_msg"]
    assert not (users.base / "b" / "planted.txt").exists()


def test_log_swapped_for_symlink_is_not_read(
    service: Service, users: Users, mapped: TestClient
) -> None:
    wd = users.base / "a" / "swap"
    job_id = submit(
        mapped,
        f"echo hi; rm -f out.txt; ln -s {users.base}/root-only.txt out.txt",
        account="acct-a",
        current_working_directory=str(wd),
        standard_output="out.txt",
    )
    body = service.wait_state(job_id, "COMPLETED")
    assert (wd / "out.txt").is_symlink()
    assert "root-only-data" not in body["job_log"]["stdout"]
    assert "拒绝读取" in body["job_log"]["stdout"]


def test_cancel_kills_tree_of_other_user(
    service: Service, users: Users, mapped: TestClient
) -> None:
    wd = users.base / "a" / "long"
    job_id = submit(
        mapped,
        "setsid sleep 300 & echo $! > child.pid\nsleep 300\n",
        account="acct-a",
        current_working_directory=str(wd),
    )
    wait_for(lambda: (wd / "child.pid").exists() and (wd / "child.pid").read_text().strip(), 30)
    child = psutil.Process(int((wd / "child.pid").read_text()))
    assert child.uids().real == pwd.getpwnam(users.a).pw_uid
    with service.engine.connect() as conn:
        token = conn.execute(text("SELECT token FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
    assert child.pid in find_job_pids(token)  # root 能读别的用户的 /proc/*/environ
    assert mapped.post(f"/jobs/cancel/{job_id}").status_code == 200
    service.wait_state(job_id, "CANCELLED")
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 30)
    wait_for(lambda: find_job_pids(token) == [], 30)


def test_unmapped_or_unknown_user_refused(service: Service, mapped: TestClient) -> None:
    with service.engine.connect() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM jobs")).scalar()
    resp = mapped.post("/jobs/submit", json=job_payload("echo", account="unmapped"))
    assert resp.status_code == 403
    assert "没有映射到 Unix 用户" in resp.json()["detail"]
    resp = mapped.post("/jobs/submit", json=job_payload("echo", account="ghost"))
    assert resp.status_code == 422
    assert "no-such-user-x" in resp.json()["detail"]
    with service.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM jobs")).scalar() == before


def test_bootstrap_ignores_the_users_environment(
    service: Service, users: Users, mapped: TestClient
) -> None:
    """用户的 PATH 里放一个假的 dirname：引导脚本（重定向之前，标准错误还是交给执行器的管道）
    不受用户环境影响，从不执行它；用户的变量照样交给作业脚本。"""
    wd = users.base / "a" / "env"
    fake_bin = users.base / "a" / "fake-bin"
    hijacked = users.base / "a" / "hijacked"
    fake_bin.mkdir()
    dirname = fake_bin / "dirname"
    dirname.write_text(f'#!/bin/sh\ntouch {hijacked}\nexec /usr/bin/dirname "$@"\n')
    dirname.chmod(0o755)
    job = submit(
        mapped,
        'echo "MY_VAR=$MY_VAR"; echo "PATH=$PATH"',
        account="acct-a",
        current_working_directory=str(wd),
        environment={"PATH": f"{fake_bin}:/usr/bin:/bin", "MY_VAR": "hello world"},
    )
    body = service.wait_state(job, "COMPLETED", timeout=30)
    assert not hijacked.exists(), "引导脚本执行了用户 PATH 里的程序"
    assert "MY_VAR=hello world" in body["job_log"]["stdout"]
    # 用户的 PATH 原样保留，只在最前面加上 srun 所在的目录
    shim_dir = spool_dir() / "bin"
    assert f"PATH={shim_dir}:{fake_bin}:/usr/bin:/bin" in body["job_log"]["stdout"]


@pytest.mark.parametrize("name", ["BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "BASH_FUNC_ls"])
def test_shell_startup_variables_refused_at_submit(
    service: Service, mapped: TestClient, name: str
) -> None:
    with service.engine.connect() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM jobs")).scalar()
    resp = mapped.post(
        "/jobs/submit",
        json=job_payload("echo", account="acct-a", environment={name: "xtrace"}),
    )
    assert resp.status_code == 422, resp.text
    assert name in resp.json()["detail"]
    with service.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM jobs")).scalar() == before


def test_output_fifo_of_the_user_fails_the_job_at_once(
    service: Service, users: Users, mapped: TestClient
) -> None:
    """以作业用户身份打开日志的引导脚本遇到 FIFO（exec >"$2" 会一直等读者）：作业立即失败，
    说明指明路径、它不是普通文件。"""
    wd = users.base / "a" / "fifo"
    wd.mkdir()
    a = pwd.getpwnam(users.a)
    os.chown(wd, a.pw_uid, a.pw_gid)
    fifo = wd / "out.txt"
    os.mkfifo(fifo)
    os.chown(fifo, a.pw_uid, a.pw_gid)
    job = submit(
        mapped,
        "touch started",
        account="acct-a",
        current_working_directory=str(wd),
        standard_output="out.txt",
    )
    body = service.wait_state(job, "FAILED", timeout=30)
    assert f"输出文件 {fifo} 不是普通文件（FIFO）" in body["error_msg"]
    assert not (wd / "started").exists()
    wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")


def test_srun_tasks_run_as_the_mapped_user(
    service: Service, users: Users, mapped: TestClient
) -> None:
    """作业步的任务由以 root 运行的步服务启动，必须切换到作业的用户（含附加组），不能以 root 运行。"""
    job_id = submit(
        mapped,
        "srun bash -c 'echo $(id -un) $(id -Gn)'\nsrun -o planted.txt true; echo rc=$?\n",
        account="acct-a",
        tasks=2,
        current_working_directory=str(users.base / "a"),
    )
    body = service.wait_state(job_id, "COMPLETED")
    lines = body["job_log"]["stdout"].splitlines()
    assert len([line for line in lines if line.startswith(users.a + " ")]) == 2, lines
    assert all(users.group in line.split() for line in lines if line.startswith(users.a))
    assert "rc=1" in lines
    assert "以指定 Unix 用户运行的作业暂不支持 srun -o/-e" in body["job_log"]["stderr"]
    assert not (users.base / "a" / "planted.txt").exists()
