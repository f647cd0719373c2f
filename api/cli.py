"""命令行入口 `conductor`：conductor.client 的客户端命令，加上 serve、doctor、retire-actors 与 token。

客户端命令（submit、query、queue…）只导入 conductor.client：`conductor queue --help` 不导入
Ray、FastAPI、SQLAlchemy 与 pydantic-settings（tests/unit/test_client_imports.py 检查）。
serve、doctor、retire-actors、token 的实现与 Settings 在命令真正执行时才导入。
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.text import Text

from api.admin_options import (
    DatabaseUrlOption,
    DataDirOption,
    RayAddressOption,
    admin_settings,
)
from api.token_cli import token_app
from conductor.client.cli import app
from conductor.client.output import err, lit, out

app.add_typer(token_app, name="token")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="API 监听地址")] = None,
    port: Annotated[int | None, typer.Option(help="API 监听端口")] = None,
    data_dir: DataDirOption = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", help="本地 Ray 的逻辑 CPU 数，默认本机核数")
    ] = None,
    num_gpus: Annotated[
        int | None,
        typer.Option("--num-gpus", help="本地 Ray 的逻辑 GPU 数，默认为 Ray 探测到的数目"),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="使用已有的 PostgreSQL")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="连接已有的 Ray 集群（HOST:PORT）")
    ] = None,
) -> None:
    """运行整个服务：PostgreSQL（内嵌或外部）、Ray（本地或外部）、调度器与 API。"""
    from conductor.settings import Settings, get_settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {
        "host": host,
        "port": port,
        "data_dir": data_dir,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "database_url": database_url,
        "ray_address": ray_address,
    }
    merged = {
        **get_settings().model_dump(),
        **{k: v for k, v in overrides.items() if v is not None},
    }
    from api.server import run  # 导入 Ray：只有真正启动服务时才付这个代价

    raise typer.Exit(run(Settings(**merged)))


@app.command()
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="修复能安全修复的问题")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """检查一致性：数据库、Ray、调度器、占用资源的作业。发现问题时以非零码退出。"""
    from cluster.doctor import run_checks

    findings = run_checks(admin_settings(data_dir, database_url, ray_address), fix)
    for f in findings:
        mark = lit("✔", "green") if f.ok else lit("✚", "yellow") if f.fixed else lit("✘", "red")
        # 消息里有作业名等用户写的东西：原样显示，不当作 Rich 标记
        (out if f.ok or f.fixed else err).print(Text.assemble(mark, " ", lit(f.message)))
    remaining = [f for f in findings if not f.ok and not f.fixed]
    if remaining:
        err.print(f"[red]发现 {len(remaining)} 个未解决的问题[/red]")
        raise typer.Exit(1)
    out.print("未发现未解决的问题")


@app.command("retire-actors")
def retire_actors_command(
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    ray_address: RayAddressOption = None,
) -> None:
    """升级用：永久停止调度器并停止空闲的节点代理，运行中的作业不受影响。

    之后重启 conductor serve，新的 API 进程以新安装的代码重建调度器与代理（见 docs/deployment.md）。
    """
    from cluster.bootstrap import connect_ray
    from cluster.upgrade import retire_actors

    settings = admin_settings(data_dir, database_url, ray_address)
    connect_ray(settings, timeout=15)
    report = retire_actors(settings)
    out.print("调度器已永久停止" if report.scheduler_stopped else "没有运行中的调度器")
    out.print(f"已停止 {len(report.retired)} 个空闲的节点代理")
    for node_id, jobs in sorted(report.kept.items()):
        out.print(f"保留节点 {node_id} 的代理（仍有作业 {jobs}，继续以旧代码运行到结束）")


def main() -> None:
    app(prog_name="conductor", args=sys.argv[1:])
