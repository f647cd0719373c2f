"""节点的命令：drain（排空）与 resume（恢复），仅管理员；同 scontrol update NodeName=… State=DRAIN|RESUME。"""

from __future__ import annotations

from typing import Annotated

import typer

from conductor.client import DEFAULT_URL
from conductor.client.options import UrlOption, connect
from conductor.client.output import lit, out

NodeArgument = Annotated[str, typer.Argument(help="节点名（conductor info、sinfo -N 里的名字）")]


def drain(
    node: NodeArgument,
    reason: Annotated[str, typer.Option("--reason", "-r", help="排空的原因（必填，同 Slurm）")],
    url: UrlOption = DEFAULT_URL,
) -> None:
    """排空节点：不再往上放新作业，运行中的照常跑完，之后显示 drained。仅管理员。"""
    with connect(url) as client:
        body = client.drain(node, reason)
    out.print(lit(body["msg"]), highlight=False)


def resume(node: NodeArgument, url: UrlOption = DEFAULT_URL) -> None:
    """恢复排空的节点：重新接作业。仅管理员。"""
    with connect(url) as client:
        body = client.resume(node)
    out.print(lit(body["msg"]), highlight=False)
