"""REST 契约的请求与响应模型（字段名与旧系统一致，见 CONTRACT.md）。"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.resource_schemas import JobResourceRequest, JobResources
from conductor.arrays import parse_array
from conductor.dependencies import parse_dependency
from conductor.envnames import ENV_NAME, changes_shell_startup
from conductor.memory import parse_memory
from conductor.priority import MAX_PRIORITY, MIN_PRIORITY
from conductor.signalspec import parse_signal_spec, signal_number
from conductor.timefmt import parse_time_limit

PositiveInt = Annotated[int, Field(ge=1, le=100_000, strict=True)]


class JobProperties(JobResourceRequest):
    """作业属性（请求中的 job 对象）。"""

    model_config = ConfigDict(extra="ignore")

    account: str = Field(min_length=1, max_length=255, description="记账账户")
    environment: dict[str, str] = Field(default_factory=dict, description="附加环境变量")
    argv: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="传给批处理脚本的参数（新增；sbatch 脚本之后的参数，脚本里的 $1 $2 …；"
        "同 slurmrestd 的 argv，不含脚本名）",
    )
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
    memory_per_node: str | int = Field(
        "1G",
        description="每节点内存，如 32G；纯数字按 MB 计；0 为整个节点的内存（同 Slurm 的 --mem=0）",
    )
    name: str = Field(min_length=1, max_length=255, description="作业名")
    time_limit: str | int | None = Field(
        None,
        description="时间限制：分钟数或 Slurm 格式，0/UNLIMITED 为不限；不给时取分区的默认时限",
    )
    partition: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="分区；不给时为默认分区（同 sbatch 不带 -p）",
    )
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
    # ---- 议题 18（docs/slurm-compat.md）----
    requeue: bool = Field(
        False,
        strict=True,
        description="节点失败时自动重新排队（新增，sbatch --requeue），而不是以 NODE_FAIL 结束",
    )
    open_mode: Literal["append", "truncate"] | None = Field(
        None,
        description="输出文件的打开方式（新增，--open-mode）：append 追加、truncate 截断；"
        "不给时同 Slurm 的默认（JobFileAppend=0）：每次运行都截断，重新排队后的运行也一样",
    )
    signal: str | None = Field(
        None,
        max_length=64,
        description="时限前的信号（新增，--signal）：[B:]信号[@秒数]，如 USR1@60、B:TERM@120；"
        "秒数默认 60；B: 只发给批处理 shell，否则发给全部作业步的任务；不支持 R:",
        examples=["B:USR1@60"],
    )

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
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and ("\0" in value or "\n" in value):
            raise ValueError("不能包含 NUL 或换行字符")
        return value

    @field_validator("argv")
    @classmethod
    def _argv_no_nul(cls, value: list[str]) -> list[str]:
        for i, arg in enumerate(value):
            if "\0" in arg:
                raise ValueError(f"第 {i + 1} 个脚本参数含 NUL 字符（命令行参数不能含 NUL）")
        return value

    @field_validator("environment")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not ENV_NAME.fullmatch(key):
                raise ValueError(
                    f"环境变量名无效：{key!r}（只能含字母、数字、下划线，且不以数字开头）"
                )
            if changes_shell_startup(key):
                raise ValueError(
                    f"不接受环境变量 {key}：它改变 bash 的启动方式（在脚本之前执行代码或改变解析），"
                    "需要时在脚本里用 set、shopt 或 source 代替"
                )
            if "\0" in val:
                raise ValueError(f"环境变量 {key} 的值不能包含 NUL 字符")
        return value

    @field_validator("memory_per_node")
    @classmethod
    def _memory(cls, value: str | int) -> str | int:
        parse_memory(value, allow_zero=True)
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

    @field_validator("signal")
    @classmethod
    def _signal(cls, value: str | None) -> str | None:
        if value is not None:
            parse_signal_spec(value)
        return value


class SubmitRequest(BaseModel):
    """POST /jobs/submit 的请求体。"""

    job: JobProperties = Field(description="作业属性")
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
    job_id: str = Field(description="新作业的 ID（字符串形式的整数）")


MAX_BATCH = 1000


class BatchSubmitRequest(BaseModel):
    """POST /jobs/submit/batch：一次提交多个作业，一个事务，要么全部保存要么全部拒绝。"""

    jobs: list[SubmitRequest] = Field(min_length=1, max_length=MAX_BATCH, description="作业列表")


class BatchSubmitResponse(BaseModel):
    job_ids: list[str] = Field(description="与请求顺序一致的作业 ID")


class JobTimes(BaseModel):
    """作业的各个时间点（ISO 8601，UTC，带时区）。"""

    submit_time: str | None = Field(description="提交时间")
    start_time: str | None = Field(description="开始运行时间；尚未开始为 null")
    end_time: str | None = Field(description="结束时间；尚未结束为 null")
    eligible_time: str | None = Field(description="可以开始调度的时间")
    elapsed_time: str = Field(description="已运行时长，格式 D-HH:MM:SS")
    limit_time: str = Field(description="时间限制，格式 H:MM:SS、D-HH:MM:SS 或 UNLIMITED")


class JobLog(BaseModel):
    """作业自己的输出文件内容：1 MB 以内整份，否则最后 1000 行并注明已截断。"""

    stdout: str = Field(description="标准输出文件的内容")
    stderr: str = Field(description="标准错误文件的内容")


class JobDetail(JobResources):
    """作业的详细信息（字段名沿用旧系统）。"""

    job_name: str = Field(description="作业名")
    user: str = Field(description="提交用户（即记账账户）")
    partition: str = Field(description="分区")
    allocated_cpus: int = Field(
        description="分配的 CPU 数（ntasks_per_node × cpus_per_task；多节点作业再乘以节点数）"
    )
    allocated_nodes: int = Field(description="分配的节点数；尚未运行为 0")
    node_list: str = Field(
        description="真正运行该作业的节点（多节点作业为 Slurm 主机列表写法，如 node[01-02]，"
        "第一个运行批处理脚本）；尚未运行为空串"
    )
    exit_code: str | None = Field(
        description="Slurm 格式的退出码 code:signal，如 3:0、0:9；尚未结束为 null"
    )
    work_dir: str = Field(description="工作目录")
    data_source: str = Field(description="数据来源，固定为 API")
    account: str = Field(description="记账账户")
    # ---- 新增（docs/scheduling.md）----
    priority: int = Field(0, description="优先级（新增）；有效优先级还要加上等待的分钟数")
    dependency: str | None = Field(None, description="依赖（新增），规范写法；没有依赖为 null")
    array_job_id: int | None = Field(
        None, description="所属作业数组的主作业号（新增）；不是数组为 null"
    )
    array_task_id: int | None = Field(None, description="数组下标（新增）；不是数组为 null")
    unix_user: str = Field(
        "",
        description="作业运行所用的 Unix 用户（新增）：账户映射到的用户，未映射时为服务自身的用户"
        "（user 字段沿用旧系统，是记账账户）",
    )
    # ---- 议题 18：Slurm 命令（squeue、scontrol show job、sacct）需要的字段 ----
    time_limit_seconds: int | None = Field(None, description="时限秒数（新增）；null 为不限")
    restarts: int = Field(0, description="重新排队的次数（新增，scontrol 的 Restarts）")
    cancelled_by_uid: int | None = Field(
        None, description="取消者的 Unix uid（新增，sacct 的 CANCELLED by <uid>）；没被取消为 null"
    )
    requeue: bool = Field(False, description="节点失败时是否自动重新排队（新增，--requeue）")
    held: bool = Field(False, description="是否被挂起（新增，scontrol hold）")
    stdout_path: str = Field("", description="标准输出文件的绝对路径（新增，scontrol 的 StdOut）")
    stderr_path: str = Field("", description="标准错误文件的绝对路径（新增，scontrol 的 StdErr）")
    batch_host: str | None = Field(
        None, description="运行批处理脚本的节点（新增，分配的第一个节点）；不在运行或运行过为 null"
    )
    cpus_per_task: int = Field(1, description="每任务 CPU 数（新增）")
    ntasks_per_node: int = Field(1, description="每节点任务数（新增）")
    memory_bytes: int = Field(
        0, description="每节点内存字节数（新增，scontrol 的 MinMemoryNode）；--mem=0 排队时为 0"
    )
    exclusive: bool = Field(False, description="是否独占节点（新增）")
    open_mode: str | None = Field(None, description="--open-mode（新增）：append、truncate 或 null")
    signal: str | None = Field(
        None, description="--signal（新增），规范写法如 B:USR1@60、USR1@60；没给为 null"
    )
    eligible_time: str | None = Field(None, description="可以开始调度的时间（新增）")


class JobStep(BaseModel):
    """作业的一个作业步（新增，同 sacct 的一行）：12.batch 为批处理脚本，12.0、12.1… 为 srun 启动的。"""

    step_id: str = Field(
        description="作业步 ID：<作业 ID>.batch 或 <作业 ID>.<编号>", examples=["12.0"]
    )
    name: str | None = Field(None, description="作业步名（批处理步为 batch）")
    state: str = Field(
        description="状态：RUNNING、COMPLETED、FAILED、CANCELLED、TIMEOUT、NODE_FAIL、OUT_OF_MEMORY"
    )
    exit_code: str | None = Field(None, description="Slurm 格式的退出码 code:signal；未结束为 null")
    start_time: str | None = Field(None, description="开始时间（ISO 8601，UTC）")
    end_time: str | None = Field(None, description="结束时间；未结束为 null")
    node_list: str = Field("", description="作业步用到的节点（主机列表写法）")
    ntasks: int | None = Field(None, description="任务数")
    max_rss: str | None = Field(
        None,
        description="各任务进程树峰值内存中的最大者，sacct 的 MaxRSS 写法（如 100M、50.24M）；"
        "未测得（未结束、旧作业）为 null",
        examples=["100M"],
    )
    ave_rss: str | None = Field(None, description="各任务峰值内存的平均，sacct 的 AveRSS 写法")
    max_rss_bytes: int | None = Field(None, description="max_rss 的字节数")
    ave_rss_bytes: int | None = Field(None, description="ave_rss 的字节数")
    user_cpu_seconds: float | None = Field(None, description="各任务的用户态 CPU 时间之和（秒）")
    system_cpu_seconds: float | None = Field(None, description="各任务的内核态 CPU 时间之和（秒）")
    total_cpu_seconds: float | None = Field(
        None, description="用户态与内核态之和（秒），即 sacct 的 TotalCPU"
    )


class ArrayTask(BaseModel):
    """数组中的一个任务（查询数组主作业时列出）。"""

    job_id: int = Field(description="该任务的作业 ID")
    array_task_id: int = Field(description="数组下标")
    state: str = Field(description="状态")
    state_reason: str | None = Field(description="排队原因；不在排队为 null")
    exit_code: str | None = Field(description="Slurm 格式的退出码；尚未结束为 null")
    node_list: str = Field(description="运行它的节点名；尚未运行为空串")


class JobQueryResponse(BaseModel):
    """GET /jobs/query/{job_id} 的响应。"""

    job_id: str = Field(description="作业 ID")
    state: str = Field(
        description="状态：PENDING、RUNNING、COMPLETED、FAILED、CANCELLED、TIMEOUT、NODE_FAIL、"
        "OUT_OF_MEMORY（超出 --mem 被 OOM 终止，退出码 0:125）"
    )
    error_msg: str | None = Field(description="失败、超时或丢失的原因；正常时为 null")
    time: JobTimes = Field(description="时间信息")
    job_log: JobLog = Field(description="作业的 stdout 与 stderr")
    detail: JobDetail = Field(description="作业详情")
    state_reason: str | None = Field(
        None,
        description="排队原因（新增，Slurm 的 Reason）：Resources、Priority、Dependency、"
        "JobHeldUser 等；不在排队为 null",
    )
    array_tasks: list[ArrayTask] | None = Field(
        None, description="查询数组主作业时：全部任务的概况（新增）；否则为 null"
    )
    steps: list[JobStep] = Field(
        default_factory=list,
        description="作业步（新增，同 sacct）：开始运行过的作业先列 <id>.batch，再列 srun 的 <id>.0…；"
        "尚未运行为空列表",
    )


class JobUpdateRequest(BaseModel):
    """PATCH /jobs/{job_id}（新增）：修改排队中作业的优先级或时限。"""

    model_config = ConfigDict(extra="forbid")

    priority: int | None = Field(
        None, ge=MIN_PRIORITY, le=MAX_PRIORITY, strict=True, description="新优先级；不改为 null"
    )
    time_limit: str | int | None = Field(
        None, description="新时限（写法同提交）；0/UNLIMITED 为不限；不改为 null"
    )

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_time_limit(value)
        return value


class JobSignalRequest(BaseModel):
    """POST /jobs/{job_id}/signal（新增，同 scancel --signal）：给运行中的作业发信号而不取消它。"""

    model_config = ConfigDict(extra="forbid")

    signal: str | int = Field(description="信号名（USR1、SIGUSR1）或编号（10）", examples=["USR1"])
    batch: bool = Field(
        False,
        description="同 scancel -b：只发给批处理 shell，不发给它的子进程与作业步；"
        "默认（false）发给全部作业步的任务、不发给批处理 shell",
    )
    full: bool = Field(
        False,
        description="同 scancel -f：发给批处理 shell 及其全部子孙（含作业步）；给了它 batch 被忽略",
    )

    @field_validator("signal")
    @classmethod
    def _signal(cls, value: str | int) -> str | int:
        signal_number(str(value))
        return value


class MessageResponse(BaseModel):
    msg: str = Field(description="结果说明")


class JobStats(BaseModel):
    """各状态的作业数。"""

    total: int = Field(0, description="作业总数")
    running: int = Field(0, description="运行中")
    pending: int = Field(0, description="排队中")
    completed: int = Field(0, description="已完成")
    failed: int = Field(0, description="失败")
    cancelled: int = Field(0, description="已取消")
    timeout: int = Field(0, description="超时")
    node_fail: int = Field(0, description="节点失联")
    out_of_memory: int = Field(0, description="超出内存上限（新增）")


class GresStats(BaseModel):
    """一种通用资源的总数与占用（新增，议题 16）。"""

    total: float = Field(description="总数")
    allocated: float = Field(description="已分配给作业的数量")
    available: float = Field(description="空闲数量；节点不可用时为 0")


class ResourceStats(BaseModel):
    """存活节点的资源使用合计：CPU、GPU 与各通用资源。"""

    total_cpus: int = Field(description="CPU 总数")
    allocated_cpus: int = Field(description="已分配给作业的 CPU 数")
    available_cpus: int = Field(description="空闲 CPU 数")
    utilization_rate: float = Field(description="使用率，0 到 1")
    total_gpus: int = Field(0, description="GPU 总数（新增）")
    allocated_gpus: int = Field(0, description="已分配给作业的 GPU 数（新增）")
    available_gpus: int = Field(0, description="空闲 GPU 数（新增）")
    gres: dict[str, GresStats] = Field(
        default_factory=dict,
        description="GPU 以外的通用资源（新增）：名称 → 总数与占用，名称即节点声明的 Ray 自定义资源",
        examples=[{"nvme": {"total": 2, "allocated": 1, "available": 1}}],
    )


class NodeInfo(BaseModel):
    """一个 Ray 节点的容量与占用。"""

    node_name: str = Field(description="节点名")
    partition: str = Field(description="所属分区")
    total_cpus: int = Field(description="CPU 总数")
    allocated_cpus: int = Field(description="已分配给作业的 CPU 数")
    available_cpus: int = Field(description="空闲 CPU 数；节点不可用时为 0")
    available: bool = Field(description="节点是否存活")
    utilization_rate: float = Field(description="使用率，0 到 1")
    node_id: str = Field(description="Ray 节点 ID")
    total_gpus: int = Field(0, description="GPU 总数（新增）")
    allocated_gpus: int = Field(0, description="已分配给作业的 GPU 数（新增）")
    available_gpus: int = Field(0, description="空闲 GPU 数（新增）；节点不可用时为 0")
    gres: dict[str, GresStats] = Field(
        default_factory=dict, description="GPU 以外的通用资源（新增）：名称 → 总数与占用"
    )
    features: list[str] = Field(
        default_factory=list,
        description="节点特性（新增，-C 匹配的对象）：conductor.features 标签与 GPU 型号，小写、按名排序",
        examples=[["a100", "ib"]],
    )
    state: str = Field(
        "idle",
        description="节点状态（新增）：idle、mixed、allocated、down，排空中还有作业为 draining、没有了为 drained",
    )
    drain_reason: str | None = Field(None, description="排空的原因（新增）；未排空为 null")
    drained_by: str | None = Field(
        None, description="谁排空的（新增）：用户名；Ray 自己排空的节点为 ray"
    )
    drain_since: datetime | None = Field(None, description="排空开始的时刻（新增，UTC）")


class NodeDrainRequest(BaseModel):
    """排空节点（conductor drain / scontrol update NodeName=… State=DRAIN Reason=…）。"""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="排空的原因（必填，同 Slurm），如“更换内存”")


class JobSummary(BaseModel):
    """作业摘要。"""

    job_id: int = Field(description="作业 ID")
    name: str = Field(description="作业名")
    account: str = Field(description="记账账户")
    state: str = Field(description="状态")
    allocated_cpus: int = Field(description="请求/分配的 CPU 数（多节点作业为各节点之和）")
    submit_time: str | None = Field(description="提交时间（ISO 8601，UTC）")
    start_time: str | None = Field(description="开始时间；尚未开始为 null")


class JobListItem(JobSummary, JobResources):
    """GET /jobs 的一行（新增接口）：在总览摘要之上加分区、节点、结束时间与退出码。"""

    partition: str = Field(description="分区")
    node_list: str = Field(description="运行作业的节点（多节点作业为主机列表写法）；尚未运行为空串")
    end_time: str | None = Field(description="结束时间；尚未结束为 null")
    elapsed_time: str = Field(description="已运行时长，格式 D-HH:MM:SS")
    exit_code: str | None = Field(description="Slurm 格式的退出码 code:signal；尚未结束为 null")
    state_reason: str | None = Field(None, description="排队原因（新增）；不在排队为 null")
    priority: int = Field(0, description="优先级（新增）")
    array_job_id: int | None = Field(None, description="数组主作业号（新增）；不是数组为 null")
    array_task_id: int | None = Field(None, description="数组下标（新增）；不是数组为 null")
    nodes: int = Field(1, description="节点数（新增）：运行过的为分配到的，排队中的为请求的")
    steps: list[JobStep] = Field(default_factory=list, description="作业步（新增），同查询的 steps")
    total_cpu_seconds: float | None = Field(
        None,
        description="作业的 CPU 时间（新增，秒）：批处理步与各作业步之和，即 sacct 作业行的 TotalCPU；"
        "未测得为 null",
    )
    user: str = Field(
        "",
        description="作业运行所用的 Unix 用户（新增，squeue 的 USER）：账户映射到的用户，未映射时为"
        "服务自身的用户",
    )
    work_dir: str = Field("", description="工作目录（新增）")
    dependency: str | None = Field(None, description="依赖（新增），规范写法；没有依赖为 null")
    # ---- 议题 18：Slurm 命令（squeue、scontrol show job、sacct）需要的字段 ----
    time_limit_seconds: int | None = Field(None, description="时限秒数（新增）；null 为不限")
    restarts: int = Field(0, description="重新排队的次数（新增，scontrol 的 Restarts）")
    cancelled_by_uid: int | None = Field(
        None, description="取消者的 Unix uid（新增，sacct 的 CANCELLED by <uid>）；没被取消为 null"
    )
    requeue: bool = Field(False, description="节点失败时是否自动重新排队（新增，--requeue）")
    held: bool = Field(False, description="是否被挂起（新增，scontrol hold）")
    stdout_path: str = Field("", description="标准输出文件的绝对路径（新增，scontrol 的 StdOut）")
    stderr_path: str = Field("", description="标准错误文件的绝对路径（新增，scontrol 的 StdErr）")
    batch_host: str | None = Field(
        None, description="运行批处理脚本的节点（新增，分配的第一个节点）；不在运行或运行过为 null"
    )
    cpus_per_task: int = Field(1, description="每任务 CPU 数（新增）")
    ntasks_per_node: int = Field(1, description="每节点任务数（新增）")
    memory_bytes: int = Field(
        0, description="每节点内存字节数（新增，scontrol 的 MinMemoryNode）；--mem=0 排队时为 0"
    )
    exclusive: bool = Field(False, description="是否独占节点（新增）")
    open_mode: str | None = Field(None, description="--open-mode（新增）：append、truncate 或 null")
    signal: str | None = Field(
        None, description="--signal（新增），规范写法如 B:USR1@60、USR1@60；没给为 null"
    )
    eligible_time: str | None = Field(None, description="可以开始调度的时间（新增）")


class JobListResponse(BaseModel):
    jobs: list[JobListItem] = Field(description="本页的作业，最新在前")
    next_cursor: str | None = Field(description="下一页的游标；为空表示没有更多")


class DashboardResponse(BaseModel):
    job_stats: JobStats = Field(description="各状态的作业数")
    resource_stats: ResourceStats = Field(
        description="存活节点的资源使用合计（CPU、GPU、通用资源）"
    )
    node_info: list[NodeInfo] = Field(description="各节点的容量与占用")
    running_jobs: list[JobSummary] = Field(description="最新的 20 个运行中作业")
    pending_jobs: list[JobSummary] = Field(description="最新的 20 个排队作业")
