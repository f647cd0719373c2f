"""内存请求的解析（Slurm --mem 的写法）与作业环境里的 SLURM_MEM_PER_NODE。"""

from __future__ import annotations

import re

_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MIB = _UNITS["M"]
_MEM_FORMS = "应为正数加可选单位 K、M、G、T（可带 B，如 32G、512MB），小数须带单位，纯数字按 MB 计"
# 数字位数设上限：超长数字串会触发 int() 的位数限制，抛出英文错误。
_MEM_RE = re.compile(
    r"(?P<num>\d{1,20})(?:\.(?P<frac>\d{1,20}))?(?P<unit>[KMGT]?)(?P<b>B?)",
    re.ASCII | re.IGNORECASE,
)


def parse_memory(value: str | int, field: str = "memory_per_node", allow_zero: bool = False) -> int:
    """解析内存请求为字节数；纯数字按 MB 计，与 Slurm 的 --mem 一致。

    field 只用于错误消息；allow_zero 时 0 合法（--mem=0 表示整个节点的内存，由调用方解释）。"""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{field} 格式无效：{value!r}，{_MEM_FORMS}")
    if isinstance(value, int):
        nbytes = value * _MIB
    else:
        match = _MEM_RE.fullmatch(value.strip())
        # 单独的 B 表示字节，小数字节没有意义，所以小数必须配 K/M/G/T。
        if match is None or (match["frac"] and not match["unit"]):
            raise ValueError(f"{field} 格式无效：{value!r}，{_MEM_FORMS}")
        # 没有 K/M/G/T 时：单独的 B 按字节，纯数字按 MB。
        size = _UNITS.get(match["unit"].upper(), 1 if match["b"] else _MIB)
        frac = match["frac"] or ""
        scale = 10 ** len(frac)
        # 用整数运算而非 float，避免 1.1G 之类出现二进制舍入误差。
        nbytes = int(match["num"] + frac) * size // scale
    if nbytes < 0 or (nbytes == 0 and not allow_zero):
        raise ValueError(f"{field} 必须大于 0：{value!r}")
    return nbytes


def slurm_mem_mb(nbytes: int) -> str:
    """SLURM_MEM_PER_NODE 以 MB 计；向上取整，避免作业看到的额度小于实际分配。"""
    _check_nbytes(nbytes)
    return str(-(-nbytes // _MIB))


def _check_nbytes(nbytes: int) -> None:
    if nbytes < 0:
        raise ValueError(f"内存字节数不能为负数：{nbytes!r}")
