"""命令行的输出：两个 Rich 控制台、原样显示的文字、一行中文错误与约定的退出码。"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from conductor.client.errors import ClientError, RequestRejected
from conductor.client.rows import STATE_STYLES, lit

__all__ = ["STATE_STYLES", "err", "exit_code", "fail", "lit", "out"]

# 退出码：脚本可据此区分“请求被拒绝”与“服务连不上”
EXIT_OK = 0
EXIT_REJECTED = 1  # 服务拒绝了请求：作业不存在、参数无效（HTTP 4xx），或部分作业取消失败
EXIT_USAGE = 2  # 用法错误：选项或 #SBATCH 指令无效、脚本读不了（typer 的用法错误也是 2）
EXIT_UNAVAILABLE = 3  # 连不上服务，或服务暂时不可用（HTTP 5xx）

out = Console()
# 错误只占一行：不按终端宽度折行
err = Console(stderr=True, soft_wrap=True)


def exit_code(exc: ClientError) -> int:
    """SDK 的错误对应的退出码：被拒绝为 1，连不上或服务不可用为 3。"""
    return EXIT_REJECTED if isinstance(exc, RequestRejected) else EXIT_UNAVAILABLE


def fail(message: str, code: int) -> NoReturn:
    """一行中文错误，按约定的退出码退出。"""
    err.print(lit(f"错误：{message}", "red"), highlight=False)
    raise typer.Exit(code)
