"""本机命令行的令牌文件：$XDG_CONFIG_HOME/conductor/token（默认 ~/.config/conductor/token）。

`conductor serve` 第一次启动时为自己的用户写入一个管理员令牌，本机的 conductor 命令从这里读取。
只用标准库：命令行客户端启动时导入它，不能带上数据库驱动。
"""

from __future__ import annotations

import os
from pathlib import Path


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
