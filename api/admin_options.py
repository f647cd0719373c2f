"""管理命令（serve、doctor、retire-actors、token）共用的选项：与 serve 找到同一个数据库与 Ray。"""

from __future__ import annotations

from typing import Annotated

import typer

from conductor.settings import Settings, get_settings

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
    """按 serve 的规则补全地址：没给数据库就用数据目录下的内嵌 PostgreSQL，没给 Ray 就用本地头节点。"""
    base = get_settings()
    if data_dir is not None:
        base = Settings(**{**base.model_dump(), "data_dir": data_dir})
    return base.model_copy(
        update={
            "database_url": database_url or base.database_url or base.embedded_database_url(),
            "ray_address": ray_address or base.ray_address or f"127.0.0.1:{base.ray_port}",
        }
    )
