"""timefmt、memory 与退出码格式的单元测试：逐一钉住 Slurm 兼容的边界值，再用性质测试覆盖往返一致性。"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conductor.exec_result import format_exit_code
from conductor.memory import parse_memory, slurm_mem_mb
from conductor.timefmt import format_elapsed, format_limit, iso_utc, parse_time_limit

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
YEAR_MINUTES = 365 * 24 * 60
YEAR_SECONDS = YEAR_MINUTES * 60
DAY_SECONDS = 24 * 60 * 60


# ---------- parse_time_limit ----------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # int 与纯数字字符串按分钟计，结果换算成秒
        (30, 1800),
        (1, 60),
        (YEAR_MINUTES, YEAR_SECONDS),
        ("30", 1800),
        ("1", 60),
        ("  30\t", 1800),
        ("0090", 5400),
        (str(YEAR_MINUTES), YEAR_SECONDS),
        # M:S，开头的分钟可以超过 59；秒数精确保留，不向上取整
        ("90:00", 5400),
        ("5:00", 300),
        ("0:30", 30),
        ("0:01", 1),
        ("0:59", 59),
        ("1:01", 61),
        ("525599:59", YEAR_SECONDS - 1),
        # H:M:S，开头的小时可以超过 23
        ("2:00:00", 7200),
        ("1:00:30", 3630),
        ("100:00:00", 360000),
        ("0:00:01", 1),
        ("0:0:59", 59),
        ("8760:00:00", YEAR_SECONDS),
        # D-H、D-H:M、D-H:M:S
        ("1-0", DAY_SECONDS),
        ("1-2", 93600),
        ("2-12", 216000),
        ("1-1:30", 91800),
        ("1-01:00:00", 90000),
        ("1-00:00:01", DAY_SECONDS + 1),
        ("0-0:0:30", 30),
        ("0-00:00:01", 1),
        ("365-0", YEAR_SECONDS),
        ("365-00:00:00", YEAR_SECONDS),
        ("364-23:59:59", YEAR_SECONDS - 1),
    ],
)
def test_parse_time_limit_valid(value: str | int, expected: int) -> None:
    result = parse_time_limit(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    [
        0,
        "0",
        " 0 ",
        "00",
        "0:00",
        "0:0:0",
        "0-0",
        "0-00:00:00",
        "0-0:0",
        "000:00:00",
        "UNLIMITED",
        "unlimited",
        "Unlimited",
        "INFINITE",
        "infinite",
        " UNLIMITED\n",
    ],
)
def test_parse_time_limit_unlimited(value: str | int) -> None:
    assert parse_time_limit(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "abc",
        "1:2:3:4",
        "x-1",
        "1-x",
        "-5",
        "+5",
        "1.5",
        "1:",
        ":30",
        "1-",
        "-1-0",
        "1-2-3",
        "1:2-3",
        "1 :00",
        "1- 2",
        "１０",
        "٣",
        "1_000",
        "UNLIMITED2",
        "none",
    ],
)
def test_parse_time_limit_bad_format(value: str) -> None:
    with pytest.raises(ValueError, match=rf"^time_limit 格式无效：{re.escape(repr(value))}，"):
        parse_time_limit(value)


@pytest.mark.parametrize("value", [True, False, 1.0, 30.5, None, b"30", [30]])
def test_parse_time_limit_bad_type(value: object) -> None:
    with pytest.raises(ValueError, match=rf"^time_limit 格式无效：{re.escape(repr(value))}，"):
        parse_time_limit(value)  # type: ignore[arg-type]


def test_parse_time_limit_error_lists_formats() -> None:
    with pytest.raises(ValueError) as info:
        parse_time_limit("abc")
    assert str(info.value) == (
        "time_limit 格式无效：'abc'，"
        "应为分钟数或 Slurm 格式 M、M:S、H:M:S、D-H、D-H:M、D-H:M:S、UNLIMITED"
    )


@pytest.mark.parametrize("value", [-1, -1440])
def test_parse_time_limit_negative_int(value: int) -> None:
    with pytest.raises(ValueError, match=rf"^time_limit 不能为负数：{value}$"):
        parse_time_limit(value)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("1:60", "秒"),
        ("0:99", "秒"),
        ("1:60:00", "分钟"),
        ("1:00:60", "秒"),
        ("1-24", "小时"),
        ("1-99:00:00", "小时"),
        ("1-0:60", "分钟"),
        ("1-0:0:60", "秒"),
    ],
)
def test_parse_time_limit_field_out_of_range(value: str, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^time_limit 字段超出范围：'{value}'，{field}须在 0-"):
        parse_time_limit(value)


@pytest.mark.parametrize(
    "value",
    [
        YEAR_MINUTES + 1,
        YEAR_SECONDS,  # int 按分钟计，这个数值的分钟数远超一年
        10**12,
        str(YEAR_MINUTES + 1),
        "525600:01",
        "365-00:00:01",
        "366-0",
        "8760:00:01",
        "8761:00:00",
        "9999999999",
        "1" + "0" * 5000,  # 超过 int() 默认 4300 位限制，仍应给出中文错误
        "1:" + "9" * 5000,
    ],
)
def test_parse_time_limit_too_large(value: str | int) -> None:
    with pytest.raises(ValueError, match=r"^time_limit 过大：.*，不能超过 365 天$"):
        parse_time_limit(value)


# ---------- parse_memory ----------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, MIB),
        (4096, 4096 * MIB),
        ("1", MIB),
        ("4096", 4096 * MIB),
        (" 32G ", 32 * GIB),
        ("32G", 32 * GIB),
        ("32g", 32 * GIB),
        ("32GB", 32 * GIB),
        ("32gb", 32 * GIB),
        ("32Gb", 32 * GIB),
        ("512mb", 512 * MIB),
        ("512M", 512 * MIB),
        ("64K", 64 * KIB),
        ("64kB", 64 * KIB),
        ("2T", 2 * TIB),
        ("2tb", 2 * TIB),
        ("123B", 123),
        ("123b", 123),
        ("1.5G", 1536 * MIB),
        ("0.5M", 512 * KIB),
        ("1.1G", 1181116006),  # floor(1.1 * 2**30)，整数运算不受浮点误差影响
        ("0.1K", 102),  # 102.4 向下取整
        ("1.0000000001K", 1024),
        ("007G", 7 * GIB),
    ],
)
def test_parse_memory_valid(value: str | int, expected: int) -> None:
    assert parse_memory(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "  ",
        "abc",
        "G",
        "B",
        "-1",
        "-1G",
        "+1G",
        "1.5",
        "1.5B",
        "1.G",
        ".5G",
        "1..5G",
        "32X",
        "32GiB",
        "32BB",
        "32 G",
        "1e3",
        "1,5G",
        "３２G",
        "1" * 21,
        "1." + "0" * 21 + "1G",
    ],
)
def test_parse_memory_bad_format(value: str) -> None:
    with pytest.raises(ValueError, match=rf"^memory_per_node 格式无效：{re.escape(repr(value))}，"):
        parse_memory(value)


@pytest.mark.parametrize("value", [True, False, 1.5, 32.0, None, b"32G"])
def test_parse_memory_bad_type(value: object) -> None:
    with pytest.raises(ValueError, match=rf"^memory_per_node 格式无效：{re.escape(repr(value))}，"):
        parse_memory(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, -4096, "0", "0G", "0.0M", "0B", "0.0001K"])
def test_parse_memory_not_positive(value: str | int) -> None:
    with pytest.raises(
        ValueError, match=rf"^memory_per_node 必须大于 0：{re.escape(repr(value))}$"
    ):
        parse_memory(value)


# ---------- slurm_mem_mb ----------


@pytest.mark.parametrize(
    ("nbytes", "expected"),
    [
        (32 * GIB, "32768"),
        (MIB, "1"),
        (MIB + 1, "2"),
        (1, "1"),
        (MIB - 1, "1"),
        (0, "0"),
        (1536 * MIB, "1536"),
    ],
)
def test_slurm_mem_mb(nbytes: int, expected: str) -> None:
    assert slurm_mem_mb(nbytes) == expected


@pytest.mark.parametrize("func", [slurm_mem_mb])
def test_memory_formatters_reject_negative(func: Callable[[int], str]) -> None:
    with pytest.raises(ValueError, match=r"^内存字节数不能为负数：-1$"):
        func(-1)


# ---------- format_limit ----------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "UNLIMITED"),
        (0, "0:00:00"),
        (1, "0:00:01"),
        (30, "0:00:30"),
        (59, "0:00:59"),
        (60, "0:01:00"),
        (61, "0:01:01"),
        (300, "0:05:00"),
        (3599, "0:59:59"),
        (3600, "1:00:00"),
        (3630, "1:00:30"),
        (7200, "2:00:00"),
        (36000, "10:00:00"),
        (DAY_SECONDS - 1, "23:59:59"),
        (DAY_SECONDS, "1-00:00:00"),
        (DAY_SECONDS + 1, "1-00:00:01"),
        (90000, "1-01:00:00"),
        (93600, "1-02:00:00"),
        (2 * DAY_SECONDS + 3661, "2-01:01:01"),
        (10 * DAY_SECONDS + 36000, "10-10:00:00"),
        (YEAR_SECONDS - 1, "364-23:59:59"),
        (YEAR_SECONDS, "365-00:00:00"),
    ],
)
def test_format_limit(seconds: int | None, expected: str) -> None:
    assert format_limit(seconds) == expected


@pytest.mark.parametrize("seconds", [-1, -60, -DAY_SECONDS])
def test_format_limit_negative(seconds: int) -> None:
    with pytest.raises(ValueError, match=rf"^时限秒数不能为负数：{seconds}$"):
        format_limit(seconds)


# ---------- format_elapsed ----------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0-00:00:00"),
        (59, "0-00:00:59"),
        (60, "0-00:01:00"),
        (2360, "0-00:39:20"),
        (86399, "0-23:59:59"),
        (86400, "1-00:00:00"),
        (90061, "1-01:01:01"),
        (100 * 86400, "100-00:00:00"),
        (59.999, "0-00:00:59"),  # 向下取整，不四舍五入
        (0.5, "0-00:00:00"),
        (-1, "0-00:00:00"),
        (-0.5, "0-00:00:00"),
        (-86400.0, "0-00:00:00"),
    ],
)
def test_format_elapsed(seconds: float, expected: str) -> None:
    assert format_elapsed(seconds) == expected


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), float("-inf")])
def test_format_elapsed_non_finite(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"^耗时秒数无效："):
        format_elapsed(seconds)


# ---------- iso_utc ----------


class _NoOffset(tzinfo):
    """utcoffset 返回 None 的 tzinfo，按 Python 定义仍属于无时区时间。"""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (None, None),
        (datetime(2025, 11, 7, 10, 20, 30), "2025-11-07T10:20:30Z"),
        (datetime(2025, 11, 7, 10, 20, 30, 999999), "2025-11-07T10:20:30Z"),
        (datetime(2025, 11, 7, 10, 20, 30, tzinfo=UTC), "2025-11-07T10:20:30Z"),
        (
            datetime(2025, 11, 7, 18, 20, 30, 123456, tzinfo=timezone(timedelta(hours=8))),
            "2025-11-07T10:20:30Z",
        ),
        (
            datetime(2025, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-01T04:30:00Z",
        ),
        (datetime(2025, 11, 7, 10, 20, 30, tzinfo=_NoOffset()), "2025-11-07T10:20:30Z"),
        (datetime(1, 1, 1), "0001-01-01T00:00:00Z"),
    ],
)
def test_iso_utc(dt: datetime | None, expected: str | None) -> None:
    assert iso_utc(dt) == expected


# ---------- format_exit_code ----------


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(None, None), (0, "0:0"), (3, "3:0"), (255, "255:0"), (-9, "0:9"), (-15, "0:15")],
)
def test_format_exit_code(returncode: int | None, expected: str | None) -> None:
    assert format_exit_code(returncode) == expected


# ---------- 性质测试 ----------


def _elapsed_to_seconds(text: str) -> int:
    days, clock = text.split("-")
    hours, minutes, seconds = clock.split(":")
    return ((int(days) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_elapsed_round_trips_seconds(seconds: int) -> None:
    text = format_elapsed(seconds)
    assert re.fullmatch(r"\d+-\d\d:\d\d:\d\d", text)
    assert _elapsed_to_seconds(text) == seconds


@given(st.floats(min_value=-1e6, max_value=1e9, allow_nan=False))
def test_format_elapsed_floors_floats(seconds: float) -> None:
    assert _elapsed_to_seconds(format_elapsed(seconds)) == max(0, int(seconds // 1))


@given(
    st.integers(min_value=0, max_value=364),
    st.integers(min_value=0, max_value=23),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
)
def test_parse_time_limit_d_h_m_s(days: int, hours: int, minutes: int, seconds: int) -> None:
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    # 秒数精确保留；全 0 表示不限时
    expected = total or None
    assert parse_time_limit(f"{days}-{hours:02d}:{minutes:02d}:{seconds:02d}") == expected
    assert parse_time_limit(f"{days * 24 + hours}:{minutes}:{seconds}") == expected
    assert parse_time_limit(f"{total // 60}:{total % 60:02d}") == expected


@given(st.integers(min_value=1, max_value=YEAR_MINUTES))
def test_parse_time_limit_bare_number_is_minutes(minutes: int) -> None:
    assert parse_time_limit(minutes) == minutes * 60
    assert parse_time_limit(str(minutes)) == minutes * 60


# 不足一天为 H:MM:SS（小时无前导 0），否则为 D-HH:MM:SS（天数无前导 0）。
_LIMIT_RE = re.compile(
    r"(?:1?\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"|[1-9]\d*-(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
)


@given(st.integers(min_value=1, max_value=YEAR_SECONDS))
def test_format_limit_round_trips(seconds: int) -> None:
    text = format_limit(seconds)
    assert _LIMIT_RE.fullmatch(text)
    assert parse_time_limit(text) == seconds


@given(st.integers(min_value=0, max_value=10 * YEAR_SECONDS))
def test_format_limit_agrees_with_format_elapsed(seconds: int) -> None:
    # 两者只差在不足一天时 format_limit 省略天数和小时的前导 0
    text = format_limit(seconds)
    if seconds < DAY_SECONDS:
        assert "-" not in text
        assert format_elapsed(seconds) == "0-" + text.rjust(8, "0")
    else:
        assert format_elapsed(seconds) == text


@given(st.integers(min_value=YEAR_SECONDS + 1, max_value=100 * YEAR_SECONDS))
def test_parse_time_limit_rejects_formatted_over_year(seconds: int) -> None:
    with pytest.raises(ValueError, match=r"^time_limit 过大：.*，不能超过 365 天$"):
        parse_time_limit(format_limit(seconds))


@given(st.integers(min_value=0, max_value=2**50))
def test_slurm_mem_mb_is_ceiling(nbytes: int) -> None:
    mb = int(slurm_mem_mb(nbytes))
    assert mb * MIB >= nbytes
    assert (mb - 1) * MIB < nbytes or mb == 0


@given(
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.one_of(st.none(), st.timezones()),
    )
)
def test_iso_utc_matches_instant(dt: datetime) -> None:
    text = iso_utc(dt)
    assert text is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)
    parsed = datetime.fromisoformat(text)
    aware = dt if dt.utcoffset() is not None else dt.replace(tzinfo=UTC)
    delta = aware - parsed
    assert timedelta(0) <= delta < timedelta(seconds=1)
