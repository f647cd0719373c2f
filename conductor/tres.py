"""Slurm 资源写法的解析（纯函数）：TRES 串（gres/gpu:a100:2）、节点名列表（node[01-03]）、
节点特性表达式（a100|h100、a100&ib）。

写法不对一律 ValueError，消息指明字段与哪一段不对：宁可拒绝，也不让作业带着比所求更少的资源运行。
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conductor.hostlist import MAX_NODE_NAMES, expand_one, split_top
from conductor.memory import parse_memory

GPU = "gpu"
# 名称与类型：字母数字加 _ . -（MIG 的类型如 3g.20gb 以数字开头）
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", re.ASCII)
_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_COUNT = re.compile(r"\d{1,6}", re.ASCII)
TRES_FORMS = "应为逗号分隔的 gres/名称[:类型][:数量]，如 gres/gpu:2、gres/gpu:a100:2、gres/nvme:1"


@dataclass(frozen=True)
class Tres:
    """一项 TRES 请求：名称（gpu、nvme…）、类型（只有 gpu 可带，小写）与数量。"""

    name: str
    type: str | None
    count: int

    @property
    def is_gpu(self) -> bool:
        return self.name == GPU

    def spelled(self) -> str:
        """Slurm 的规范写法：gres/gpu:a100:2。"""
        kind = f":{self.type}" if self.type else ""
        return f"gres/{self.name}{kind}:{self.count}"


def _split_entry(entry: str, field: str) -> tuple[str, list[str]]:
    text = entry.strip()
    body = text.removeprefix("gres/").removeprefix("gres:")
    parts = body.split(":")
    name = parts[0]
    if not _NAME.fullmatch(name):
        raise ValueError(f"{field} 中的 {entry!r} 无效：资源名 {name!r} 不合法，{TRES_FORMS}")
    return ("gpu" if name.lower() == GPU else name), parts[1:]


def parse_tres(value: str, field: str) -> list[Tres]:
    """逗号分隔的 gres/名称[:类型][:数量]（gres/ 前缀可省，数量缺省为 1）。

    同一种资源写两次、gpu 以外的资源带类型、sbatch 的附加标志（如 (S:0)）都拒绝。"""
    if not value.strip():
        raise ValueError(f"{field} 不能为空，{TRES_FORMS}")
    found: list[Tres] = []
    for entry in value.split(","):
        name, rest = _split_entry(entry, field)
        kind: str | None = None
        count = 1
        if rest and _COUNT.fullmatch(rest[-1]):
            count = int(rest.pop())
        if len(rest) > 1 or (rest and not _TYPE.fullmatch(rest[0])):
            raise ValueError(f"{field} 中的 {entry.strip()!r} 无效，{TRES_FORMS}")
        if rest:
            kind = rest[0].lower()
            if name != GPU:
                raise ValueError(
                    f"{field} 中的 {entry.strip()!r}：只有 gpu 可以指定类型，{name} 不支持"
                )
        if any(t.name == name for t in found):
            raise ValueError(f"{field} 中资源 {name} 写了不止一次：{value!r}")
        found.append(Tres(name, kind, count))
    return found


def parse_per_gpu(value: str, field: str, memory: bool) -> int:
    """cpus_per_tres / memory_per_tres：gres/gpu:4、gres/gpu:16G（只支持 gpu，同 Slurm）。

    返回每 GPU 的 CPU 数或内存字节数。"""
    forms = "gres/gpu:16G" if memory else "gres/gpu:4"
    name, rest = _split_entry(value, field)
    if name != GPU:
        raise ValueError(f"{field} 只支持 gpu（如 {forms}），不支持 {name}")
    if len(rest) != 1 or not rest[0].strip():
        raise ValueError(f"{field} 格式无效：{value!r}，应如 {forms}")
    if memory:
        return parse_memory(rest[0].strip(), field)
    if not _COUNT.fullmatch(rest[0]) or int(rest[0]) < 1:
        raise ValueError(f"{field} 格式无效：{value!r}，每 GPU 的 CPU 数应为正整数，如 {forms}")
    return int(rest[0])


def parse_nodes(value: str | list[str], field: str) -> list[str]:
    """节点名列表：JSON 数组，或 Slurm 主机列表写法 node[01-03,07],gpu1；去重、保序。"""
    items = value if isinstance(value, list) else split_top(value)
    names: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise ValueError(f"{field} 应为节点名的字符串或字符串列表，实为 {raw!r}")
        item = raw.strip()
        if not item:
            if isinstance(value, list):
                raise ValueError(f"{field} 中有空的节点名")
            continue
        for part in split_top(item) if isinstance(value, list) else [item]:
            names.extend(expand_one(part.strip(), field, MAX_NODE_NAMES - len(names)))
    return list(dict.fromkeys(names))
