"""数据库连接：引擎、会话，以及把驱动错误翻译成 DatabaseUnavailable 的边界。"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlmodel import Session

from conductor.errors import ConductorError, DatabaseUnavailable, TransactionConflict
from conductor.store.probe import select_one, select_one_raw

log = logging.getLogger(__name__)
T = TypeVar("T")


def normalize_url(url: str) -> str:
    """统一使用 psycopg2 驱动（pgserver 给出的是不带驱动名的 URL）。"""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def make_engine(
    url: str, pool_size: int = 5, pre_ping: bool = True, ping_idle: float | None = None
) -> Engine:
    """创建引擎：短连接超时，便于数据库重启后自动恢复。

    pre_ping：每次取连接先 SELECT 1 探活。自己会重试整个事务的调用者（调度器、节点代理）
    关掉它，省下每个事务一次往返；断开的连接在出错时由连接池作废，重试时换新连接。

    ping_idle（秒，与 pre_ping 二选一）：只有在池里闲置超过这么久的连接才先探活。API 进程用它：
    持续有请求时连接刚用过、不必每个请求多一次往返（issue 20：每秒数百个提交时探活占 API
    进程约 14% 的采样）；数据库重启时出错的连接由连接池作废（连同池里更早的连接），
    闲置过的连接在取出时探活，仍然对请求透明。"""
    engine = create_engine(
        normalize_url(url),
        pool_pre_ping=pre_ping and ping_idle is None,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        connect_args={"connect_timeout": 3},
    )
    if ping_idle is not None:
        _ping_when_idle(engine, ping_idle)
    return engine


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """取出在池里闲置超过 idle 秒的连接时先 SELECT 1；不通则让连接池换一个新连接。"""

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_conn: object, record: object) -> None:
        record.info["returned_at"] = time.monotonic()  # type: ignore[attr-defined]

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_conn: object, record: object, proxy: object) -> None:
        returned = record.info.get("returned_at")  # type: ignore[attr-defined]
        if returned is None or time.monotonic() - returned <= idle:
            return  # 新建的连接，或刚用过的连接
        try:
            select_one_raw(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - 任何错误都说明这个连接不能用了
            # DisconnectionError：连接池丢弃这个连接并重新取（最多 3 次），调用者无感
            raise DisconnectionError(f"闲置连接已断开：{exc}") from exc


# 服务器关闭、重启中、拒绝连接：SQLSTATE 08 类（连接异常）与 57P01–57P03
UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def is_unavailable(exc: BaseException) -> bool:
    """连接层面的错误（数据库停机、重启中）才值得重试；语句级错误（超时、锁等待）不是。"""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    # 没有 SQLSTATE 说明服务器根本没有应答（连不上、连接中断）
    code = getattr(exc.orig, "pgcode", None)
    return code is None or code.startswith(UNAVAILABLE_SQLSTATES)


# 死锁（40P01）与串行化失败（40001）：PostgreSQL 已回滚其中一个事务，原样重做即可
CONFLICT_SQLSTATES = ("40P01", "40001")


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) in CONFLICT_SQLSTATES


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """一个事务：正常结束提交，异常回滚；连接错误翻译为 DatabaseUnavailable，
    死锁与串行化失败翻译为 TransactionConflict（两者都可重试）。"""
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable() from exc
        if is_conflict(exc):
            raise TransactionConflict() from exc
        raise


def with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    deadline: float | None = None,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    retry_on: tuple[type[ConductorError], ...] = (DatabaseUnavailable, TransactionConflict),
) -> T:
    """数据库不可用或事务冲突时指数退避重试（带抖动）；deadline 为 None 表示一直重试。
    retry_on 可缩小为只重试事务冲突（API 请求不应在数据库停机时久等）。"""
    delay = first_delay
    started = time.monotonic()
    while True:
        try:
            return fn()
        except retry_on as exc:
            if deadline is not None and time.monotonic() - started > deadline:
                raise
            log.warning("%s，%.1f 秒后重试：%s", exc.message, delay, what)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_delay)


# 请求路径上的事务冲突最多重做这么久（秒）；数据库停机则不等，直接 503
REQUEST_CONFLICT_RETRY = 5.0


def retry_conflicts(fn: Callable[[], T], *, what: str) -> T:
    """请求里的多行事务（数组的取消、挂起等）可能与调度器的批量更新互相等锁：
    PostgreSQL 回滚其一，这里原样重做；只重做冲突，不在数据库停机时久等。"""
    return with_retry(
        fn, what=what, deadline=REQUEST_CONFLICT_RETRY, retry_on=(TransactionConflict,)
    )


def ping(engine: Engine) -> None:
    """SELECT 1；失败抛 DatabaseUnavailable。"""
    with session_scope(engine) as session:
        select_one(session)
