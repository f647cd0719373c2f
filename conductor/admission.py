"""提交时的安全检查（纯函数）：大小限制、路径限定在 WORK_ROOT 内、账户到 Unix 用户的映射。

任何一项不通过都在写入数据库之前拒绝，什么也不保存。
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from pathlib import Path

from conductor.errors import Forbidden, InvalidJobRequest
from conductor.settings import Settings


class PayloadTooLarge(InvalidJobRequest):
    """请求内容过大。"""


def _kib(n: int) -> str:
    return f"{n / 1024:g} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:g} MiB"


def check_limits(script: str, environment: Mapping[str, str], settings: Settings) -> None:
    """脚本大小、环境变量条数与单条大小。"""
    size = len(script.encode("utf-8", errors="surrogatepass"))
    if size > settings.max_script_bytes:
        raise PayloadTooLarge(
            "script",
            f"脚本过大：{size} 字节，上限 {settings.max_script_bytes} 字节"
            f"（{_kib(settings.max_script_bytes)}，CONDUCTOR_MAX_SCRIPT_BYTES）",
        )
    if len(environment) > settings.max_env_entries:
        raise InvalidJobRequest(
            "job.environment",
            f"环境变量过多：{len(environment)} 个，上限 {settings.max_env_entries} 个"
            "（CONDUCTOR_MAX_ENV_ENTRIES）",
        )
    for key, value in environment.items():
        entry = len(key.encode()) + len(value.encode("utf-8", errors="surrogatepass"))
        if entry > settings.max_env_bytes:
            raise InvalidJobRequest(
                "job.environment",
                f"环境变量 {key[:64]} 过大：{entry} 字节，单条上限 {settings.max_env_bytes} 字节"
                "（CONDUCTOR_MAX_ENV_BYTES）",
            )


def stored_bytes(script: str, environment: Mapping[str, str], *texts: str | None) -> int:
    """一个作业行要保存的主要内容的字节数（脚本、环境变量与各个文本字段）。"""
    size = len(script.encode("utf-8", errors="surrogatepass"))
    for key, value in environment.items():
        size += len(key.encode("utf-8", errors="surrogatepass"))
        size += len(value.encode("utf-8", errors="surrogatepass"))
    return size + sum(len(t.encode("utf-8", errors="surrogatepass")) for t in texts if t)


def check_request_total(rows: int, size: int, settings: Settings, field: str) -> None:
    """一次请求展开后（批量 × 数组任务）的总行数与总字节数：在构造任何作业之前检查。"""
    if rows > settings.max_request_jobs:
        raise InvalidJobRequest(
            field,
            f"一次请求展开后共 {rows} 个作业（批量的作业数 × 数组的任务数），"
            f"上限 {settings.max_request_jobs} 个（CONDUCTOR_MAX_REQUEST_JOBS）",
        )
    if size > settings.max_request_bytes:
        raise PayloadTooLarge(
            field,
            f"一次请求展开后要写入约 {size} 字节（数组的每个任务各存一份脚本与环境变量），"
            f"上限 {settings.max_request_bytes} 字节（{_kib(settings.max_request_bytes)}，"
            "CONDUCTOR_MAX_REQUEST_BYTES）",
        )


def resolve_existing(path: str) -> str:
    """把绝对路径规范化：已存在的前缀逐级解析符号链接（与内核打开文件时一致），
    不存在的部分按字面拼接。`..` 在解析符号链接之后才回退，所以 `link/..` 也不能逃出。"""
    return os.path.realpath(path)


def confine(path: str, root: Path, field: str) -> str:
    """path（绝对路径）解析后必须在 root 之内，否则 422；返回解析后的路径。"""
    real_root = os.path.realpath(root)
    real = resolve_existing(path)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        shown = path if real == os.path.normpath(path) else f"{path}（解析为 {real}）"
        raise InvalidJobRequest(
            field, f"路径 {shown} 不在允许的目录 {real_root} 之内（CONDUCTOR_WORK_ROOT）"
        )
    return real


def service_is_root() -> bool:
    """API 进程是否以 root 运行（作业默认以服务自身的用户运行，见 docs/security.md）。"""
    return os.geteuid() == 0


def resolve_run_as(account: str, settings: Settings, as_root: bool | None = None) -> str | None:
    """账户对应的 Unix 用户；未映射时为 None（以服务自身的用户运行）。

    要求映射时拒绝未映射的账户；服务以 root 运行（as_root，默认看本进程）时，未映射账户的作业
    会以 root 运行，除非运维明确允许（CONDUCTOR_ALLOW_ROOT_JOBS），否则同样拒绝。"""
    user = settings.account_users.get(account)
    if user is None:
        if settings.require_user_mapping:
            raise Forbidden(
                f"账户 {account} 没有映射到 Unix 用户，服务要求每个账户都映射"
                "（CONDUCTOR_ACCOUNT_USERS / CONDUCTOR_REQUIRE_USER_MAPPING）"
            )
        if (service_is_root() if as_root is None else as_root) and not settings.allow_root_jobs:
            raise Forbidden(
                f"账户 {account} 没有映射到 Unix 用户，而服务以 root 运行：它的作业会以 root 身份执行。"
                "请在 CONDUCTOR_ACCOUNT_USERS 里为它映射一个用户，或由运维明确允许作业以 root 运行"
                "（CONDUCTOR_ALLOW_ROOT_JOBS=true）"
            )
        return None
    try:
        pwd.getpwnam(user)
    except KeyError as exc:
        raise InvalidJobRequest(
            "job.account", f"账户 {account} 映射到的 Unix 用户 {user} 在本机不存在"
        ) from exc
    return user
