"""分区：由配置给出（名称、默认与最大时限、是否默认分区），节点经 Ray 标签或自定义资源归入分区。

节点声明所属分区（可多个）的两种写法，效果相同：
- 标签：`ray start --labels '{"conductor.partition": "gpu,debug"}'`（逗号分隔）；
- 自定义资源：`ray start --resources '{"partition:gpu": 1}'`（ray up 的节点类型里写 resources 更方便）。
都没有声明的节点属于默认分区。没有配置任何分区时只有一个不限时的默认分区。
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, field_validator

from conductor.errors import InvalidJobRequest
from conductor.timefmt import format_limit, parse_time_limit

PARTITION_LABEL = "conductor.partition"
PARTITION_RESOURCE = "partition:"


class PartitionConfig(BaseModel):
    """配置中的一个分区（CONDUCTOR_PARTITIONS 的 JSON 值：{名称: 本结构}）。"""

    model_config = ConfigDict(extra="forbid")

    default: bool = False
    # 作业未给时限时使用；两者的写法与作业的 time_limit 相同（分钟数或 Slurm 格式）
    default_time: str | int | None = None
    max_time: str | int | None = None

    @field_validator("default_time", "max_time")
    @classmethod
    def _time(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_time_limit(value)
        return value


@dataclass(frozen=True)
class Partition:
    name: str
    is_default: bool
    default_time: int | None  # 秒；None 为未设置
    max_time: int | None  # 秒；None 为不限


class PartitionTable:
    """全部分区：提交时校验分区与时限，调度时判定节点归属。"""

    def __init__(self, partitions: list[Partition]) -> None:
        defaults = [p for p in partitions if p.is_default]
        if len(defaults) != 1:
            names = "、".join(p.name for p in defaults) or "无"
            raise ValueError(f"分区配置必须恰好有一个默认分区（default: true），现为：{names}")
        self.default = defaults[0]
        self.by_name = {p.name: p for p in partitions}

    @classmethod
    def from_config(
        cls, config: Mapping[str, PartitionConfig] | None, default_name: str
    ) -> PartitionTable:
        if not config:
            return cls([Partition(default_name, True, None, None)])
        return cls(
            [
                Partition(
                    name,
                    c.default,
                    None if c.default_time is None else parse_time_limit(c.default_time),
                    None if c.max_time is None else parse_time_limit(c.max_time),
                )
                for name, c in config.items()
            ]
        )

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def get(self, name: str | None) -> Partition:
        """按名取分区；未给名称时为默认分区，未知名称 422。"""
        if name is None:
            return self.default
        partition = self.by_name.get(name)
        if partition is None:
            raise InvalidJobRequest(
                "job.partition", f"未知分区：{name!r}（可用分区：{'、'.join(self.names)}）"
            )
        return partition

    def time_limit(self, partition: Partition, requested: int | None, given: bool) -> int | None:
        """作业的有效时限（秒，None 为不限）：未给时取分区默认值，再取分区上限；超过上限 422。"""
        if not given:
            return (
                partition.default_time if partition.default_time is not None else partition.max_time
            )
        if partition.max_time is not None and (requested is None or requested > partition.max_time):
            raise InvalidJobRequest(
                "job.time_limit",
                f"时限 {format_limit(requested)} 超过分区 {partition.name} 的上限 "
                f"{format_limit(partition.max_time)}",
            )
        return requested

    def node_partitions(
        self, labels: Mapping[str, str], resources: Iterable[str] = ()
    ) -> frozenset[str]:
        """节点所属的分区：标签或自定义资源里列出的已配置分区；都没有时为默认分区。"""
        raw = labels.get(PARTITION_LABEL, "")
        named = {p.strip() for p in raw.split(",") if p.strip()}
        named |= {
            r.removeprefix(PARTITION_RESOURCE)
            for r in resources
            if r.startswith(PARTITION_RESOURCE)
        }
        if not named:
            return frozenset({self.default.name})
        return frozenset(named & set(self.by_name))

    def exceeds_max(self, partition_name: str, time_limit: int | None) -> bool:
        """作业时限是否超过分区当前上限（配置改小之后的老作业：PartitionTimeLimit）。"""
        partition = self.by_name.get(partition_name)
        if partition is None or partition.max_time is None:
            return False
        return time_limit is None or time_limit > partition.max_time
