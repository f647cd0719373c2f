"""分区（新增接口）：GET /partitions——配置的分区、默认分区与时限（供 sinfo、scontrol show partition）。"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PrincipalDep, RuntimeDep
from conductor.timefmt import format_limit

router = APIRouter()


class PartitionItem(BaseModel):
    """一个分区（按配置中的顺序）。"""

    name: str = Field(description="分区名")
    default: bool = Field(description="是否默认分区")
    max_time_seconds: int | None = Field(description="时限上限（秒）；不限为 null")
    default_time_seconds: int | None = Field(
        description="未给时限的作业所用的时限（秒）；未设为 null"
    )
    max_time: str = Field(description="时限上限，Slurm 写法（H:MM:SS、D-HH:MM:SS 或 UNLIMITED）")


class PartitionListResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "partitions": [
                        {
                            "name": "default",
                            "default": True,
                            "max_time_seconds": None,
                            "default_time_seconds": None,
                            "max_time": "UNLIMITED",
                        },
                        {
                            "name": "long",
                            "default": False,
                            "max_time_seconds": 172800,
                            "default_time_seconds": 3600,
                            "max_time": "2-00:00:00",
                        },
                    ]
                }
            ]
        }
    )

    partitions: list[PartitionItem] = Field(description="全部分区，按配置中的顺序")


@router.get("/partitions", response_model=PartitionListResponse)
def list_partitions(principal: PrincipalDep, rt: RuntimeDep) -> PartitionListResponse:
    """全部分区与它们的时限；节点归属见 GET /dashboard 的 node_info[].partition。"""
    del principal  # 只需已认证：分区配置对所有账户可见（同 sinfo）
    return PartitionListResponse(
        partitions=[
            PartitionItem(
                name=p.name,
                default=p.is_default,
                max_time_seconds=p.max_time,
                default_time_seconds=p.default_time,
                max_time=format_limit(p.max_time),
            )
            for p in rt.partitions.by_name.values()
        ]
    )
