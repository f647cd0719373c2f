"""Slurm 替身命令的标准库 HTTP 客户端，对一个真实的本地 HTTP 服务（http.server，线程里运行）：
令牌头、JSON 请求体、4xx 的 detail、按 next_cursor 翻页、连不上。"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conductor.client.slurm.http import Api, ApiError, Unreachable
from harness.serve import free_port

SEEN: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        SEEN.append({"path": self.path, "auth": self.headers.get("Authorization")})
        if self.path.startswith("/jobs?"):
            page = 2 if "cursor=5" in self.path else 1
            jobs = [{"job_id": 9}, {"job_id": 5}] if page == 1 else [{"job_id": 2}]
            self._reply(200, {"jobs": jobs, "next_cursor": "5" if page == 1 else None})
        elif self.path == "/missing":
            self._reply(404, {"detail": "作业 99 不存在"})
        else:
            self._reply(422, {"detail": [{"loc": ["body", "job", "time_limit"], "msg": "无效"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        SEEN.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self._reply(201, {"job_id": "7"})


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    SEEN.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_pages_follow_next_cursor_and_send_the_token(server: str) -> None:
    with Api(server, token="tok") as api:
        ids = [j["job_id"] for j in api.jobs([("state", "PENDING"), ("state", "RUNNING")])]
    assert ids == [9, 5, 2]
    assert SEEN[0]["path"] == "/jobs?state=PENDING&state=RUNNING&limit=1000"
    assert SEEN[1]["path"] == "/jobs?state=PENDING&state=RUNNING&limit=1000&cursor=5"
    assert {s["auth"] for s in SEEN} == {"Bearer tok"}


def test_post_sends_json_and_errors_carry_the_detail(server: str) -> None:
    with Api(server, token="tok") as api:
        assert api.request("POST", "/jobs/submit", body={"job": {"name": "x"}}) == {"job_id": "7"}
        with pytest.raises(ApiError) as missing:
            api.request("GET", "/missing")
        with pytest.raises(ApiError) as invalid:
            api.request("GET", "/other")
    assert SEEN[0]["body"] == {"job": {"name": "x"}}
    assert (missing.value.status, missing.value.detail) == (404, "作业 99 不存在")
    assert (invalid.value.status, invalid.value.detail) == (422, "job.time_limit: 无效")


def test_unreachable_and_bad_url() -> None:
    with pytest.raises(Unreachable, match="无法连接 Conductor 服务"):
        Api(f"http://127.0.0.1:{free_port()}", token="t").request("GET", "/jobs")
    with pytest.raises(Unreachable, match="服务地址无效"):
        Api("ftp://nowhere", token="t")


def test_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    monkeypatch.setenv("CONDUCTOR_URL", server + "/")
    monkeypatch.setenv("CONDUCTOR_TOKEN", "from-env")
    with Api() as api:
        list(api.jobs())
    assert SEEN[0]["auth"] == "Bearer from-env"
