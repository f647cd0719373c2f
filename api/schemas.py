"""REST 契约的请求与响应模型（字段名与旧系统一致，见 CONTRACT.md）。"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from conductor.arrays import parse_array
from conductor.dependencies import parse_dependency
from conductor.priority import MAX_PRIORITY, MIN_PRIORITY
from conductor.timefmt import parse_memory, parse_time_limit

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PositiveInt = Annotated[int, Field(ge=1, le=100_000, strict=True)]


class JobProperties(BaseModel):
    """作业属性（请求中的 job 对象）。"""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1, max_length=255, description="记账账户")
    environment: dict[str, str] = Field(default_factory=dict, description="附加环境变量")
    current_working_directory: str = Field(
        min_length=1, max_length=1024, description="工作目录（绝对路径）"
    )
    standard_output: str = Field(
        min_length=1, max_length=512, description="标准输出文件，相对工作目录或绝对路径"
    )
    standard_error: str = Field(
        min_length=1, max_length=512, description="标准错误文件，相对工作目录或绝对路径"
    )
    ntasks_per_node: PositiveInt = Field(1, description="每节点任务数")
    cpus_per_task: PositiveInt = Field(1, description="每任务 CPU 数")
    memory_per_node: str | int = Field("1G", description="每节点内存，如 32G；纯数字按 MB 计")
    name: str = Field(min_length=1, max_length=255, description="作业名")
    time_limit: str | int | None = Field(
        None,
        description="时间限制：分钟数或 Slurm 格式，0/UNLIMITED 为不限；不给时取分区的默认时限",
    )
    partition: str = Field(min_length=1, max_length=100, description="分区")
    exclusive: bool = Field(False, description="独占节点")
    # ---- 以下为新增字段（docs/scheduling.md）----
    priority: int = Field(
        0,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        strict=True,
        description="优先级（新增）：越高越先；每等待一分钟有效优先级加 1",
    )
    array: str | None = Field(
        None, max_length=255, description="作业数组（新增），如 0-99%10、1,3,5-7"
    )
    dependency: str | None = Field(
        None, max_length=1024, description="依赖（新增），如 afterok:12:13,afterany:14、singleton"
    )
    hold: bool = Field(False, description="提交后先挂起（新增），放行后才参与调度")

    @field_validator("current_working_directory")
    @classmethod
    def _absolute_cwd(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"工作目录必须是绝对路径：{value!r}")
        if "\0" in value:
            raise ValueError("工作目录不能包含 NUL 字符")
        return value

    @field_validator("standard_output", "standard_error", "name", "account", "partition")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\0" in value or "\n" in value:
            raise ValueError("不能包含 NUL 或换行字符")
        return value

    @field_validator("environment")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not ENV_NAME.fullmatch(key):
                raise ValueError(
                    f"环境变量名无效：{key!r}（只能含字母、数字、下划线，且不以数字开头）"
                )
            if "\0" in val:
                raise ValueError(f"环境变量 {key} 的值不能包含 NUL 字符")
        return value

    @field_validator("memory_per_node")
    @classmethod
    def _memory(cls, value: str | int) -> str | int:
        parse_memory(value)
        return value

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_time_limit(value)
        return value

    @field_validator("array")
    @classmethod
    def _array(cls, value: str | None) -> str | None:
        if value is not None:
            parse_array(value, max_tasks=100_000)  # 写法；数量上限在提交时按配置检查
        return value

    @field_validator("dependency")
    @classmethod
    def _dependency(cls, value: str | None) -> str | None:
        if value is not None:
            parse_dependency(value)  # 写法；被依赖的作业是否存在在提交时检查
        return value


class SubmitRequest(BaseModel):
    """POST /jobs/submit 的请求体。"""

    job: JobProperties
    script: str = Field(description="bash 脚本内容")

    @field_validator("script")
    @classmethod
    def _script(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("脚本不能为空")
        if "\0" in value:
            raise ValueError("脚本不能包含 NUL 字符")
        return value


class SubmitResponse(BaseModel):
    job_id: str


MAX_BATCH = 1000


class BatchSubmitRequest(BaseModel):
    """POST /jobs/submit/batch：一次提交多个作业，一个事务，要么全部保存要么全部拒绝。"""

    jobs: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH, description="作业列表")


class BatchSubmitResponse(BaseModel):
    job_ids: list[str] = Field(description="与请求顺序一致的作业 ID")


class JobTimes(BaseModel):
    submit_time: str | None
    start_time: str | None
    end_time: str | None
    eligible_time: str | None
    elapsed_time: str
    limit_time: str


class JobLog(BaseModel):
    stdout: str
    stderr: str


class JobDetail(BaseModel):
    job_name: str
    user: str
    partition: str
    allocated_cpus: int
    allocated_nodes: int
    node_list: str
    exit_code: str | None
    work_dir: str
    data_source: str
    account: str
    # ---- 新增 ----
    priority: int = 0
    dependency: str | None = None
    array_job_id: int | None = None
    array_task_id: int | None = None


class ArrayTask(BaseModel):
    """数组中的一个任务（查询数组主作业时列出）。"""

    job_id: int
    array_task_id: int
    state: str
    state_reason: str | None
    exit_code: str | None
    node_list: str


class JobQueryResponse(BaseModel):
    job_id: str
    state: str
    error_msg: str | None
    time: JobTimes
    job_log: JobLog
    detail: JobDetail
    state_reason: str | None = Field(
        None, description="排队原因（新增，Slurm 的 Reason）：Resources、Priority、Dependency …"
    )
    array_tasks: list[ArrayTask] | None = Field(
        None, description="查询数组主作业时：全部任务的概况（新增）"
    )


class JobUpdateRequest(BaseModel):
    """PATCH /jobs/{job_id}（新增）：修改排队中作业的优先级或时限。"""

    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(None, ge=MIN_PRIORITY, le=MAX_PRIORITY, strict=True)
    time_limit: str | int | None = Field(None, description="新时限；0/UNLIMITED 为不限")

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_time_limit(value)
        return value


class MessageResponse(BaseModel):
    msg: str


class JobStats(BaseModel):
    total: int = 0
    running: int = 0
    pending: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timeout: int = 0
    node_fail: int = 0


class ResourceStats(BaseModel):
    total_cpus: int
    allocated_cpus: int
    available_cpus: int
    utilization_rate: float


class NodeInfo(BaseModel):
    node_name: str
    partition: str
    total_cpus: int
    allocated_cpus: int
    available_cpus: int
    available: bool
    utilization_rate: float
    node_id: str


class JobSummary(BaseModel):
    job_id: int
    name: str
    account: str
    state: str
    allocated_cpus: int
    submit_time: str | None
    start_time: str | None


class JobListItem(JobSummary):
    """GET /jobs 的一行（新增接口）：在总览摘要之上加分区、节点、结束时间与退出码。"""

    partition: str
    node_list: str
    end_time: str | None
    elapsed_time: str
    exit_code: str | None
    state_reason: str | None = None
    priority: int = 0
    array_job_id: int | None = None
    array_task_id: int | None = None


class JobListResponse(BaseModel):
    jobs: list[JobListItem]
    next_cursor: str | None = Field(description="下一页的游标；为空表示没有更多")


class DashboardResponse(BaseModel):
    job_stats: JobStats
    resource_stats: ResourceStats
    node_info: list[NodeInfo]
    running_jobs: list[JobSummary]
    pending_jobs: list[JobSummary]
