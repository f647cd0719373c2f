"""节点特性与 `-C/--constraint` 表达式（纯函数）。

特性是节点的小写标签（含 GPU 型号，如 `a100`）。表达式的写法取 Slurm 的常用子集：
`a100`、`a100|h100`（任一）、`a100&ib`（都要），可加括号；`&` 比 `|` 结合得紧，
与 Slurm 相同。写错时抛出 ValueError，消息指出位置：提交时据此 422，而不是让作业永远排队。
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

# 特性名：字母、数字与 _ . : - （Slurm 的特性名也只用这些）
_TOKEN = re.compile(r"\s*(?:([A-Za-z0-9_.:\-]+)|([&|()]))")
_MULTI_NODE_SYNTAX = "*[]"


@dataclass(frozen=True)
class Constraint:
    """解析好的表达式：matches 判断一组节点特性是否满足，names 是其中出现的全部特性名。"""

    text: str
    names: frozenset[str]
    _test: Callable[[frozenset[str]], bool]

    def matches(self, features: Iterable[str]) -> bool:
        return self._test(frozenset(features))


def _tokens(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None and text[pos] in _MULTI_NODE_SYNTAX:
            # Slurm 的 a100*2（几个节点要有该特性）与 [a|b]（所有节点同一种）只对多节点作业有意义
            raise ValueError(
                f"约束 {text!r} 第 {pos + 1} 个字符 {text[pos]!r}：Slurm 的 特性*节点数 与 [..] 写法"
                "暂不支持（本版本作业只在一个节点上运行）"
            )
        if m is None:
            raise ValueError(
                f"约束 {text!r} 第 {pos + 1} 个字符 {text[pos]!r} 无效（只能用特性名、& | 与括号）"
            )
        start = m.start(1) if m.group(1) else m.start(2)
        out.append((start, m.group(1).lower() if m.group(1) else m.group(2)))
        pos = m.end()
    return out


@lru_cache(maxsize=1024)
def parse_constraint(text: str) -> Constraint:
    """解析 `-C` 表达式；语法错误抛出 ValueError。同一表达式每轮要对每个节点求值，故缓存。"""
    tokens = _tokens(text)
    if not tokens:
        raise ValueError("约束为空：请写特性名，例如 a100、a100|h100、a100&ib")
    names: set[str] = set()
    pos = 0

    def peek() -> str | None:
        return tokens[pos][1] if pos < len(tokens) else None

    def where() -> str:
        return f"第 {tokens[pos][0] + 1} 个字符" if pos < len(tokens) else "末尾"

    def either() -> Callable[[frozenset[str]], bool]:
        nonlocal pos
        parts = [both()]
        while peek() == "|":
            pos += 1
            parts.append(both())
        return parts[0] if len(parts) == 1 else lambda f: any(p(f) for p in parts)

    def both() -> Callable[[frozenset[str]], bool]:
        nonlocal pos
        parts = [atom()]
        while peek() == "&":
            pos += 1
            parts.append(atom())
        return parts[0] if len(parts) == 1 else lambda f: all(p(f) for p in parts)

    def atom() -> Callable[[frozenset[str]], bool]:
        nonlocal pos
        token = peek()
        if token == "(":
            pos += 1
            inner = either()
            if peek() != ")":
                raise ValueError(f"约束 {text!r} 的括号没有闭合（{where()}）")
            pos += 1
            return inner
        if token is None or token in "&|)":
            shown = "结尾" if token is None else repr(token)
            raise ValueError(f"约束 {text!r} 在{where()}处应为特性名或 (，却是{shown}")
        pos += 1
        names.add(token)
        return lambda f: token in f

    test = either()
    if pos != len(tokens):
        raise ValueError(
            f"约束 {text!r} 在{where()}处多出 {tokens[pos][1]!r}（特性之间用 & 或 | 连接）"
        )
    return Constraint(text, frozenset(names), test)


def satisfies(constraints: str | None, features: Iterable[str]) -> bool:
    """节点特性满足作业的约束（没有约束即满足）。"""
    return (
        constraints is None
        or not constraints.strip()
        or parse_constraint(constraints).matches(features)
    )
