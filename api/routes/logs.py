"""GET /jobs/{id}/logs：读取或跟随作业的 stdout/stderr（新增接口）。

日志文件在运行作业的节点上，经该节点的代理按偏移读取，从不假设共享文件系统。
跟随（follow=true）时边运行边输出；作业进入终态且文件读完后结束。
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from api.auth import load_visible_job
from api.deps import JobId, PrincipalDep, RuntimeDep
from api.runtime import Runtime
from conductor.auth import Principal, token_active
from conductor.errors import ClusterUnavailable, LogUnreadable
from conductor.models import Job
from conductor.states import JobState

router = APIRouter()

# 一次读取的上限；不跟随时也是返回内容的上限（超出则只给最后这么多）
CHUNK = 1024 * 1024
# 跟随时没有新内容的轮询间隔（秒）
POLL = 0.3
# 跟随时每隔这么多秒复查一次令牌：吊销的令牌不能让已打开的流一直流下去
TOKEN_RECHECK = 5.0
TEXT = "text/plain; charset=utf-8"


class LogStream(StrEnum):
    stdout = "stdout"
    stderr = "stderr"


def _path(job: Job, stream: LogStream) -> str:
    return job.stdout_path if stream is LogStream.stdout else job.stderr_path


LOG_RESPONSES: dict[int | str, dict] = {
    200: {
        "description": "日志内容（纯文本）。响应头 X-Job-State 为作业状态，"
        "X-Log-Offset 为下一次读取的偏移，X-Log-Size 为文件当前字节数。",
        "content": {TEXT: {"example": "hello from 42\n"}},
    },
    404: {
        "description": "作业不存在",
        "content": {"application/json": {"example": {"detail": "作业 42 不存在"}}},
    },
    409: {
        "description": "日志文件无法读取（服务的用户无权读取，或不是能按偏移读取的普通文件）",
        "content": {
            "application/json": {
                "example": {
                    "detail": "无法读取日志文件 /data/x.out：服务的用户无权读取（Permission denied）"
                }
            }
        },
    },
    503: {
        "description": "运行作业的节点不可达",
        "content": {
            "application/json": {"example": {"detail": "运行作业的节点不可达，无法读取日志：…"}}
        },
    },
}


@router.get(
    "/jobs/{job_id}/logs",
    response_class=Response,
    responses=LOG_RESPONSES,
    summary="读取或跟随作业日志",
)
async def job_logs(
    job_id: JobId,
    principal: PrincipalDep,
    rt: RuntimeDep,
    stream: Annotated[LogStream, Query(description="读取哪个输出：stdout 或 stderr")] = (
        LogStream.stdout
    ),
    follow: Annotated[
        bool, Query(description="为 true 时持续输出新内容，直到作业结束且文件读完")
    ] = False,
    offset: Annotated[
        int | None,
        Query(ge=0, description="从该字节偏移开始读；省略时不跟随读最后 1 MB，跟随从头读"),
    ] = None,
) -> Response:
    """作业日志（新增接口）。只读该作业自己的输出文件；排队中的作业返回空内容。"""
    job = await asyncio.to_thread(load_visible_job, rt, principal, job_id)
    path = _path(job, stream)
    if follow:
        return StreamingResponse(
            _follow(rt, principal, str(job.id), path, offset or 0),
            media_type=TEXT,
            headers={"X-Job-State": job.state, "Cache-Control": "no-cache"},
        )
    data, start, size = b"", offset or 0, 0
    if job.node_id is not None and job.state != JobState.PENDING:
        chunk = await asyncio.to_thread(
            rt.cluster.read_log_range, job.node_id, path, offset, CHUNK, job.run_as_user
        )
        data, start, size = chunk["data"] or b"", chunk["offset"], chunk["size"]
        if chunk.get("error"):
            # 日志不是普通文件（作业把它换成了 FIFO 等）：说明代替内容，偏移不前进
            return Response(
                content=f"[无法读取日志：{chunk['error']}]\n".encode(),
                media_type=TEXT,
                headers={"X-Job-State": job.state, "X-Log-Offset": str(start), "X-Log-Size": "0"},
            )
    return Response(
        content=data,
        media_type=TEXT,
        headers={
            "X-Job-State": job.state,
            "X-Log-Offset": str(start + len(data)),
            "X-Log-Size": str(size),
        },
    )


async def _follow(
    rt: Runtime, principal: Principal, ref: str, path: str, offset: int
) -> AsyncIterator[bytes]:
    """先读状态再读文件：读到终态之后文件仍无新内容，说明已经读完。

    用令牌认证的流每 TOKEN_RECHECK 秒复查令牌，令牌被吊销就说明原因并结束（作业不受影响）。"""
    position = offset
    loop = asyncio.get_running_loop()
    checked = loop.time()
    while True:
        if principal.token_id is not None and loop.time() - checked >= TOKEN_RECHECK:
            if not await asyncio.to_thread(token_active, rt.engine, principal.token_id):
                yield "\n[API 令牌已被吊销，停止跟随日志]\n".encode()
                return
            checked = loop.time()
        job = await asyncio.to_thread(load_visible_job, rt, principal, ref)
        terminal = JobState(job.state).is_terminal
        if job.node_id is None or job.state == JobState.PENDING:  # 还在排队（或排队中被取消）
            if terminal:
                return
            await asyncio.sleep(POLL)
            continue
        try:
            chunk = await asyncio.to_thread(
                rt.cluster.read_log_range, job.node_id, path, position, CHUNK, job.run_as_user
            )
        except (ClusterUnavailable, LogUnreadable) as exc:
            yield f"\n[无法继续读取日志：{exc.message}]\n".encode()
            return
        if chunk.get("error"):
            yield f"\n[无法继续读取日志：{chunk['error']}]\n".encode()
            return
        data = chunk["data"] or b""
        if data:
            position = chunk["offset"] + len(data)
            yield data
            continue
        if terminal:
            return
        await asyncio.sleep(POLL)
