"""资源向量：CPU、内存、GPU 与通用资源（gres）用同一种值表示，沿用 Ray 的资源名。

"CPU"、"memory"（字节）、"GPU"，其余为节点用 `ray start --resources` 声明的自定义资源。
准入、策略、账户上限、数据库与各展示处都用它，不为 CPU 另写一套：新增一种资源不改调用方。
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

CPU = "CPU"
MEMORY = "memory"
GPU = "GPU"
# 浮点累加的容差：Ray 的资源以 1e-4 为粒度
EPSILON = 1e-6


@dataclass(frozen=True)
class Resources(Mapping[str, float]):
    """不可变的资源向量；缺省的资源为 0。只保留正值，比较与相加逐项进行。"""

    amounts: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {k: float(v) for k, v in self.amounts.items() if v and v > EPSILON}
        object.__setattr__(self, "amounts", clean)

    @classmethod
    def of(cls, cpu: float = 0, memory: float = 0, gpu: float = 0, **custom: float) -> Resources:
        return cls({CPU: cpu, MEMORY: memory, GPU: gpu, **custom})

    def __getitem__(self, name: str) -> float:
        return self.amounts.get(name, 0.0)

    def __iter__(self) -> Iterator[str]:
        return iter(self.amounts)

    def __len__(self) -> int:
        return len(self.amounts)

    def __hash__(self) -> int:
        return hash(frozenset(self.amounts.items()))

    def __add__(self, other: Mapping[str, float]) -> Resources:
        # 直接读两边的字典：调度策略每轮对每个作业、每个候选节点都要加、比较一次，经 Mapping 的通用方法慢三倍
        mine, theirs = self.amounts, _plain(other)
        return Resources({k: mine.get(k, 0.0) + theirs.get(k, 0.0) for k in {*mine, *theirs}})

    def __sub__(self, other: Mapping[str, float]) -> Resources:
        """可以得到负值的差（超额时用它找出哪一项不够）；负值不保留，用 shortfall 取。"""
        mine, theirs = self.amounts, _plain(other)
        return Resources({k: mine.get(k, 0.0) - theirs.get(k, 0.0) for k in {*mine, *theirs}})

    def scaled(self, factor: float) -> Resources:
        return Resources({k: v * factor for k, v in self.items()})

    def fits_in(self, capacity: Mapping[str, float]) -> bool:
        """每一项都不超过 capacity。"""
        limit = _plain(capacity)
        return all(v <= limit.get(k, 0.0) + EPSILON for k, v in self.amounts.items())

    def fits_with(self, extra: Mapping[str, float], capacity: Mapping[str, float]) -> bool:
        """(self + extra).fits_in(capacity)，不构造中间的向量（策略对每个作业、每个候选节点都问一次）。"""
        mine, theirs, limit = self.amounts, _plain(extra), _plain(capacity)
        return all(
            mine.get(k, 0.0) + theirs.get(k, 0.0) <= limit.get(k, 0.0) + EPSILON
            for k in {*mine, *theirs}
        )

    def shortfall(self, capacity: Mapping[str, float]) -> dict[str, float]:
        """超出 capacity 的各项及超出量（空即放得下）：错误消息据此点名缺的资源。"""
        return {
            k: v - capacity.get(k, 0.0)
            for k, v in self.items()
            if v > capacity.get(k, 0.0) + EPSILON
        }

    @property
    def cpu(self) -> float:
        return self[CPU]

    @property
    def memory(self) -> float:
        return self[MEMORY]

    @property
    def gpu(self) -> float:
        return self[GPU]


NONE = Resources()


def _plain(amounts: Mapping[str, float]) -> Mapping[str, float]:
    """向量背后的字典（别的映射原样返回）：缺省项的 get 与 Resources 相同，都是 0。"""
    return amounts.amounts if isinstance(amounts, Resources) else amounts


def job_request(
    cpus: float, memory_bytes: float, gpus: float = 0, gres: Mapping[str, float] | None = None
) -> Resources:
    """jobs 表一行的资源列 → 资源向量（gres 的名称即节点声明的 Ray 自定义资源名）。"""
    return Resources({**(gres or {}), CPU: cpus, MEMORY: memory_bytes, GPU: gpus})


def _slurm_mem(nbytes: float) -> str:
    """Slurm 的 TRES 内存写法：以 M 为单位，能被 1024 整除才进位（4000M、32G、1536M）。"""
    value, units = -(-int(nbytes) // 2**20), "MGTP"
    i = 0
    while value and value % 1024 == 0 and i < len(units) - 1:
        value, i = value // 1024, i + 1
    return f"{value}{units[i]}"


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def format_tres(
    cpus: float,
    memory_bytes: float,
    gpus: float = 0,
    gpu_type: str | None = None,
    gres: Mapping[str, float] | None = None,
    nodes: int = 1,
) -> str:
    """Slurm 的 TRES 串（scontrol 的 TRES=、sacct 的 AllocTRES 同一写法，去掉 billing）：
    cpu=4,mem=8G,node=1,gres/gpu=2,gres/gpu:a100=2。顺序同 Slurm：cpu、mem、node，再 gres 按名称。

    整节点内存（--mem=0）在分配前 memory_bytes 为 0，此时不列 mem。"""
    parts = [f"cpu={_count(cpus)}"]
    if memory_bytes:
        parts.append(f"mem={_slurm_mem(memory_bytes)}")
    parts.append(f"node={nodes}")
    named = dict(gres or {})
    if gpus:
        named["gpu"] = gpus
    for name in sorted(named):
        parts.append(f"gres/{name}={_count(named[name])}")
        if name == "gpu" and gpu_type:
            parts.append(f"gres/gpu:{gpu_type}={_count(gpus)}")
    return ",".join(parts)
