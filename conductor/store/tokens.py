"""API 令牌与网页一次性登录码的读写（api_tokens、login_codes 两张表）。

令牌只存 SHA-256 摘要；摘要的计算、令牌的校验与吊销的规则在 conductor/auth.py。
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlmodel import Session, select

from conductor.models import ApiToken, LoginCode


def add_token(session: Session, row: ApiToken) -> ApiToken:
    """写入一个令牌，返回带上 id 的记录。"""
    session.add(row)
    session.flush()
    session.refresh(row)
    return row


def tokens(session: Session, include_revoked: bool) -> list[ApiToken]:
    """全部令牌（按 id）；include_revoked 为假时不含已吊销的。"""
    query = select(ApiToken).order_by(ApiToken.id)  # type: ignore[arg-type]
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))  # type: ignore[union-attr]
    return list(session.exec(query))


def token(session: Session, token_id: int) -> ApiToken | None:
    """按 id 取令牌。"""
    return session.get(ApiToken, token_id)


def token_by_hash(session: Session, digest: str) -> ApiToken | None:
    """按摘要取令牌。"""
    return session.exec(
        select(ApiToken).where(ApiToken.token_hash == digest)  # type: ignore[arg-type]
    ).first()


def revoke(session: Session, row: ApiToken, at: datetime) -> None:
    """记下吊销时刻（随事务提交）。"""
    row.revoked_at = at
    session.add(row)


def prune_login_codes(session: Session, before: datetime) -> None:
    """删掉 before 之前就已过期或用过的登录码。"""
    session.execute(
        text("DELETE FROM login_codes WHERE expires_at < :old OR used_at < :old"),
        {"old": before},
    )


def add_login_code(session: Session, code_hash: str, created: datetime, expires: datetime) -> None:
    """写入一个登录码（只存摘要）。"""
    session.add(LoginCode(code_hash=code_hash, created_at=created, expires_at=expires))


def use_login_code(session: Session, code_hash: str) -> int | None:
    """作废一个有效（未用过、未过期）的登录码并返回它的 id；无效时 None。并发兑换只有一个成功。"""
    used = session.execute(
        text(
            "UPDATE login_codes SET used_at = now() WHERE code_hash = :h "
            "AND used_at IS NULL AND expires_at > now() RETURNING id"
        ),
        {"h": code_hash},
    ).first()
    return None if used is None else int(used.id)


def running_job_token(session: Session, job_id: int) -> tuple[str, str] | None:
    """运行中作业的 (账户, 该次执行的追踪令牌)；作业不存在或不在 RUNNING 时 None（作业凭据用）。"""
    row = session.execute(
        text("SELECT account, token FROM jobs WHERE id = :id AND state = 'RUNNING'"),
        {"id": job_id},
    ).first()
    if row is None or row.token is None:
        return None
    return row.account, row.token
