"""客户端用的 API 令牌从哪里来：环境变量优先，其次本机的令牌文件。"""

from __future__ import annotations

import os

from conductor.tokenfile import read_token, token_path


def api_token() -> str | None:
    """API 令牌：环境变量 CONDUCTOR_TOKEN 优先，其次 ~/.config/conductor/token（首行；
    `conductor serve` 第一次启动时为本机用户写入）。"""
    token = os.environ.get("CONDUCTOR_TOKEN", "").strip()
    if token:
        return token
    return read_token(token_path())
