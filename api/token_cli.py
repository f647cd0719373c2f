"""`conductor token create|list|revoke`：管理 API 令牌。

与 `conductor doctor` 一样是在头节点上运行的管理工具：直接连接 PostgreSQL（谁能连数据库，
谁就是管理员），不经过 API。明文令牌只在创建时打印一次，数据库里只有摘要。
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from api.admin_options import DatabaseUrlOption, DataDirOption, admin_settings
from conductor.client.output import EXIT_UNAVAILABLE, err, lit, out

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

token_app = typer.Typer(
    help="管理 API 令牌（直接连接数据库，在服务所在主机上运行）", no_args_is_help=True
)


def _engine(data_dir: str | None, database_url: str | None) -> Engine:
    # SQLAlchemy 与 Alembic 只在真正执行时导入：`conductor` 的每个客户端命令都会导入本模块
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from conductor.db import make_engine
    from conductor.migrate import upgrade

    url = admin_settings(data_dir, database_url).database_url or ""
    try:
        upgrade(url)  # 幂等：服务尚未迁移过的库也能直接建令牌
    except DBAPIError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        reason = " ".join(str(exc.orig).split())[:300]
        hint = "服务用内嵌数据库时，请给出与 serve 相同的 --data-dir"
        err.print(lit(f"错误：无法连接数据库 {where}：{reason}（{hint}）", "red"), highlight=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    return make_engine(url, pool_size=1)


@token_app.command("create")
def create(
    account: Annotated[str | None, typer.Option("--account", "-A", help="令牌绑定的账户")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="管理员令牌：可看、可管全部作业")] = False,
    note: Annotated[str, typer.Option("--note", help="备注（谁在用、用在哪）")] = "",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """创建令牌；明文只显示这一次，请妥善保存（如写入 ~/.config/conductor/token，权限 600）。"""
    if admin == (account is not None):
        err.print("[red]错误：请指定 --account 账户 或 --admin 之一[/red]")
        raise typer.Exit(2)
    from conductor.auth import create_token

    engine = _engine(data_dir, database_url)
    try:
        row, plain = create_token(engine, account=account, admin=admin, note=note)
    except ValueError as exc:
        err.print(lit(f"错误：{exc}", "red"))
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    err.print(
        lit(
            f"已创建令牌 {row.id}（{'管理员' if admin else '账户 ' + str(account)}），明文只显示这一次："
        )
    )
    print(plain)  # 单独一行打到标准输出，便于 `> ~/.config/conductor/token`


@token_app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="包括已吊销的令牌")] = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """列出令牌（只显示前缀，不显示明文）。"""
    from conductor.auth import list_tokens
    from conductor.timefmt import iso_utc

    engine = _engine(data_dir, database_url)
    try:
        rows = list_tokens(engine, include_revoked=all_)
    finally:
        engine.dispose()
    table = Table("ID", "前缀", "账户", "管理员", "备注", "创建时间", "吊销时间")
    for r in rows:
        table.add_row(
            *map(
                lit,
                (
                    r.id,
                    r.prefix + "…",
                    r.account,
                    "是" if r.is_admin else "",
                    r.note,  # 备注与账户名由运维写，可能有 [ ]：原样显示
                    iso_utc(r.created_at),
                    iso_utc(r.revoked_at),
                ),
            )
        )
    out.print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[int, typer.Argument(help="令牌 ID（见 conductor token list）")],
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """吊销令牌（幂等），之后用它的请求立即得到 401。"""
    from conductor.auth import TokenNotFound, revoke_token

    engine = _engine(data_dir, database_url)
    try:
        revoke_token(engine, token_id)
    except TokenNotFound as exc:
        err.print(lit(f"错误：{exc.message}", "red"))
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    out.print(f"令牌 {token_id} 已吊销")


@token_app.command("login-url")
def login_url_command(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="服务的地址，如 http://head:8000；默认取 serve 的监听地址与端口"
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """生成网页的一次性登录地址（serve 启动时打印的那一个过期或用过之后）。"""
    from conductor.auth import LOGIN_TTL, create_login_code, login_url

    settings = admin_settings(data_dir, database_url)
    engine = _engine(data_dir, database_url)
    try:
        code = create_login_code(engine)
    finally:
        engine.dispose()
    minutes = int(LOGIN_TTL.total_seconds() // 60)
    err.print(lit(f"一次性登录地址（{minutes} 分钟内有效，只能用一次）："))
    if url:
        print(f"{url.rstrip('/')}/ui#login={code}")
    else:
        print(login_url(settings.host, settings.port, code))
