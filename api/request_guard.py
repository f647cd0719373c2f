"""请求的硬性限制（ASGI 中间件）：请求体超过上限即 413，不把超大请求读入内存；
查询参数含 NUL 字符即 422（PostgreSQL 的字符串不能含 NUL，且没有正当用途）。"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """按 Content-Length 预先拒绝；没有 Content-Length（分块传输）时边读边计数。"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b""):
            await _respond(send, 422, "请求无效：查询参数不能包含 NUL 字符")
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send, declared)
                    return
        # 先把请求体读完（最多 max_bytes）再交给应用：超限时应用根本看不到这个请求。
        # 不能在应用读取途中抛异常——FastAPI 会把读取中的任何异常变成 400。
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # 客户端断开：交给应用按断开处理
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(send, received)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, size: int) -> None:
        await _respond(
            send,
            413,
            f"请求体过大：至少 {size} 字节，上限 {self.max_bytes} 字节（CONDUCTOR_MAX_BODY_BYTES）",
        )


async def _respond(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
