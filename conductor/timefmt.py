"""时限、耗时与时间戳的解析与格式化（内存见 memory.py，退出码见 exec_result.py）。

输入沿用 Slurm 的写法，让用户的 sbatch 习惯可以直接搬过来；
输出也对齐 Slurm 的显示格式，便于与 squeue/sacct 的结果对照。
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

# 上限一年：更大的值几乎必然是单位写错（例如把秒当分钟）。
_MAX_LIMIT_SECONDS = 365 * 24 * 60 * 60
_TIME_FORMS = "应为分钟数或 Slurm 格式 M、M:S、H:M:S、D-H、D-H:M、D-H:M:S、UNLIMITED"
# re.ASCII：只认 0-9，防止全角或其他文字的数字被 int() 悄悄接受。
_TIME_RE = re.compile(
    r"(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?",
    re.ASCII,
)


def parse_time_limit(value: str | int) -> int | None:
    """解析作业时限为秒数；None 表示不限时，与 Slurm 的 0/UNLIMITED 一致。

    输入写法沿用 Slurm：纯数字（含 int）按分钟计，其余按 M:S、H:M:S、D-H 等格式解析。
    与 Slurm 把不足一分钟的秒数向上取整到分钟不同，这里精确保留秒数，
    这样很短的时限（如 0:30）也能准确生效。
    """
    # bool 是 int 的子类，须先排除，否则 True 会被当成 1 分钟。
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"time_limit 格式无效：{value!r}，{_TIME_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"time_limit 不能为负数：{value!r}")
        # int 与纯数字字符串一样按分钟计。
        return _limit_or_none(value * 60, value)
    text = value.strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"time_limit 格式无效：{value!r}，{_TIME_FORMS}")
    g = {name: _time_field(raw, value) for name, raw in match.groupdict().items()}
    if match["days"] is not None:
        days, hours, minutes, seconds = g["days"], g["dh"], g["dm"], g["ds"]
        _check_range(hours, 23, "小时", value)
    elif match["c"] is not None:
        days, hours, minutes, seconds = 0, g["a"], g["b"], g["c"]
    else:
        days, hours, minutes, seconds = 0, 0, g["a"], g["b"]
    # 只有开头的字段可以溢出（如 90:00 表示 90 分钟），后续字段必须在进位范围内。
    if match["a"] is None or match["c"] is not None:
        _check_range(minutes, 59, "分钟", value)
    _check_range(seconds, 59, "秒", value)
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    # 精确保留秒数，不像 Slurm 那样向上取整到分钟。
    return _limit_or_none(total, value)


def _time_field(raw: str | None, original: str) -> int:
    if raw is None:
        return 0
    # 任一字段有 10 位以上有效数字时，即使按秒计也远超一年；提前拦截以免 int() 处理超长串。
    if len(raw.lstrip("0")) > 9:
        raise ValueError(f"time_limit 过大：{original!r}，不能超过 365 天")
    return int(raw)


def _check_range(field: int, upper: int, name: str, original: str) -> None:
    if field > upper:
        raise ValueError(f"time_limit 字段超出范围：{original!r}，{name}须在 0-{upper} 之间")


def _limit_or_none(seconds: int, original: str | int) -> int | None:
    if seconds > _MAX_LIMIT_SECONDS:
        raise ValueError(f"time_limit 过大：{original!r}，不能超过 365 天")
    # 各字段全为 0 时总秒数为 0，按 Slurm 约定表示不限时。
    return seconds or None


def format_limit(seconds: int | None) -> str:
    """按 Slurm 的 TimeLimit 样式显示以秒计的时限：不足一天为 H:MM:SS，否则为 D-HH:MM:SS。"""
    if seconds is None:
        return "UNLIMITED"
    if seconds < 0:
        raise ValueError(f"时限秒数不能为负数：{seconds!r}")
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}-{hrs:02d}:{mins:02d}:{secs:02d}"
    return f"{hrs}:{mins:02d}:{secs:02d}"


def format_elapsed(seconds: float | int) -> str:
    """固定 D-HH:MM:SS，便于按列对齐与解析；时钟回拨产生的负值按 0 处理。"""
    # NaN/inf 说明上游计时出错，不应静默显示成某个值。
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"耗时秒数无效：{seconds!r}")
    total = max(0, math.floor(seconds))
    minutes, secs = divmod(total, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    return f"{days}-{hrs:02d}:{mins:02d}:{secs:02d}"


def iso_utc(dt: datetime | None) -> str | None:
    """统一输出 UTC 的 ISO 8601（Z 结尾、整秒），避免客户端时区歧义。"""
    if dt is None:
        return None
    # 项目内部约定无时区的时间即 UTC；用 utcoffset 判断才能覆盖 tzinfo 返回 None 的情况。
    if dt.utcoffset() is None:
        dt = dt.replace(tzinfo=UTC)
    utc = dt.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    return utc.isoformat() + "Z"
