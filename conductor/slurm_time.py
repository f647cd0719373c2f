"""Slurm 的时间写法（sacct -S/-E 等）：src/common/parse_time.c 的 parse_time 的移植（纯函数）。

支持的写法同 Slurm：
- `HH:MM[:SS][AM|PM]`（只给时刻：past 时为今天）；
- `MMDD[YY]`、`MM/DD[/YY]`、`MM.DD[.YY]`、`YYYY-MM-DD`，可接 `[T]HH:MM[:SS]`；
- `now[{+|-}数[seconds|minutes|hours|days|weeks]]`（单位缺省为秒），`today`、`tomorrow`、
  `midnight`、`noon`、`elevenses`、`fika`、`teatime`，以及 `uts<秒>`；
- 只给日期为当天 00:00；没给年份时（past）取不晚于今天的那一年。
现在的时刻与时区由调用方传入（代替 Slurm 读的时钟与 TZ）。
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

_UNITS = (
    ("seconds", 1),
    ("second", 1),
    ("minutes", 60),
    ("minute", 60),
    ("hours", 3600),
    ("hour", 3600),
    ("days", 86400),
    ("day", 86400),
    ("weeks", 7 * 86400),
    ("week", 7 * 86400),
)
_WORDS = {
    "midnight": (0, 0),
    "noon": (12, 0),
    "elevenses": (11, 0),
    "fika": (15, 0),
    "teatime": (16, 0),
}


class SlurmTimeError(ValueError):
    """时间写法无效；消息同 Slurm：Invalid time specification (pos=N): 原文。"""

    def __init__(self, text: str, pos: int) -> None:
        super().__init__(f"Invalid time specification (pos={pos}): {text}")
        self.pos = pos


def _digit(s: str, i: int) -> bool:
    return i < len(s) and "0" <= s[i] <= "9"


def _get_delta(s: str, pos: int) -> tuple[int, int]:
    """'+' 或 '-' 之后的 数[单位]；返回（秒数，最后读到的位置）。"""
    cnt = digits = 0
    i = pos + 1
    while i < len(s) and s[i] != "\n":
        if s[i].isspace():
            i += 1
            continue
        unit = next((u for u in _UNITS if s[i:].lower().startswith(u[0])), None)
        if unit is not None:
            i += len(unit[0])
            cnt *= unit[1]
            break
        if _digit(s, i):
            cnt = cnt * 10 + int(s[i])
            digits += 1
            i += 1
            continue
        raise SlurmTimeError(s, i - 1)
    if not digits:
        raise SlurmTimeError(s, i - 1)
    return cnt, i - 1


def _get_time(s: str, pos: int) -> tuple[int, int, int, int]:
    """HH:MM[:SS] [AM|PM] → （时，分，秒，最后位置）。"""
    i = pos
    if not _digit(s, i):
        raise SlurmTimeError(s, i)
    hr = int(s[i])
    i += 1
    if i < len(s) and s[i] != ":":
        if not _digit(s, i):
            raise SlurmTimeError(s, i)
        hr = hr * 10 + int(s[i])
        i += 1
    if hr > 23:
        raise SlurmTimeError(s, i - 2)
    if i >= len(s) or s[i] != ":":
        raise SlurmTimeError(s, i)
    i += 1
    if not _digit(s, i):
        raise SlurmTimeError(s, i)
    if not _digit(s, i + 1):
        raise SlurmTimeError(s, i + 1)
    minute = int(s[i : i + 2])
    i += 2
    if minute > 59:
        raise SlurmTimeError(s, i - 2)
    sec = 0
    if i < len(s) and s[i] == ":":
        i += 1
        if not _digit(s, i):
            raise SlurmTimeError(s, i)
        if not _digit(s, i + 1):
            raise SlurmTimeError(s, i + 1)
        sec = int(s[i : i + 2])
        i += 2
        if sec > 59:
            raise SlurmTimeError(s, i - 2)
    while i < len(s) and s[i].isspace():
        i += 1
    tail = s[i : i + 2].lower()
    if tail == "pm":
        hr += 12
        if hr > 23:
            if hr != 24:
                raise SlurmTimeError(s, i)
            hr = 12
        i += 2
    elif tail == "am":
        if hr > 11:
            if hr != 12:
                raise SlurmTimeError(s, i)
            hr = 0
        i += 2
    return hr, minute, sec, i - 1


def _get_date(s: str, pos: int) -> tuple[int, int, int | None, int]:
    """YYYY-MM-DD 或 MMDD[YY]、MM/DD[/YY]、MM.DD[.YY] → （月，日，年或 None，最后位置）。"""
    i = pos
    if len(s) >= pos + 7 and s[pos + 4 : pos + 5] == "-" and s[pos + 7 : pos + 8] == "-":
        for k in range(4):
            if not _digit(s, i + k):
                raise SlurmTimeError(s, i + k)
        full_year = int(s[i : i + 4])
        i += 5
        mon, i = _two(s, i)
        if not 1 <= mon <= 12:
            raise SlurmTimeError(s, i - 2)
        i += 1
        if not _digit(s, i):
            raise SlurmTimeError(s, i)
        day, i = _two(s, i)
        if not 1 <= day <= 31:
            raise SlurmTimeError(s, i - 2)
        return mon, day, full_year, i - 1
    if not _digit(s, i):
        raise SlurmTimeError(s, i)
    mon, i = _two(s, i)
    if not 1 <= mon <= 12:
        raise SlurmTimeError(s, i - 2)
    if i < len(s) and s[i] in "./":
        i += 1
    if not _digit(s, i):
        raise SlurmTimeError(s, i)
    day, i = _two(s, i)
    if not 1 <= day <= 31:
        raise SlurmTimeError(s, i - 2)
    if i < len(s) and s[i] in "./":
        i += 1
    yr: int | None = None
    if _digit(s, i):
        if not _digit(s, i + 1):
            raise SlurmTimeError(s, i + 1)
        yr = 2000 + int(s[i : i + 2])
        i += 2
    return mon, day, yr, i - 1


def _two(s: str, i: int) -> tuple[int, int]:
    """一到两位数字。"""
    value = int(s[i]) if _digit(s, i) else -1
    if value < 0:
        raise SlurmTimeError(s, i)
    i += 1
    if _digit(s, i):
        value = value * 10 + int(s[i])
        i += 1
    return value, i


def parse_slurm_time(text: str, now: datetime, tz: tzinfo = UTC, past: bool = True) -> datetime:
    """Slurm 的时间写法 → 带时区的时刻；now 为“现在”（带时区），tz 为显示与解释用的本地时区。

    past 同 parse_time 的参数：sacct 的 -S/-E 为 True（没给年份时不取将来的年份）。
    写法无效抛 SlurmTimeError。
    """
    s = text
    if s[:3].lower() == "uts":
        digits = s[3:]
        if not digits.isdigit() or int(digits) < 1_000_000:
            raise SlurmTimeError(s, -1)
        return datetime.fromtimestamp(int(digits), UTC)
    local_now = now.astimezone(tz)
    hour = minute = -1
    second = 0
    month = mday = -1
    year: int | None = None
    pos = 0
    while pos < len(s) and s[pos] != "\n":
        ch = s[pos]
        low = s[pos:].lower()
        if ch in " \t-T":
            pos += 1
            continue
        if low.startswith("today"):
            month, mday, year = local_now.month, local_now.day, local_now.year
            pos += 5
            continue
        if low.startswith("tomorrow"):
            later = local_now + timedelta(days=1)
            month, mday, year = later.month, later.day, later.year
            pos += 8
            continue
        word = next((w for w in _WORDS if low.startswith(w)), None)
        if word is not None:
            hour, minute = _WORDS[word]
            second = 0
            pos += len(word)
            continue
        if low.startswith("now"):
            delta = 0
            i = pos + 3
            while True:
                if i < len(s) and s[i] in "+-":
                    amount, end = _get_delta(s, i)
                    delta = amount if s[i] == "+" else -amount
                    pos = end + 1
                    break
                if i < len(s) and s[i] in " \t":
                    i += 1
                    continue
                if i >= len(s) or s[i] == "\n":
                    pos = i
                    break
                raise SlurmTimeError(s, i)
            later = local_now + timedelta(seconds=delta)
            month, mday, year = later.month, later.day, later.year
            hour, minute, second = later.hour, later.minute, later.second
            continue
        if not _digit(s, pos):
            raise SlurmTimeError(s, pos)
        if s[pos + 1 : pos + 2] == ":" or s[pos + 2 : pos + 3] == ":":
            hour, minute, second, end = _get_time(s, pos)
        else:
            month, mday, year, end = _get_date(s, pos)
        pos = end + 1
    if hour == -1 and month == -1:
        raise SlurmTimeError(s, pos)  # 什么也没写：Slurm 得到 0（纪元），这里当作写错
    if hour == -1:
        hour, minute = 0, 0
    elif month == -1:
        # 只给时刻：past 或时刻还没到为今天，否则为明天
        if past or (hour, minute) > (local_now.hour, local_now.minute):
            month, mday, year = local_now.month, local_now.day, local_now.year
        else:
            later = local_now + timedelta(days=1)
            month, mday, year = later.month, later.day, later.year
    if year is None:
        if past:
            year = local_now.year - 1 if month > local_now.month else local_now.year
        elif (month, mday, hour, minute) > (
            local_now.month,
            local_now.day,
            local_now.hour,
            local_now.minute,
        ):
            year = local_now.year
        else:
            year = local_now.year + 1
    try:
        return datetime(year, month, mday, hour, minute, second, tzinfo=tz)
    except ValueError:
        raise SlurmTimeError(s, pos) from None
