"""作业数组：`--array` 写法的解析，以及输出文件名中 %A %a %j %J %x %u %N %n %t %% 的展开。"""

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


# 短主机名是 DNS 的一段，最长 63 个字符：提交时按这个长度估算展开后的路径
MAX_SHORT_NAME = 63


def short_node_name(node_name: str) -> str:
    """%N：节点名到第一个点为止（Slurm 的短主机名）；斜杠换成 _，展开后不会走出所在目录。"""
    short = node_name.split(".", 1)[0] or "_"  # 不含点：展开结果不会是 “..”
    return short.replace("/", "_")[:MAX_SHORT_NAME]


def _table(
    job_id: int, name: str, account: str, array_job_id: int | None, array_task_id: int | None
) -> dict[str, str]:
    return {
        "j": str(job_id),
        # %J 为“作业号.步号”，批处理步只写作业号（同 Slurm 的 sbatch）
        "J": str(job_id),
        "x": name,
        "u": account,
        "A": str(array_job_id if array_job_id is not None else job_id),
        "a": str(array_task_id) if array_task_id is not None else "4294967294",
        # 批处理脚本是作业的第 0 个节点上的第 0 个任务（本版本作业只有一个节点）
        "n": "0",
        "t": "0",
        "%": "%",
    }


def _substitute(pattern: str, table: dict[str, str]) -> str:
    """按表展开；不在表里的模式原样保留。"""

    def sub(m: re.Match[str]) -> str:
        value = table.get(m[2])
        if value is None:
            return m[0]
        if m[1] and value.isdigit():
            value = value.zfill(int(m[1]))
        return value

    return _PATTERN.sub(sub, pattern)


def needs_node(pattern: str) -> bool:
    """文件名模式是否含 %N（节点名）：只有作业开始、知道节点时才能展开。"""
    return any(m[2] == "N" for m in _PATTERN.finditer(pattern))


def expand_filename(
    pattern: str,
    *,
    job_id: int,
    name: str,
    account: str,
    array_job_id: int | None = None,
    array_task_id: int | None = None,
    node_name: str | None = None,
) -> str:
    """展开 Slurm 文件名模式：%j 作业号、%J 作业号（批处理步）、%x 作业名、%u 用户（账户）、%A 数组主作业号、%a 数组下标、
    %N 短节点名、%n 节点序号、%t 任务序号（批处理脚本都为 0）、%% 百分号；数字可带宽度，
    如 %5j 补零（同 Slurm，最大 MAX_PAD；更大的宽度 ValueError，提交时由 check_filename 先行拒绝）。

    不是数组的作业：%A 为作业号，%a 为 Slurm 的 NO_VAL（4294967294）。node_name 为 None 时
    %N 原样保留（提交时节点未知：用 defer_node 与 expand_node 分两步展开）；其他模式原样保留。
    """
    if "%" not in pattern:
        return pattern
    check_filename(pattern)
    table = _table(job_id, name, account, array_job_id, array_task_id)
    if node_name is not None:
        table["N"] = short_node_name(node_name)
    return _substitute(pattern, table)


def defer_node(
    pattern: str,
    *,
    job_id: int,
    name: str,
    account: str,
    array_job_id: int | None = None,
    array_task_id: int | None = None,
) -> str:
    """提交时展开 %N 以外的一切，结果仍是模式（展开出的 % 写成 %%）：开始时交给 expand_node。

    这样作业名里的 “%N” 或用户写的 “%%N” 不会在第二步被当成节点名。"""
    check_filename(pattern)
    table = _table(job_id, name, account, array_job_id, array_task_id)

    def sub(m: re.Match[str]) -> str:
        if m[2] == "%":
            return "%%"
        value = table.get(m[2])
        if value is None:
            return m[0]  # %N 与不认识的模式留给第二步
        if m[1] and value.isdigit():
            value = value.zfill(int(m[1]))
        return value.replace("%", "%%")

    return _PATTERN.sub(sub, pattern)


def expand_node(pattern: str, node_name: str) -> str:
    """第二步（作业开始、节点已知时）：展开 defer_node 留下的 %N 与 %%。"""
    table = {"N": short_node_name(node_name), "%": "%"}
    return _PATTERN.sub(lambda m: table.get(m[2], m[0]), pattern)


_REF = re.compile(r"(\d{1,18})(?:_(\d{1,7}))?", re.ASCII)


def parse_job_ref(value: str) -> tuple[int, int | None]:
    """作业引用：“12” 为作业（数组主作业号则指整个数组），“12_3” 为数组 12 的下标 3。"""
    match = _REF.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"作业号无效：{value!r}（应为数字，数组任务写作 作业号_下标，如 12_3）")
    return int(match[1]), int(match[2]) if match[2] is not None else None
