"""Python SDK：`ConductorClient` 经 REST API 提交、查询、列出、取消作业，读日志与集群总览。

HTTP 只在这里（httpx）。失败统一抛 `RequestRejected`（HTTP 4xx）或 `ServiceUnavailable`
（连不上、HTTP 5xx），消息是给人看的一行中文；命令行与 Python 用户用的是同一个客户端。

    from conductor.client import ConductorClient

    with ConductorClient("http://127.0.0.1:8000") as client:
        job_id = client.submit({"job": {...}, "script": "#!/bin/bash\\necho hi"})["job_id"]
        print(client.query(str(job_id))["state"])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from conductor.client.defaults import DEFAULT_URL
from conductor.client.errors import RequestRejected, ServiceUnavailable
from conductor.client.token import api_token

TIMEOUT = 30.0


@dataclass(frozen=True)
class LogChunk:
    """一次读到的日志：内容，以及服务在 X-Job-State 头里给出的作业状态。"""

    content: bytes
    state: str | None


@dataclass(frozen=True)
class LogStream:
    """跟随中的日志：开始时的作业状态，与陆续到达的字节块（作业结束且读完时结束）。"""

    state: str | None
    chunks: Iterator[bytes]


class ConductorClient:
    """Conductor REST API 的客户端。token 为 None 时取 CONDUCTOR_TOKEN 或本机令牌文件。"""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None) -> None:
        self.url = url
        token = token or api_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=TIMEOUT)

    def __enter__(self) -> ConductorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # —— 作业 ——

    def submit(self, payload: dict[str, Any]) -> dict[str, Any]:
        """提交作业（`POST /jobs/submit`，请求体见 CONTRACT.md）；返回含 job_id 的应答。"""
        return self._call("POST", "/jobs/submit", json=payload)

    def query(self, job_id: str) -> dict[str, Any]:
        """作业的状态、时间、退出码与日志；数组任务写作 12_3。"""
        return self._call("GET", f"/jobs/query/{job_id}")

    def jobs(
        self,
        *,
        states: Sequence[str] = (),
        account: str | None = None,
        partition: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """列出作业（最新在前）；未给的条件不过滤。"""
        params: dict[str, Any] = {"limit": limit}
        if states:
            params["state"] = [s.upper() for s in states]
        for key, value in (("account", account), ("partition", partition), ("name", name)):
            if value:
                params[key] = value
        return self._call("GET", "/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """取消作业（幂等）；应答的 msg 说明结果。"""
        return self._call("POST", f"/jobs/cancel/{job_id}")

    def logs(self, job_id: str, stream: str = "stdout") -> LogChunk:
        """读作业日志的当前内容（stream 为 stdout 或 stderr）。"""
        try:
            resp = self._http.get(self._logs_path(job_id), params={"stream": stream})
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"无法连接 Conductor 服务 {self.url}：{exc}") from exc
        _raise_for_status(resp)
        return LogChunk(resp.content, resp.headers.get("X-Job-State"))

    @contextmanager
    def follow_logs(self, job_id: str, stream: str = "stdout") -> Iterator[LogStream]:
        """跟随作业日志，直到作业结束且日志读完；连接中断时抛 ServiceUnavailable。"""
        params = {"stream": stream, "follow": "true"}
        try:
            with self._http.stream(
                "GET",
                self._logs_path(job_id),
                params=params,
                timeout=httpx.Timeout(TIMEOUT, read=None),  # 作业可能很久不输出：读不设超时
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                _raise_for_status(resp)
                yield LogStream(resp.headers.get("X-Job-State"), resp.iter_bytes())
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"与 Conductor 服务的连接中断 {self.url}：{exc}") from exc

    # —— 集群 ——

    def dashboard(self) -> dict[str, Any]:
        """集群总览：作业计数、各节点与分区的 CPU。"""
        return self._call("GET", "/dashboard")

    def drain(self, node_name: str, reason: str) -> dict[str, Any]:
        """排空节点（仅管理员）：不再接新作业，运行中的照常跑完。"""
        return self._call("POST", f"/nodes/{node_name}/drain", json={"reason": reason})

    def resume(self, node_name: str) -> dict[str, Any]:
        """恢复排空的节点（仅管理员）。"""
        return self._call("POST", f"/nodes/{node_name}/resume")

    def health(self) -> dict[str, Any]:
        """健康检查。某个组件不可用时服务答 503，但正文仍有各组件与 Ray 仪表盘地址：照样返回。"""
        try:
            resp = self._http.get("/health")
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"无法连接 Conductor 服务 {self.url}：{exc}") from exc
        if resp.status_code == 503:
            body = _json_body(resp)
            if "components" in body:
                return body
        _raise_for_status(resp)
        return _json_body(resp)

    # —— 内部 ——

    def _logs_path(self, job_id: str) -> str:
        return f"/jobs/{job_id}/logs"

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"无法连接 Conductor 服务 {self.url}：{exc}") from exc
        _raise_for_status(resp)
        return _json_body(resp)


def _json_body(resp: httpx.Response) -> dict[str, Any]:
    """应答正文；不是 JSON 对象时包成 {"detail": …}。"""
    try:
        body = resp.json()
    except ValueError:
        return {"detail": resp.text}
    return body if isinstance(body, dict) else {"detail": body}


def _raise_for_status(resp: httpx.Response) -> None:
    """4xx → RequestRejected，5xx → ServiceUnavailable；消息带状态码与服务给的 detail。"""
    if resp.status_code < 400:
        return
    body = _json_body(resp)
    detail = body.get("detail", body)
    if resp.status_code >= 500:
        raise ServiceUnavailable(f"服务不可用（HTTP {resp.status_code}）：{detail}")
    raise RequestRejected(f"（HTTP {resp.status_code}）{detail}")
