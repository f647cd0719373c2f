"""时限、内存、耗时等字段的解析与格式化。

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

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MIB = _UNITS["M"]
_MEM_FORMS = "应为正数加可选单位 K、M、G、T（可带 B，如 32G、512MB），小数须带单位，纯数字按 MB 计"
# 数字位数设上限：超长数字串会触发 int() 的位数限制，抛出英文错误。
_MEM_RE = re.compile(
    r"(?P<num>\d{1,20})(?:\.(?P<frac>\d{1,20}))?(?P<unit>[KMGT]?)(?P<b>B?)",
    re.ASCII | re.IGNORECASE,
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


def parse_memory(value: str | int) -> int:
    """解析内存请求为字节数；纯数字按 MB 计，与 Slurm 的 --mem 一致。"""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"memory_per_node 格式无效：{value!r}，{_MEM_FORMS}")
    if isinstance(value, int):
        nbytes = value * _MIB
    else:
        match = _MEM_RE.fullmatch(value.strip())
        # 单独的 B 表示字节，小数字节没有意义，所以小数必须配 K/M/G/T。
        if match is None or (match["frac"] and not match["unit"]):
            raise ValueError(f"memory_per_node 格式无效：{value!r}，{_MEM_FORMS}")
        # 没有 K/M/G/T 时：单独的 B 按字节，纯数字按 MB。
        size = _UNITS.get(match["unit"].upper(), 1 if match["b"] else _MIB)
        frac = match["frac"] or ""
        scale = 10 ** len(frac)
        # 用整数运算而非 float，避免 1.1G 之类出现二进制舍入误差。
        nbytes = int(match["num"] + frac) * size // scale
    if nbytes <= 0:
        raise ValueError(f"memory_per_node 必须大于 0：{value!r}")
    return nbytes


def format_memory(nbytes: int) -> str:
    """用能整除的最大单位（G/M/K）显示，除不尽时保留字节数，保证不丢精度。"""
    _check_nbytes(nbytes)
    for suffix in ("G", "M", "K"):
        size = _UNITS[suffix]
        if nbytes and nbytes % size == 0:
            return f"{nbytes // size}{suffix}"
    return f"{nbytes}B"


def slurm_mem_mb(nbytes: int) -> str:
    """SLURM_MEM_PER_NODE 以 MB 计；向上取整，避免作业看到的额度小于实际分配。"""
    _check_nbytes(nbytes)
    return str(-(-nbytes // _MIB))


def _check_nbytes(nbytes: int) -> None:
    if nbytes < 0:
        raise ValueError(f"内存字节数不能为负数：{nbytes!r}")


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


def format_exit_code(returncode: int | None) -> str | None:
    """把 Popen 的返回码转成 Slurm 的 "退出码:信号"；负值表示被该信号杀死。"""
    if returncode is None:
        return None
    if returncode < 0:
        return f"0:{-returncode}"
    return f"{returncode}:0"
