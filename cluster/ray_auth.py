"""Ray 的令牌认证：用 Ray 自己的机制（RAY_AUTH_MODE、~/.ray/auth_token、RAY_AUTH_TOKEN_PATH）。

本服务启动的本地 Ray 集群总是开启令牌认证；令牌不存在时在 Ray 的默认位置生成（权限 0600），
连接集群的每个进程（API 进程、conductor doctor、基准、测试）从同一位置读到它。
本模块不导入 Ray：监督进程与客户端命令也用它，而它们不该为此付出导入 Ray 的时间。
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path

from conductor.tokenfile import create_private

MODE_VAR = "RAY_AUTH_MODE"
TOKEN_VAR = "RAY_AUTH_TOKEN"
PATH_VAR = "RAY_AUTH_TOKEN_PATH"


class RayTokenError(Exception):
    """Ray 令牌文件不可用（无法创建、为空、不是普通文件）。"""


def token_path() -> Path:
    """Ray 读取令牌的文件：RAY_AUTH_TOKEN_PATH，否则 ~/.ray/auth_token（同 Ray 的 C++ 加载器）。"""
    custom = os.environ.get(PATH_VAR, "").strip()
    return Path(custom).expanduser() if custom else Path.home() / ".ray" / "auth_token"


def _mode() -> str | None:
    value = os.environ.get(MODE_VAR, "").strip().lower()
    return value or None


def _set_token_mode() -> None:
    """本进程与之后启动的子进程都以令牌模式连接。

    Ray 在第一次读取配置时缓存认证模式：已导入 Ray 的进程要让它重新读一次（Ray 自己开启令牌时也这样做）。"""
    os.environ[MODE_VAR] = "token"
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")


def ensure_cluster_token() -> str | None:
    """为本服务启动的本地 Ray 集群准备令牌，返回令牌所在（给日志用）；显式关闭认证时返回 None。

    已有的令牌（环境变量 RAY_AUTH_TOKEN 或令牌文件）原样使用；都没有时新建令牌文件
    （tokenfile.create_private：0600、不覆盖也不跟随别人的文件）。"""
    if _mode() not in (None, "token"):
        return None
    _set_token_mode()
    if os.environ.get(TOKEN_VAR, "").strip():
        return f"环境变量 {TOKEN_VAR}"
    path = token_path()
    try:
        f = create_private(path)
    except OSError as exc:
        raise RayTokenError(f"无法创建 Ray 令牌文件 {path}：{exc.strerror or exc}") from exc
    if f is None:
        _check_existing(path)
        return str(path)
    with f:
        f.write(secrets.token_hex(32))  # 与 `ray get-auth-token --generate` 相同：256 位随机数
    return str(path)


def _check_existing(path: Path) -> None:
    """已有的令牌文件必须是非空的普通文件；权限比 0600 宽时收紧（只在文件属于自己时）。"""
    try:
        st = path.stat()
    except OSError as exc:
        raise RayTokenError(f"无法读取 Ray 令牌文件 {path}：{exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise RayTokenError(f"Ray 令牌文件 {path} 不是普通文件")
    if st.st_size == 0:
        raise RayTokenError(f"Ray 令牌文件 {path} 是空的：删除它让服务重新生成，或放入集群的令牌")
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)


def use_token_if_available() -> bool:
    """连接已有集群的进程：未显式设置 RAY_AUTH_MODE 时，有令牌就以令牌模式连接。

    Ray 对显式地址从不自动开启令牌；开启了认证的集群却会拒绝不带令牌的连接，
    而不认证的集群接受带令牌的连接，所以“有令牌就带上”对两种集群都对。"""
    mode = _mode()
    if mode is not None:
        return mode == "token"
    if os.environ.get(TOKEN_VAR, "").strip() or token_path().is_file():
        _set_token_mode()
        return True
    return False


def missing_token_hint() -> str:
    """连接被拒、找不到令牌时给用户的一句说明。"""
    return (
        f"Ray 集群要求令牌认证：把集群的令牌放到 {token_path()}（权限 600），"
        f"或设置环境变量 {TOKEN_VAR} / {PATH_VAR}"
    )
