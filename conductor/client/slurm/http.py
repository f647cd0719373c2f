"""Slurm 替身命令用的极小 JSON 客户端（只用标准库 http.client）与 Slurm 风格的报错。

服务地址取环境变量 CONDUCTOR_URL（默认同 conductor/client/defaults.py），令牌取
conductor/client/token.py 的 api_token()。不用 httpx：单是导入它就要约 0.2 秒。
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import quote, urlencode, urlsplit

from conductor.client.defaults import DEFAULT_URL
from conductor.client.token import api_token

TIMEOUT = 30.0
PAGE = 1000  # GET /jobs 每页的上限


class ApiError(Exception):
    """服务答了 4xx/5xx：status 为状态码，detail 为服务给的说明。"""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Unreachable(Exception):
    """连不上服务。"""


def error(prog: str, message: str) -> None:
    """按 Slurm 的样子在标准错误上写一行：`prog: error: message`。"""
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()


def die(prog: str, message: str, code: int = 1) -> NoReturn:
    error(prog, message)
    raise SystemExit(code)


def perror(what: str, message: str, code: int = 1) -> NoReturn:
    """同 Slurm 的 slurm_perror：`what: message`，没有命令名前缀（脚本匹配这一行）。"""
    sys.stderr.write(f"{what}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _detail(body: Any) -> str:
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI 的 422：[{loc, msg}…]
            return "；".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg', '')}"
                if isinstance(d, dict)
                else str(d)
                for d in detail
            )
        return str(detail)
    return str(body)


class Api:
    """Conductor REST API：request() 返回解析后的 JSON；失败抛 ApiError 或 Unreachable。"""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or os.environ.get("CONDUCTOR_URL") or DEFAULT_URL).rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unreachable(f"服务地址无效：{self.url!r}（应如 http://127.0.0.1:8000）")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self._token = token or api_token()
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=TIMEOUT)
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        body: Any = None,
    ) -> Any:
        target = self._base + path
        if params:
            target += "?" + urlencode(params, doseq=True)
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):  # 保持连接被服务端关掉时重连一次
            conn = self._connection()
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2 or method not in ("GET",):
                    raise Unreachable(f"与 Conductor 服务 {self.url} 的连接中断") from None
            except OSError as exc:
                self.close()
                raise Unreachable(
                    f"无法连接 Conductor 服务 {self.url}：{exc.strerror or exc}"
                ) from None
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"detail": raw.decode(errors="replace")}
        if resp.status >= 400:
            raise ApiError(resp.status, _detail(parsed))
        return parsed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # —— 常用的几个接口 ——

    def jobs(self, params: Sequence[tuple[str, Any]] = ()) -> Iterator[dict[str, Any]]:
        """GET /jobs 的全部作业（最新在前），按 next_cursor 翻完所有页。"""
        cursor: str | None = None
        while True:
            query = [*params, ("limit", PAGE)]
            if cursor:
                query.append(("cursor", cursor))
            page = self.request("GET", "/jobs", query)
            yield from page.get("jobs", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def jobs_for(
        self, refs: Sequence[str], params: Sequence[tuple[str, Any]] = ()
    ) -> list[dict[str, Any]]:
        """引用（12、12_3、12.batch）所涉及的作业：12 本身（job_id）与以 12 为主作业号的数组任务
        （array_job_id），去重。服务端不认 job_id 参数时会多返回作业，调用方照样按引用过滤。"""
        if not refs:
            return list(self.jobs(params))
        bare = [r.split(".", 1)[0] for r in refs]
        bases = sorted({b.split("_", 1)[0] for b in bare}, key=int)
        queries = []
        plain = [b for b in bases if b in bare]
        if plain:
            queries.append([*params, *(("job_id", b) for b in plain)])
        queries += [[*params, ("array_job_id", b)] for b in bases]
        found: dict[int, dict[str, Any]] = {}
        for query in queries:
            for item in self.jobs(query):
                found.setdefault(int(item["job_id"]), item)
        return list(found.values())

    def job_path(self, job_id: str, action: str = "") -> str:
        return f"/jobs/{quote(job_id, safe='_')}{action}"


def connect(prog: str) -> Api:
    """按环境取得客户端；地址无效时以 Slurm 的样子报错退出。"""
    try:
        return Api()
    except Unreachable as exc:
        die(prog, str(exc))


def unreachable(prog: str, exc: Unreachable) -> NoReturn:
    die(prog, str(exc))


def entry(main: Callable[[list[str] | None], int]) -> NoReturn:
    """控制台脚本的入口：以 main 的返回值退出；Ctrl-C 为 130，读端关闭（| head）安静地退出。"""
    try:
        code = main(None)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # 读端已关：把 stdout 指到 /dev/null，免得解释器退出时刷新缓冲再报一次错
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 1
    sys.exit(code)
