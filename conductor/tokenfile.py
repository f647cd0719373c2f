"""本机命令行的令牌文件：$XDG_CONFIG_HOME/conductor/token（默认 ~/.config/conductor/token）。

`conductor serve` 第一次启动时为自己的用户写入一个管理员令牌，本机的 conductor 命令从这里读取。
只用标准库：命令行客户端启动时导入它，不能带上数据库驱动。
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def token_path() -> Path:
    """令牌文件的位置（遵从 XDG_CONFIG_HOME）。"""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "conductor" / "token"


def read_token(path: Path | None = None) -> str | None:
    """令牌文件的首行；文件不存在或读不了时为 None。"""
    try:
        lines = (path or token_path()).read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError, UnicodeDecodeError):
        return None
    return (lines[0].strip() or None) if lines else None


def create_private(path: Path) -> IO[str] | None:
    """新建一个只有自己能读的文件（权限 0600，所在目录新建时 0700），返回供写入的文件；已存在时返回 None。

    O_EXCL | O_NOFOLLOW：已有的文件（包括别人事先放的符号链接）一律不动、不跟随。
    本机命令行的令牌与 Ray 的令牌（cluster/ray_auth.py）都这样创建。"""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return None
    return os.fdopen(fd, "w")
