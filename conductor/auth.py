"""API 令牌：生成、摘要存储、校验与吊销（纯领域逻辑，不依赖 fastapi）。

令牌是 256 位随机数，数据库只存 SHA-256 摘要：数据库泄露也拿不到可用的令牌。
高熵令牌不需要慢哈希（那是为低熵口令准备的）；按摘要查行后再做常数时间比较。
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from conductor.db import session_scope
from conductor.errors import ConductorError
from conductor.models import ApiToken

TOKEN_PREFIX = "cdt_"
SHOWN_PREFIX = 12


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


def create_token(
    engine: Engine, *, account: str | None, admin: bool, note: str = ""
) -> tuple[ApiToken, str]:
    """创建令牌，返回（记录，明文）。账户令牌与管理员令牌二选一。"""
    if admin == (account is not None):
        raise ValueError("令牌要么绑定一个账户，要么是管理员令牌（二选一）")
    if account is not None and not 1 <= len(account) <= 255:
        raise ValueError("账户名长度应为 1–255")
    plain = new_token()
    row = ApiToken(
        token_hash=hash_token(plain),
        prefix=plain[:SHOWN_PREFIX],
        account=account,
        is_admin=admin,
        note=note[:255],
    )
    with session_scope(engine) as session:
        session.add(row)
        session.flush()
        session.refresh(row)
    return row, plain


def list_tokens(engine: Engine, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)  # type: ignore[arg-type]
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
    with session_scope(engine) as session:
        return list(session.exec(query))


def revoke_token(engine: Engine, token_id: int) -> ApiToken:
    """吊销令牌（幂等）：之后用它的请求立即得到 401。"""
    with session_scope(engine) as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise TokenNotFound(f"令牌 {token_id} 不存在")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
            session.add(row)
        return row


def token_active(engine: Engine, token_id: int) -> bool:
    """令牌仍然有效（存在且未被吊销）：长时间的请求（跟随日志）据此定期复查。"""
    with session_scope(engine) as session:
        row = session.get(ApiToken, token_id)
        return row is not None and row.revoked_at is None


def authenticate(engine: Engine, token: str) -> Principal | None:
    """校验明文令牌；无效或已吊销返回 None。"""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    with session_scope(engine) as session:
        row = session.exec(
            select(ApiToken).where(ApiToken.token_hash == digest)  # type: ignore[arg-type]
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    # 按摘要查到的行再做一次常数时间比较（不让比较时间泄露任何信息）
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(account=row.account, admin=row.is_admin, token_id=row.id)
