"""客户端命令共用的选项与“取得客户端”：每个命令拿一个 ConductorClient，调用它，渲染结果。

`--url` 与 `--json` 写在这里一次，各命令引用同一个定义；它们仍是各命令自己的选项
（`conductor queue --url …`），与以前的用法一致。
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from conductor.client.errors import ClientError
from conductor.client.output import exit_code, fail

if TYPE_CHECKING:
    from conductor.client.sdk import ConductorClient

UrlOption = Annotated[str, typer.Option("--url", envvar="CONDUCTOR_URL", help="Conductor API 地址")]
JsonOption = Annotated[bool, typer.Option("--json", help="输出 JSON，便于脚本处理")]


@contextmanager
def connect(url: str) -> Iterator[ConductorClient]:
    """给命令一个客户端；SDK 的错误在这里变成一行中文错误与退出码 1 或 3。"""
    # httpx 只在真正发请求时导入：`--help` 与用法错误不付这个代价
    from conductor.client.sdk import ConductorClient

    try:
        with ConductorClient(url) as client:
            yield client
    except ClientError as exc:
        fail(exc.message, exit_code(exc))
