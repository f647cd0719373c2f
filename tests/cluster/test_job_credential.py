"""作业凭据：运行中的作业里的 CONDUCTOR_URL / CONDUCTOR_TOKEN（真实 Ray、真实 PostgreSQL、真实 HTTP）。

单独一个模块：认证开启的服务独占本模块（同 test_security），不与认证关闭的测试服务同时存在。
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ray.cluster_utils import Cluster

from cluster import service_url
from conductor.auth import create_token
from tests.cluster.conftest import Service, make_settings
from tests.cluster.live_api import LiveApi


@pytest.fixture(scope="module")
def secure(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    svc = Service(make_settings(database_url, auth="on"))
    yield svc
    svc.close()


CALLER = r"""
import json, os, sys, urllib.request, urllib.error
url, token = os.environ["CONDUCTOR_URL"], os.environ["CONDUCTOR_TOKEN"]
open("token.txt", "w").write(token)
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
me = os.environ["SLURM_JOB_ID"]
out = {}
out["list"] = call("GET", "/jobs")
out["query_self"] = call("GET", "/jobs/query/" + me)[0]
out["query_other"] = call("GET", "/jobs/query/" + sys.argv[1])[0]
out["cancel_other"] = call("POST", "/jobs/cancel/" + sys.argv[1])[0]
out["cancel_sibling"] = call("POST", "/jobs/cancel/" + sys.argv[2])[0]
job = {"account": "other", "current_working_directory": "/tmp", "standard_output": "o",
       "standard_error": "e", "name": "n", "partition": "default"}
out["submit_other"] = call("POST", "/jobs/submit", {"job": job, "script": "true\n"})[0]
print(json.dumps(out))
"""


def test_job_credential_inside_a_running_job(secure: Service, tmp_path: Path) -> None:
    """作业里的 CONDUCTOR_URL / CONDUCTOR_TOKEN 直接可用：能列、查、取消本账户的作业；别的账户的作业
    视同不存在（404），以别的账户提交 403；作业结束后同一凭据 401。"""
    live = LiveApi(secure)
    try:
        service_url.publish(live.url, secure.settings.namespace)
        _, admin = create_token(secure.engine, account=None, admin=True, note="测试")
        secure.client.headers["Authorization"] = f"Bearer {admin}"
        other = secure.submit("sleep 300\n", account="other", hold=True)
        sibling = secure.submit("sleep 300\n", account="mine", hold=True)
        (tmp_path / "caller.py").write_text(CALLER)
        job = secure.submit(
            f"python3 caller.py {other} {sibling}\n",
            account="mine",
            current_working_directory=str(tmp_path),
        )
        secure.wait_state(job, "COMPLETED", "FAILED", timeout=90)
        assert (tmp_path / "out.txt").exists(), secure.row(job)
        out_text = (tmp_path / "out.txt").read_text()
        assert secure.state(job) == "COMPLETED", (out_text, (tmp_path / "err.txt").read_text())
        out = json.loads(out_text.strip().splitlines()[-1])
        status, listing = out["list"]
        assert status == 200
        assert {j["account"] for j in listing["jobs"]} == {"mine"}
        assert {j["job_id"] for j in listing["jobs"]} >= {job, sibling}
        assert out["query_self"] == 200
        assert out["query_other"] == 404 and out["cancel_other"] == 404
        assert out["cancel_sibling"] == 200 and secure.state(sibling) == "CANCELLED"
        assert out["submit_other"] == 403
        assert secure.state(other) == "PENDING"
        token = (tmp_path / "token.txt").read_text()
        assert token.startswith(f"cdj_{job}_")
        resp = httpx.get(f"{live.url}/jobs", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401
    finally:
        live.close()
