"""`conductor logs`：输出作业日志；-f 时边运行边输出，作业结束后报告终态。"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from conductor.client import DEFAULT_URL
from conductor.client.jobs import JobIdArgument
from conductor.client.options import UrlOption, connect
from conductor.client.output import err, lit


def logs(
    job_id: JobIdArgument,
    stderr: Annotated[bool, typer.Option("--stderr", help="看标准错误（默认标准输出）")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="跟随输出，直到作业结束且日志读完")
    ] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """输出作业日志；-f 时边运行边输出，作业结束后退出。排队中会显示等待进度。"""
    stream = "stderr" if stderr else "stdout"
    with connect(url) as client:
        if not follow:
            chunk = client.logs(job_id, stream)
            sys.stdout.buffer.write(chunk.content)
            sys.stdout.flush()
            if not chunk.content and chunk.state == "PENDING":
                err.print(lit(f"作业 {job_id} 仍在排队，还没有日志；用 -f 等待并跟随输出"))
            return
        try:
            with client.follow_logs(job_id, stream) as live:
                waiting = None
                if live.state == "PENDING":
                    waiting = err.status(lit(f"作业 {job_id} 排队中，等待开始运行…"))
                    waiting.start()
                try:
                    for data in live.chunks:
                        if waiting is not None:
                            waiting.stop()
                            waiting = None
                        sys.stdout.buffer.write(data)
                        sys.stdout.flush()
                finally:
                    if waiting is not None:
                        waiting.stop()
        except KeyboardInterrupt:
            raise typer.Exit(130) from None  # Ctrl-C 只停止跟随，作业照常运行
        final = client.query(job_id)
    err.print(
        lit(f"作业 {job_id} 已结束：{final['state']}（退出码 {final['detail']['exit_code']}）")
    )
