"""作业数组：`--array` 写法的解析，以及输出文件名中 %A %a %j %x %u %% 的展开。"""

from __future__ import annotations

import re
from dataclasses import dataclass

# 与 Slurm 的 MaxArraySize 默认值一致：下标 0..1000
MAX_INDEX = 1000
_RANGE = re.compile(r"(\d{1,7})(?:-(\d{1,7})(?::(\d{1,7}))?)?", re.ASCII)
_FORMS = "应为 Slurm 写法，如 0-99、1,3,5-7、0-15:4，可加 %N 限制同时运行数"
# 文件名模式里补零宽度的上限（同 Slurm 的最大宽度 10）：%2000000000j 会让服务为一个文件名分配 2 GB
MAX_PAD = 10
_PATTERN = re.compile(r"%(\d*)([a-zA-Z%])", re.ASCII)


@dataclass(frozen=True)
class ArraySpec:
    """解析后的数组：按升序排列的下标，及同时运行的上限（None 为不限）。"""

    indices: tuple[int, ...]
    max_running: int | None

    @property
    def count(self) -> int:
        return len(self.indices)


def parse_array(value: str, max_tasks: int) -> ArraySpec:
    """解析 "0-99%10"、"1,3,5-7"、"0-15:4"；错误信息指出哪一段不对。"""
    text = value.strip()
    body, sep, throttle = text.partition("%")
    max_running: int | None = None
    if sep:
        if not throttle.isascii() or not throttle.isdigit() or int(throttle) < 1:
            raise ValueError(f"数组 {value!r} 的 %N 必须是正整数")
        max_running = int(throttle)
    indices: set[int] = set()
    for part in body.split(","):
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"数组 {value!r} 中的 {part!r} 无效，{_FORMS}")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        step = int(match[3]) if match[3] is not None else 1
        if last < first or step < 1:
            raise ValueError(f"数组 {value!r} 中的范围 {part!r} 无效：结束须不小于开始，步长须为正")
        if last > MAX_INDEX:
            raise ValueError(f"数组下标最大为 {MAX_INDEX}，{part!r} 超出")
        indices.update(range(first, last + 1, step))
        if len(indices) > max_tasks:
            raise ValueError(f"数组 {value!r} 的任务数超过上限 {max_tasks}")
    return ArraySpec(tuple(sorted(indices)), max_running)


def check_filename(pattern: str) -> None:
    """提交时校验文件名模式：补零宽度不超过 MAX_PAD，否则 ValueError（在分配任何东西之前）。"""
    for m in _PATTERN.finditer(pattern):
        digits = m[1]
        # 先看位数再转整数：几十位的宽度不必变成整数就能判定超限
        if digits and (len(digits) > 2 or int(digits) > MAX_PAD):
            shown = digits if len(digits) <= 24 else digits[:24] + "…"
            raise ValueError(
                f"文件名模式 %{shown}{m[2]} 的补零宽度 {shown} 超过上限 {MAX_PAD}（Slurm 的最大宽度也是 10）"
            )


def expand_filename(
    pattern: str,
    *,
    job_id: int,
    name: str,
    account: str,
    array_job_id: int | None = None,
    array_task_id: int | None = None,
) -> str:
    """展开 Slurm 文件名模式：%j 作业号、%x 作业名、%u 用户（账户）、%A 数组主作业号、%a 数组下标、
    %% 百分号；数字可带宽度，如 %5j 补零（同 Slurm，最大 MAX_PAD；更大的宽度 ValueError，
    提交时由 check_filename 先行拒绝）。

    不是数组的作业：%A 为作业号，%a 为 Slurm 的 NO_VAL（4294967294）。其他模式（如 %N 节点名，
    提交时未知）原样保留。
    """
    if "%" not in pattern:
        return pattern
    check_filename(pattern)
    table = {
        "j": str(job_id),
        "x": name,
        "u": account,
        "A": str(array_job_id if array_job_id is not None else job_id),
        "a": str(array_task_id) if array_task_id is not None else "4294967294",
        "%": "%",
    }

    def sub(m: re.Match[str]) -> str:
        value = table.get(m[2])
        if value is None:
            return m[0]
        return value.zfill(int(m[1])) if m[1] and value.isdigit() else value

    return _PATTERN.sub(sub, pattern)


_REF = re.compile(r"(\d{1,18})(?:_(\d{1,7}))?", re.ASCII)


def parse_job_ref(value: str) -> tuple[int, int | None]:
    """作业引用：“12” 为作业（数组主作业号则指整个数组），“12_3” 为数组 12 的下标 3。"""
    match = _REF.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"作业号无效：{value!r}（应为数字，数组任务写作 作业号_下标，如 12_3）")
    return int(match[1]), int(match[2]) if match[2] is not None else None
