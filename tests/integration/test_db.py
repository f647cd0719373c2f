"""db 的集成测试：with_retry 的重试与截止时间，session_scope 的事务语义与错误翻译。"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from conductor.db import make_engine, normalize_url, ping, session_scope, with_retry
from conductor.errors import ConductorError, DatabaseUnavailable, TransactionConflict

# 端口 1 上没有数据库：连接被立即拒绝
CLOSED_URL = "postgresql://postgres@127.0.0.1:1/x"


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    with session_scope(eng) as s:
        s.execute(text("CREATE TABLE kv (k text PRIMARY KEY, v int NOT NULL)"))
    yield eng
    eng.dispose()


@pytest.fixture
def dead_engine() -> Iterator[Engine]:
    eng = make_engine(CLOSED_URL)
    yield eng
    eng.dispose()


# ---------- with_retry（不需要数据库） ----------


class Flaky:
    """前 failures 次调用抛 DatabaseUnavailable，之后返回 value。"""

    def __init__(self, failures: int, value: object = "ok") -> None:
        self.failures = failures
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.failures:
            raise DatabaseUnavailable()
        return self.value


def test_with_retry_succeeds_after_two_failures() -> None:
    fn = Flaky(2, value={"x": 1})
    started = time.monotonic()
    assert with_retry(fn, what="测试", first_delay=0.01, max_delay=0.02) == {"x": 1}
    assert fn.calls == 3
    assert time.monotonic() - started < 1.0


def test_with_retry_succeeds_within_deadline() -> None:
    fn = Flaky(2)
    assert with_retry(fn, what="测试", deadline=5.0, first_delay=0.01) == "ok"
    assert fn.calls == 3


def test_with_retry_no_failure_calls_once() -> None:
    fn = Flaky(0, value=7)
    assert with_retry(fn, what="测试", deadline=0.0) == 7
    assert fn.calls == 1


def test_with_retry_reraises_after_deadline() -> None:
    fn = Flaky(10**9)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        with_retry(fn, what="测试", deadline=0.2, first_delay=0.01, max_delay=0.05)
    elapsed = time.monotonic() - started
    assert fn.calls >= 2  # 截止前确实重试过
    assert 0.2 <= elapsed < 1.5


def test_with_retry_other_errors_not_retried() -> None:
    calls = 0

    def boom() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("不是连接错误")

    with pytest.raises(ValueError, match="不是连接错误"):
        with_retry(boom, what="测试", first_delay=0.01)
    assert calls == 1


# ---------- session_scope：连接失败 ----------


def test_normalize_url_uses_psycopg2() -> None:
    assert normalize_url(CLOSED_URL) == "postgresql+psycopg2://postgres@127.0.0.1:1/x"
    assert normalize_url("postgres://u:p%40ss@h/d") == "postgresql+psycopg2://u:p%40ss@h/d"


def test_session_scope_translates_connection_failure(dead_engine: Engine) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info, session_scope(dead_engine) as s:
        s.execute(text("SELECT 1"))
    assert isinstance(info.value, ConductorError)
    assert isinstance(info.value.__cause__, OperationalError)
    assert str(info.value) == "PostgreSQL 不可用，请稍后重试。"
    assert time.monotonic() - started < 5.0


def test_ping_dead(dead_engine: Engine) -> None:
    with pytest.raises(DatabaseUnavailable):
        ping(dead_engine)


def test_with_retry_over_dead_database_gives_up(dead_engine: Engine) -> None:
    def query() -> int:
        with session_scope(dead_engine) as s:
            return int(s.execute(text("SELECT 1")).scalar_one())

    with pytest.raises(DatabaseUnavailable):
        with_retry(query, what="测试", deadline=0.2, first_delay=0.01, max_delay=0.05)


# ---------- session_scope：真实数据库 ----------


def get(engine: Engine, key: str) -> int | None:
    with session_scope(engine) as s:
        return s.execute(text("SELECT v FROM kv WHERE k = :k"), {"k": key}).scalar_one_or_none()


def test_ping_alive(engine: Engine) -> None:
    ping(engine)


def test_session_scope_commits(engine: Engine) -> None:
    with session_scope(engine) as s:
        s.execute(text("INSERT INTO kv VALUES ('commit', 1)"))
    assert get(engine, "commit") == 1


def test_session_scope_rolls_back_on_exception(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="中途失败"), session_scope(engine) as s:
        s.execute(text("INSERT INTO kv VALUES ('rollback', 1)"))
        raise RuntimeError("中途失败")
    assert get(engine, "rollback") is None


def test_sql_error_is_not_translated(engine: Engine) -> None:
    """SQL 错误不是“数据库不可用”：原样抛出，事务回滚。"""
    with pytest.raises(ProgrammingError), session_scope(engine) as s:
        s.execute(text("INSERT INTO kv VALUES ('sqlerr', 1)"))
        s.execute(text("SELECT * FROM no_such_table"))
    assert get(engine, "sqlerr") is None


def test_killed_connection_translated_then_recovers(engine: Engine) -> None:
    """连接在事务中被服务器断开（如数据库重启）：翻译为 DatabaseUnavailable，之后引擎自动恢复。"""
    with pytest.raises(DatabaseUnavailable), session_scope(engine) as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with session_scope(engine) as other:
            # 带超时：等后端进程确实退出再继续，避免竞争
            killed = other.execute(
                text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}
            ).scalar_one()
            assert killed is True
        s.execute(text("INSERT INTO kv VALUES ('killed', 1)"))
    assert get(engine, "killed") is None
    ping(engine)
    with session_scope(engine) as s:
        s.execute(text("INSERT INTO kv VALUES ('after', 2)"))
    assert get(engine, "after") == 2


def test_statement_timeout_is_not_unavailable(engine: Engine) -> None:
    """连接健康、只是语句被取消：不应报告为数据库不可用（is_unavailable 的文档约定）。"""
    with pytest.raises(OperationalError), session_scope(engine) as s:
        s.execute(text("SET LOCAL statement_timeout = '50ms'"))
        s.execute(text("SELECT pg_sleep(2)"))


def test_deadlock_is_a_retryable_conflict(engine: Engine) -> None:
    """两个事务以相反顺序锁两行：PostgreSQL 判一个死锁并回滚它；session_scope 报 TransactionConflict，
    with_retry 重做后成功，另一个事务照常提交。"""
    with session_scope(engine) as s:
        s.execute(text("INSERT INTO kv VALUES ('dl-a', 0), ('dl-b', 0)"))
    barrier = threading.Barrier(2, timeout=10)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def lock_both(first: str, second: str, name: str) -> None:
        def once() -> None:
            attempts.append(name)
            with session_scope(engine) as s:
                s.execute(text("UPDATE kv SET v = v + 1 WHERE k = :k"), {"k": first})
                if len(attempts) <= 2:  # 只在第一轮制造交叉等待
                    barrier.wait()
                s.execute(text("UPDATE kv SET v = v + 1 WHERE k = :k"), {"k": second})

        try:
            with_retry(once, what=name, deadline=30)
        except BaseException as exc:  # noqa: BLE001 - 交给主线程断言
            errors.append(exc)

    threads = [
        threading.Thread(target=lock_both, args=("dl-a", "dl-b", "ab")),
        threading.Thread(target=lock_both, args=("dl-b", "dl-a", "ba")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(attempts) == 3, attempts  # 恰有一个事务被判死锁并重做
    assert get(engine, "dl-a") == 2 and get(engine, "dl-b") == 2


def test_retry_on_narrows_what_is_retried() -> None:
    """默认连事务冲突也重试；retry_on 只给 DatabaseUnavailable 时冲突直接抛出。"""
    remaining = [1]

    def conflict() -> object:
        if remaining[0] > 0:
            remaining[0] -= 1
            raise TransactionConflict()
        return "ok"

    assert with_retry(conflict, what="t", first_delay=0.001) == "ok"
    remaining[0] = 1
    with pytest.raises(TransactionConflict):
        with_retry(conflict, what="t", retry_on=(DatabaseUnavailable,))


def test_ping_idle_replaces_a_dead_idle_connection(database_url: str, engine: Engine) -> None:
    """ping_idle：池里闲置过的连接在取出时探活，后端已被终止时换新连接，调用者无感。"""
    eng = make_engine(database_url, pool_size=1, ping_idle=0.05)
    try:
        with session_scope(eng) as s:
            first = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with session_scope(engine) as s:
            s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
        time.sleep(0.2)  # 超过 ping_idle：下次取出时探活
        with session_scope(eng) as s:
            second = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
    finally:
        eng.dispose()
