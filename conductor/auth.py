"""API 令牌：生成、摘要存储、校验与吊销（纯领域逻辑，不依赖 fastapi）。

令牌是 256 位随机数，数据库只存 SHA-256 摘要：数据库泄露也拿不到可用的令牌。
高熵令牌不需要慢哈希（那是为低熵口令准备的）；按摘要查行后再做常数时间比较。
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from conductor.db import session_scope
from conductor.errors import ConductorError
from conductor.jobcred import JOB_TOKEN_PREFIX, parse_job_credential
from conductor.models import ApiToken
from conductor.store import tokens as store
from conductor.tokenfile import create_private

TOKEN_PREFIX = "cdt_"
SHOWN_PREFIX = 12
# 网页的一次性登录码：用过一次或过期即失效
LOGIN_PREFIX = "cdl_"
LOGIN_TTL = timedelta(hours=1)


class TokenNotFound(ConductorError):
    """令牌不存在。"""


@dataclass(frozen=True)
class Principal:
    """请求者：某个账户，或管理员（可看、可管全部作业）。"""

    account: str | None
    admin: bool
    token_id: int | None = None

    def can_access(self, account: str) -> bool:
        """能否看到、操作该账户的作业。"""
        return self.admin or self.account == account

    @property
    def label(self) -> str:
        return "管理员" if self.admin else f"账户 {self.account}"


# 认证关闭（只监听回环地址）时的请求者：等同管理员
OPEN_ACCESS = Principal(account=None, admin=True)


def new_token() -> str:
    """新令牌的明文（只在创建时显示一次）。"""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).hexdigest()


def _store_token(
    session: Session, plain: str, account: str | None, admin: bool, note: str
) -> ApiToken:
    """只存摘要与供辨认的前缀。"""
    row = ApiToken(
        token_hash=hash_token(plain),
        prefix=plain[:SHOWN_PREFIX],
        account=account,
        is_admin=admin,
        note=note[:255],
    )
    return store.add_token(session, row)


def create_token(
    engine: Engine, *, account: str | None, admin: bool, note: str = ""
) -> tuple[ApiToken, str]:
    """创建令牌，返回（记录，明文）。账户令牌与管理员令牌二选一。"""
    if admin == (account is not None):
        raise ValueError("令牌要么绑定一个账户，要么是管理员令牌（二选一）")
    if account is not None and not 1 <= len(account) <= 255:
        raise ValueError("账户名长度应为 1–255")
    plain = new_token()
    with session_scope(engine) as session:
        row = _store_token(session, plain, account, admin, note)
    return row, plain


def list_tokens(engine: Engine, include_revoked: bool = False) -> list[ApiToken]:
    with session_scope(engine) as session:
        return store.tokens(session, include_revoked)


def revoke_token(engine: Engine, token_id: int) -> ApiToken:
    """吊销令牌（幂等）：之后用它的请求立即得到 401。"""
    with session_scope(engine) as session:
        row = store.token(session, token_id)
        if row is None:
            raise TokenNotFound(f"令牌 {token_id} 不存在")
        if row.revoked_at is None:
            store.revoke(session, row, datetime.now(UTC))
        return row


def token_active(engine: Engine, token_id: int) -> bool:
    """令牌仍然有效（存在且未被吊销）：长时间的请求（跟随日志）据此定期复查。"""
    with session_scope(engine) as session:
        row = store.token(session, token_id)
        return row is not None and row.revoked_at is None


def authenticate_job(engine: Engine, token: str) -> Principal | None:
    """作业凭据 cdj_<作业号>_<追踪令牌>（conductor/jobcred.py）：作业仍在运行且令牌是这次执行的，
    才得到该作业账户的权限（不是管理员）；否则 None。"""
    parsed = parse_job_credential(token)
    if parsed is None:
        return None
    job_id, secret = parsed
    with session_scope(engine) as session:
        found = store.running_job_token(session, job_id)
    if found is None:
        return None
    account, expected = found
    if not hmac.compare_digest(expected.encode(), secret.encode("utf-8", "surrogateescape")):
        return None
    return Principal(account=account, admin=False)


def authenticate(engine: Engine, token: str) -> Principal | None:
    """校验明文令牌（API 令牌或作业凭据）；无效、已吊销或作业已不在运行返回 None。"""
    if token.startswith(JOB_TOKEN_PREFIX):
        return authenticate_job(engine, token)
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    with session_scope(engine) as session:
        row = store.token_by_hash(session, digest)
    if row is None or row.revoked_at is not None:
        return None
    # 按摘要查到的行再做一次常数时间比较（不让比较时间泄露任何信息）
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(account=row.account, admin=row.is_admin, token_id=row.id)


def ensure_local_token(engine: Engine, path: Path) -> bool:
    """本机命令行的令牌文件不存在时，为服务自己的用户建一个管理员令牌并写入；返回是否新建。

    以 O_EXCL | O_NOFOLLOW、权限 0600 新建：已有的文件（包括别人放的符号链接）一律不动、不跟随。
    先占住文件再建令牌，写入失败时删掉文件并吊销令牌，不留下半截。"""
    f = create_private(path)
    if f is None:
        return False
    row: ApiToken | None = None
    try:
        with f:
            row, plain = create_token(
                engine, account=None, admin=True, note=f"serve 为本机用户生成（{path}）"
            )
            f.write(plain + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        if row is not None and row.id is not None:
            revoke_token(engine, row.id)
        raise
    return True


def create_login_code(engine: Engine, ttl: timedelta = LOGIN_TTL) -> str:
    """新的一次性登录码（明文只在这里返回一次）；顺便清掉早已过期或用过的旧码。"""
    plain = LOGIN_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        store.prune_login_codes(session, now - timedelta(days=1))
        store.add_login_code(session, hash_token(plain), now, now + ttl)
    return plain


def redeem_login_code(engine: Engine, code: str) -> str | None:
    """用一次性登录码换一个新的管理员令牌（网页用）；码无效、用过或过期时为 None。

    作废登录码与建令牌在同一个事务里：并发兑换同一个码，只有一个成功。"""
    if not code.startswith(LOGIN_PREFIX) or len(code) > 200:
        return None
    with session_scope(engine) as session:
        used = store.use_login_code(session, hash_token(code))
        if used is None:
            return None
        plain = new_token()
        _store_token(session, plain, None, True, f"网页登录（一次性登录码 {used}）")
    return plain


def login_url(host: str, port: int, code: str) -> str:
    """网页的一次性登录地址（登录码在 # 之后：浏览器不把它发给服务器，也不进访问日志）。"""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # 监听所有地址时给本机地址
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/ui#login={code}"
