"""Slurm 的主机列表写法：node[01-03,07],gpu1 与节点名列表之间互转（纯函数）。

展开用于 -w/-x 等输入；压缩用于 SLURM_JOB_NODELIST 等输出，写法与 Slurm 相同：
同一前缀、同一补零宽度的编号合成一个方括号，编号按数值排序，连续的写成范围。
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

# 展开后的节点名上限：防止 n[0-99999999] 这样的输入耗尽内存
MAX_NODE_NAMES = 10_000

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(r"(\d{1,9})(?:-(\d{1,9}))?", re.ASCII)


def split_top(text: str) -> list[str]:
    """按不在方括号里的逗号切分：node[1,3],gpu1 → node[1,3]、gpu1。"""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def expand_one(item: str, field: str, budget: int) -> list[str]:
    match = _BRACKET.search(item)
    if match is None:
        if not _HOST.fullmatch(item):
            raise ValueError(f"{field} 中的节点名 {item!r} 无效")
        return [item]
    names: list[str] = []
    for piece in match[1].split(","):
        rng = _RANGE.fullmatch(piece.strip())
        if rng is None:
            raise ValueError(
                f"{field} 中的 {item!r} 无效：方括号里应为 01-03、1,3,5 这样的数字范围"
            )
        first, last = rng[1], rng[2] or rng[1]
        if int(last) < int(first):
            raise ValueError(f"{field} 中的范围 {piece!r} 无效：结束须不小于开始")
        if int(last) - int(first) + len(names) >= budget:
            raise ValueError(f"{field} 展开后超过 {MAX_NODE_NAMES} 个节点名")
        width = len(first)  # node[01-10]：保留补零宽度，同 Slurm
        for n in range(int(first), int(last) + 1):
            head = item[: match.start()] + str(n).zfill(width)
            names.extend(expand_one(head + item[match.end() :], field, budget - len(names)))
    return names


def expand(hostlist: str, field: str = "节点列表") -> list[str]:
    """主机列表 → 节点名：node[01-03,07],gpu1 → node01 node02 node03 node07 gpu1（保序、去重）。"""
    names: list[str] = []
    for part in split_top(hostlist):
        if part.strip():
            names.extend(expand_one(part.strip(), field, MAX_NODE_NAMES - len(names)))
    return list(dict.fromkeys(names))


_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def number_ranges(numbers: list[int]) -> str:
    """排好序的编号 → 3-5,7（Slurm 的 bit_fmt；数组下标用）。"""
    return _ranges(numbers, 0) if numbers else ""


def _ranges(numbers: list[int], width: int) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        first, last = str(start).zfill(width), str(prev).zfill(width)
        parts.append(first if start == prev else f"{first}-{last}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def compress(names: Iterable[str]) -> str:
    """节点名 → 主机列表：node01,node02,node03,node07 → node[01-03,07]；只有一个编号时不加方括号。"""
    groups: dict[tuple[str, int], set[int]] = defaultdict(set)
    plain: set[str] = set()
    unpadded: list[tuple[str, str]] = []
    for name in names:
        m = _NUMBERED.match(name)
        if m is None:
            plain.add(name)
        elif m[2].startswith("0") and len(m[2]) > 1:
            # 补零宽度是写法的一部分：node1 与 node01 是不同的节点，不合并
            groups[(m[1], len(m[2]))].add(int(m[2]))
        else:
            unpadded.append((m[1], m[2]))
    for prefix, digits in unpadded:
        # 不补零的编号位数不少于某个补零宽度时，按那个宽度写出来也是它自己（node10 之于 node08），
        # Slurm 把它并进那个范围：取能容下它的最大宽度，没有就单独一组
        widths = [w for (p, w) in groups if p == prefix and 0 < w <= len(digits)]
        groups[(prefix, max(widths, default=0))].add(int(digits))
    parts = sorted(plain)
    for (prefix, width), numbers in sorted(groups.items()):
        ordered = sorted(numbers)
        body = _ranges(ordered, width)
        parts.append(f"{prefix}{body}" if len(ordered) == 1 else f"{prefix}[{body}]")
    return ",".join(sorted(parts, key=_sort_key))


def _sort_key(part: str) -> tuple[str, str]:
    prefix = re.split(r"[\[\d]", part, maxsplit=1)[0]
    return prefix, part


def compress_counts(counts: Iterable[int]) -> str:
    """每节点的数目 → Slurm 的写法（SLURM_TASKS_PER_NODE、SLURM_JOB_CPUS_PER_NODE）：
    [2, 2, 2, 1] → 2(x3),1；连续相同的合并，只出现一次的不加 (x1)。"""
    parts: list[str] = []
    run: list[int] = []
    for n in [*counts, None]:
        if run and n == run[0]:
            run.append(n)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}(x{len(run)})")
        run = [] if n is None else [n]
    return ",".join(parts)
