"""请求与响应里的资源字段（新增，议题 16）：字段名同 Slurm REST 的 job_desc_msg，
换算与校验在 conductor/request.py（提交时，422 指明字段）。"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

PositiveInt = Annotated[int, Field(ge=1, le=100_000, strict=True)]


class JobResourceRequest(BaseModel):
    """提交请求里的资源字段（JobProperties 继承它）。"""

    tasks: PositiveInt | None = Field(
        None,
        description="任务数（新增，sbatch 的 -n/--ntasks），整个作业的：按 block 分布摊到各节点，"
        "每节点 CPU = ⌈tasks / nodes⌉ × cpus_per_task；不给时为 nodes × ntasks_per_node；"
        "不能少于节点数",
        examples=[4],
    )
    nodes: str | int | None = Field(
        None,
        description="节点数（新增，sbatch 的 -N）：N 或范围 N-M（按 N 分配，同 sbatch）；"
        "CPU、内存、GPU 与通用资源都是每个节点的量；required_nodes 列出的更多时提高到其个数",
        examples=["2"],
    )
    memory_per_cpu: str | int | None = Field(
        None,
        description="每 CPU 内存（新增，--mem-per-cpu），写法同 memory_per_node；"
        "与明确给出的 memory_per_node 互斥",
        examples=["100M"],
    )
    tres_per_node: str | None = Field(
        None,
        max_length=1024,
        description="每节点的通用资源（新增，--gres / --gpus-per-node）：逗号分隔的 "
        "gres/名称[:类型][:数量]，只有 gpu 可带类型",
        examples=["gres/gpu:2", "gres/gpu:a100:2,gres/nvme:1"],
    )
    tres_per_job: str | None = Field(
        None,
        max_length=1024,
        description="整个作业的通用资源（新增，--gpus/-G），写法同 tres_per_node；"
        "多节点作业须能平均分到各节点",
        examples=["gres/gpu:2"],
    )
    tres_per_task: str | None = Field(
        None,
        max_length=1024,
        description="每任务的通用资源（新增，--gpus-per-task），乘以每节点的任务数",
        examples=["gres/gpu:1"],
    )
    cpus_per_tres: str | None = Field(
        None,
        max_length=255,
        description="每 GPU 的 CPU 数（新增，--cpus-per-gpu），如 gres/gpu:4；与明确给出的 "
        "cpus_per_task 互斥；CPU 取 GPU 数 × 它与任务数中较大者",
        examples=["gres/gpu:4"],
    )
    memory_per_tres: str | None = Field(
        None,
        max_length=255,
        description="每 GPU 内存（新增，--mem-per-gpu），如 gres/gpu:16G；与 memory_per_node、"
        "memory_per_cpu 互斥",
        examples=["gres/gpu:16G"],
    )
    constraints: str | None = Field(
        None,
        max_length=1024,
        description="节点特性（新增，-C/--constraint）：a100、a100|h100（任一）、a100&ib（同时具备）",
        examples=["a100|h100"],
    )
    required_nodes: list[str] | str | None = Field(
        None,
        description="指定节点（新增，-w/--nodelist）：节点名列表或 Slurm 主机列表写法 node[01-03]；"
        "作业要用到列出的每个节点，列出的多于 nodes 时节点数提高到其个数",
        examples=[["node-01"], "node-01"],
    )
    excluded_nodes: list[str] | str | None = Field(
        None,
        description="排除的节点（新增，-x/--exclude）：节点名列表或主机列表写法，如 node[01-03],gpu7",
        examples=[["node-02", "node-03"], "node[02-03]"],
    )

    @field_validator("required_nodes", "excluded_nodes")
    @classmethod
    def _node_list_size(cls, value: list[str] | str | None) -> list[str] | str | None:
        # 写法在提交时由 conductor/request.py 检查；这里只挡住过大的请求
        items = [value] if isinstance(value, str) else value or []
        if len(items) > 10_000 or sum(len(v) for v in items) > 65_536:
            raise ValueError("节点列表过长（最多 10000 个名字、共 65536 个字符）")
        return value


class JobResources(BaseModel):
    """作业请求与分配到的资源（新增，议题 16）：查询与列表共用。"""

    tres_req_str: str = Field(
        "",
        description="请求的资源（新增，Slurm 的 TRES 写法，同 scontrol 的 TRES=）："
        "cpu=4,mem=8G,node=1,gres/gpu=2",
    )
    tres_alloc_str: str = Field(
        "",
        description="分配到的资源（新增，同 sacct 的 AllocTRES 写法）；尚未运行为空串",
    )
    ntasks: int = Field(1, description="任务数（新增）")
    gpus: int = Field(0, description="GPU 数（新增）")
    gpu_type: str | None = Field(None, description="GPU 类型（新增），如 a100；不限类型为 null")
    gres: dict[str, float] = Field(
        default_factory=dict, description="GPU 以外的通用资源（新增）：名称 → 数量"
    )
    constraints: str | None = Field(None, description="节点特性表达式（新增）；不限为 null")
    required_nodes: list[str] = Field(default_factory=list, description="指定的节点（新增）")
    excluded_nodes: list[str] = Field(default_factory=list, description="排除的节点（新增）")
