"""把 GET /jobs 的列表项补成 squeue/sacct/scontrol 要的样子（纯函数）：字段缺失时从已有字段推出。"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNITS = "MGTPE"
_MEM = re.compile(r"(?:^|,)mem=([\d.]+)([KMGTP]?)")


def convert_mb(mb: float) -> str:
    """src/common/slurm_protocol_defs.c 的 convert_num_unit（UNIT_MEGA，不要求整除）：
    满 1024 进一级，整数印整数，否则保留两位小数（1024 → 1G，1500 → 1.46G）。"""
    value, i = float(mb), 0
    while value >= 1024 and i < len(_UNITS) - 1:
        value /= 1024
        i += 1
    return f"{int(value)}{_UNITS[i]}" if value == int(value) else f"{value:.2f}{_UNITS[i]}"


def memory_mb(item: Mapping[str, Any]) -> int | None:
    """每节点内存（MB）：memory_bytes，没有时由 tres_req_str 的 mem= 除以节点数推出。"""
    if item.get("memory_bytes") is not None:
        return int(item["memory_bytes"]) // (1024 * 1024)
    match = _MEM.search(str(item.get("tres_req_str") or ""))
    if match is None:
        return None
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[match[2]]
    nodes = max(1, int(item.get("nodes") or 1))
    return int(float(match[1]) * factor) // nodes


def normalize(item: Mapping[str, Any]) -> dict[str, Any]:
    """补上 slurm_output 读的可选键：user（没有时即账户，同查询接口的 detail.user）、
    alloc_tres（tres_alloc_str）、req_mem（每节点内存）。"""
    out = dict(item)
    if not out.get("user"):
        out["user"] = out.get("account")
    if not out.get("alloc_tres") and out.get("tres_alloc_str"):
        out["alloc_tres"] = out["tres_alloc_str"]
    if not out.get("req_mem"):
        mb = memory_mb(out)
        if mb is not None:
            out["req_mem"] = convert_mb(mb)
    return out
