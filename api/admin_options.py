"""管理命令（serve、doctor、retire-actors、token）共用的选项：与 serve 找到同一个数据库与 Ray。

本模块在 `conductor` 启动时就被导入（选项要出现在帮助里），所以 Settings 在用到时才导入：
pydantic-settings 约 0.1 秒，客户端命令不必付。
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from conductor.settings import Settings

DataDirOption = Annotated[
    str | None,
    typer.Option("--data-dir", help="数据目录（内嵌 PostgreSQL 与日志），与 serve 的相同"),
]
DatabaseUrlOption = Annotated[
    str | None, typer.Option("--database-url", help="PostgreSQL 地址，默认同 serve")
]
RayAddressOption = Annotated[
    str | None, typer.Option("--ray-address", help="Ray 集群地址，默认同 serve")
]


def admin_settings(
    data_dir: str | None, database_url: str | None = None, ray_address: str | None = None
) -> Settings:
    """命令行给的地址优先，其余按 serve 的规则（`Settings.resolved`）补全。"""
    from conductor.settings import Settings, get_settings

    base = get_settings()
    if data_dir is not None:
        base = Settings(**{**base.model_dump(), "data_dir": data_dir})
    given = {"database_url": database_url, "ray_address": ray_address}
    return base.model_copy(update={k: v for k, v in given.items() if v}).resolved()
