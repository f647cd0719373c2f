"""命令行入口：在 conductor.cli 的客户端命令之上注册 serve 与 doctor（它们需要 Ray 与服务端代码）。"""

from __future__ import annotations

import os
import sys

# Ray 2.60 的新集群默认开启令牌认证（令牌在 ~/.ray/auth_token），而连接已有集群的进程必须显式声明，
# 且要在导入 ray 之前：这里明确开启，子进程（Ray 头节点、API 进程）继承；
# 需要关闭时由用户显式设置 RAY_AUTH_MODE=disabled。
os.environ.setdefault("RAY_AUTH_MODE", "token")
from typing import Annotated

import typer

from api.server import serve  # noqa: E402 - 须在设置 RAY_AUTH_MODE 之后导入
from api.token_cli import token_app
from cluster.bootstrap import connect_ray
from cluster.doctor import run_checks
from cluster.upgrade import retire_actors
from conductor.cli import app, err, out
from conductor.settings import Settings, get_settings

app.command()(serve)
app.add_typer(token_app, name="token")

# 运维命令（doctor、retire-actors）共用的连接选项
DatabaseUrlOption = Annotated[
    str | None, typer.Option("--database-url", help="PostgreSQL 地址，默认同 serve")
]
RayAddressOption = Annotated[
    str | None, typer.Option("--ray-address", help="Ray 集群地址，默认同 serve")
]


@app.command()
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="修复能安全修复的问题")] = False,
    database_url: DatabaseUrlOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """检查一致性：数据库、Ray、调度器、占用资源的作业。发现问题时以非零码退出。"""
    base = get_settings()
    settings = base.model_copy(
        update={
            "database_url": database_url or base.database_url or embedded_url(base),
            "ray_address": ray_address or base.ray_address or f"127.0.0.1:{base.ray_port}",
        }
    )
    findings = run_checks(settings, fix)
    for f in findings:
        mark = "[green]✔[/green]" if f.ok else ("[yellow]✚[/yellow]" if f.fixed else "[red]✘[/red]")
        (out if f.ok or f.fixed else err).print(f"{mark} {f.message}")
    remaining = [f for f in findings if not f.ok and not f.fixed]
    if remaining:
        err.print(f"[red]发现 {len(remaining)} 个未解决的问题[/red]")
        raise typer.Exit(1)
    out.print("未发现未解决的问题")


@app.command("retire-actors")
def retire_actors_command(
    database_url: DatabaseUrlOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """升级用：永久停止调度器并停止空闲的节点代理，运行中的作业不受影响。

    之后重启 conductor serve，新的 API 进程以新安装的代码重建调度器与代理（见 docs/deployment.md）。
    """
    base = get_settings()
    settings = base.model_copy(
        update={
            "database_url": database_url or base.database_url or embedded_url(base),
            "ray_address": ray_address or base.ray_address or f"127.0.0.1:{base.ray_port}",
        }
    )
    connect_ray(settings, timeout=15)
    report = retire_actors(settings)
    out.print("调度器已永久停止" if report.scheduler_stopped else "没有运行中的调度器")
    out.print(f"已停止 {len(report.retired)} 个空闲的节点代理")
    for node_id, jobs in sorted(report.kept.items()):
        out.print(f"保留节点 {node_id} 的代理（仍有作业 {jobs}，继续以旧代码运行到结束）")


def embedded_url(settings: Settings) -> str:
    """serve 的内嵌 PostgreSQL 在数据目录下监听 Unix 套接字。"""
    return f"postgresql://postgres:@/postgres?host={settings.data_dir / 'pg'}"


def main() -> None:
    app(prog_name="conductor", args=sys.argv[1:])
