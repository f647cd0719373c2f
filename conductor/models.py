"""作业实体：JobBase（用户提交的内容）→ Job（数据库表）。"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from conductor.states import JobState

# 可以参与调度的排队作业：未被挂起、依赖已满足（或没有依赖）。索引与调度器的查询共用这一条件
RUNNABLE = "state = 'PENDING' AND NOT held AND dependency_state IN ('NONE', 'SATISFIED')"
# 等待依赖的排队作业（部分索引与 store/dependencies.py 的查询共用）
WAITING = "state = 'PENDING' AND dependency_state = 'WAITING'"
# 同一集合的另一种写法（等待依赖的作业不会被认领，只会排队或被取消，取消即有 end_time）。
# 按被依赖作业找等待者的索引与查询用它：不提 state，ix_jobs_dependency_waiting 就无从匹配——
# 大批提交之后、自动 ANALYZE 之前，规划器会以为等待者很少，沿那个索引把它们全部过滤一遍
DEPENDENT = "dependency_state = 'WAITING' AND end_time IS NULL"
# 其中带 singleton 的：同名同账户的作业结束时要复查它们
SINGLETON_DEPENDENT = f"{DEPENDENT} AND dependency LIKE '%singleton%'"
# 作业最近一次开始或结束的时刻：依赖者只在被依赖作业开始（after）或结束时才可能满足
CHANGED_AT = "COALESCE(end_time, start_time)"
CHANGED = "(end_time IS NOT NULL OR start_time IS NOT NULL)"


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobBase(SQLModel):
    """用户提交并经校验、规范化后的作业描述。"""

    name: str = Field(max_length=255)
    account: str = Field(max_length=255)
    partition: str = Field(max_length=100)
    script: str = Field(sa_column=Column(Text, nullable=False))
    environment: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    # 传给脚本的参数（sbatch 脚本 参数...）：$1 $2 …
    script_args: list[str] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]")
    )
    work_dir: str = Field(max_length=1024)
    # 提交时即解析为绝对路径：日志只从这里读，杜绝任意文件读取
    stdout_path: str = Field(max_length=2048)
    stderr_path: str = Field(max_length=2048)
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    cpus: int = 1
    memory_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    time_limit_seconds: int | None = None
    exclusive: bool = False
    # ---- 资源（议题 16/17，见 conductor/request.py）：CPU、内存、GPU、gres 都是每个节点的量 ----
    # 请求的节点数（-N）；多节点作业在 nodes 个不同的节点上各占一份上面的量
    nodes: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    # 任务数（-n）；cpus = ntasks × cpus_per_task（或按 GPU 数 × cpus_per_tres）
    ntasks: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    gpus: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    # GPU 类型（小写，如 a100）；None 为任意类型
    gpu_type: str | None = Field(default=None, max_length=64)
    # 其他通用资源：名称（节点以 ray start --resources 声明的自定义资源）→ 数量
    gres: dict[str, float] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    # --mem=0：整个节点的内存；排队时 memory_bytes 为 0，认领时记下所在节点的内存
    whole_node_memory: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    # 节点特性表达式：a100、a100|h100、a100&ib（features.parse_constraint）
    constraints: str | None = Field(default=None, sa_column=Column(Text))
    required_nodes: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False, server_default="{}")
    )
    excluded_nodes: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False, server_default="{}")
    )
    # 提交时的 Slurm 写法（gpus_per_node、mem_per_cpu…）：只用于作业环境变量与展示，调度不看它
    slurm_request: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    # 输出文件名含 %N（节点名）时的模式：认领时按节点展开进 stdout_path/stderr_path；否则为空
    stdout_pattern: str | None = Field(default=None, max_length=2048)
    stderr_pattern: str | None = Field(default=None, max_length=2048)
    # ---- 议题 18：重新排队、输出的打开方式、时限前的信号 ----
    # --requeue：节点失败时自动回到队列（而不是 NODE_FAIL）；scontrol requeue 不看它
    requeue: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    # --open-mode：append 或 truncate；None 为默认（同 Slurm 的 JobFileAppend=0：每次运行都截断）
    open_mode: str | None = Field(default=None, max_length=16)
    # --signal=[B:]SIG[@秒]：时限前 signal_seconds 秒发 signal_number；signal_batch 为只发给批处理脚本
    signal_number: int | None = None
    signal_seconds: int | None = None
    signal_batch: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    # 取消者的 Unix uid（sacct 的 CANCELLED by <uid>）；不是被取消或不明为 None
    cancelled_by_uid: int | None = None


class Job(JobBase, table=True):
    """jobs 表：作业状态的唯一事实来源。状态只经 store/transitions.py 的带条件 UPDATE 改变。"""

    __tablename__ = "jobs"
    __table_args__ = (
        # 队列只扫描 PENDING 的行
        Index("ix_jobs_pending", "id", postgresql_where=text("state = 'PENDING'")),
        # 调度器每轮读取仍占用资源的作业
        Index("ix_jobs_holding", "node_id", postgresql_where=text("released_at IS NULL")),
        Index("ix_jobs_state", "state"),
        # 各分区的队列顺序（有效优先级，见 priority.py）：调度器每个分区只读队首若干行
        Index("ix_jobs_queue", "partition", "queue_rank", "id", postgresql_where=text(RUNNABLE)),
        Index("ix_jobs_array", "array_job_id", postgresql_where=text("array_job_id IS NOT NULL")),
        # 依赖的轮转复查按 id 分批
        Index("ix_jobs_dependency_waiting", "id", postgresql_where=text(WAITING)),
        # 被依赖作业开始/结束时，按作业号找到它的等待者（只索引等待中的）
        Index(
            "ix_jobs_dependency_targets",
            "dependency_ids",
            postgresql_using="gin",
            postgresql_where=text(DEPENDENT),
            # 不用待合并列表：否则每次按作业号查找都要把整个列表扫一遍（批量提交后每个作业号约 0.2 ms）
            postgresql_with={"fastupdate": "off"},
        ),
        Index(
            "ix_jobs_singleton_waiting",
            "account",
            "name",
            postgresql_where=text(SINGLETON_DEPENDENT),
        ),
        # 自上次判定以来开始或结束的作业（游标按这个时刻前进）
        Index(
            "ix_jobs_changed",
            func.coalesce(text("end_time"), text("start_time")),
            postgresql_where=text(CHANGED),
        ),
        # 账户令牌的列表（最新在前，按 id 翻页）与总览只读本账户的行
        Index("ix_jobs_account", "account", "id"),
        Index("ix_jobs_account_state", "account", "state", "id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    # 存为普通字符串列（与迁移一致），不用数据库枚举类型
    state: JobState = Field(default=JobState.PENDING, sa_column=Column(String(16), nullable=False))
    error_msg: str | None = Field(default=None, sa_column=Column(Text))
    exit_code: str | None = Field(default=None, max_length=32)
    submit_time: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    eligible_time: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    start_time: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    end_time: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # 派发到的 Ray 节点；released_at 为空且 node_id 非空即“占用资源中”
    node_id: str | None = Field(default=None, max_length=64)
    node_name: str | None = Field(default=None, max_length=255)
    # 节点所在主机的地址：节点失联而同一主机上另有存活节点时（Ray 重启、模拟节点），据此清理孤儿进程
    node_host: str | None = Field(default=None, max_length=255)
    # 整个分配（认领时写入，第一个即 node_id/node_name，批处理节点）；排队中与旧行为空
    node_ids: list[str] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    node_names: list[str] | None = Field(default=None, sa_column=Column(JSONB, nullable=True))
    released_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # 认领该作业的调度器纪元：节点代理据此拒绝过期调度器的派发（fencing）
    epoch: int | None = None
    # 接手作业的节点代理实例；代理重建后身份不同，对账据此识别随旧代理死亡的作业
    agent_id: str | None = Field(default=None, max_length=64)
    # 作业进程树的追踪标记（环境变量）；执行器丢失后据此清理孤儿进程，不对外暴露
    token: str | None = Field(default=None, max_length=64)
    data_source: str = Field(default="API", max_length=32)
    # ---- 调度（docs/scheduling.md）----
    priority: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    queue_rank: float = Field(
        default=0.0, sa_column=Column(Float, nullable=False, server_default="0")
    )
    held: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default="false")
    )
    dependency: str | None = Field(default=None, sa_column=Column(Text))
    # 依赖里出现的作业号（数组主作业号代表全部任务）；没有依赖为空。被依赖作业结束时据此找等待者
    dependency_ids: list[int] | None = Field(
        default=None, sa_column=Column(ARRAY(BigInteger), nullable=True)
    )
    # NONE / WAITING / SATISFIED / NEVER（dependencies.DepState）
    dependency_state: str = Field(
        default="NONE", sa_column=Column(String(16), nullable=False, server_default="NONE")
    )
    # 调度器最近一次给出的等待原因（Resources / Priority …）；挂起、依赖等原因由 API 从列推导
    state_reason: str | None = Field(default=None, max_length=32)
    array_job_id: int | None = Field(default=None, sa_column=Column(BigInteger))
    array_task_id: int | None = None
    array_spec: str | None = Field(default=None, max_length=255)
    array_max_running: int | None = None
    # 提交时按账户映射确定的 Unix 用户；为空表示以服务自身的用户运行（见 docs/security.md）
    run_as_user: str | None = Field(default=None, max_length=64)
    # 重新排队的次数（SLURM_RESTART_COUNT、sacct 的 Restarts）
    restart_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    # ---- 用量（批处理步，即脚本与它的全部子孙）：结束时由执行器测得，见 conductor/usage.py ----
    # 整棵进程树的峰值常驻内存（字节）
    max_rss_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))
    user_cpu_seconds: float | None = Field(default=None, sa_column=Column(Float))
    system_cpu_seconds: float | None = Field(default=None, sa_column=Column(Float))


class JobStep(SQLModel, table=True):
    """作业步（srun 在作业分配里启动的 12.0、12.1…）：节点代理经 store/steps.py 记下开始与结束。

    批处理步（12.batch）不存：由作业行本身推出。作业回到队列时它的作业步一并删除。"""

    __tablename__ = "job_steps"

    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    )
    step_id: int = Field(sa_column=Column(Integer, primary_key=True))
    name: str | None = Field(default=None, sa_column=Column(Text))
    # RUNNING，或终态 COMPLETED/FAILED/CANCELLED/TIMEOUT/NODE_FAIL/OUT_OF_MEMORY
    state: str = Field(sa_column=Column(Text, nullable=False))
    # Slurm 的 code:signal
    exit_code: str | None = Field(default=None, sa_column=Column(Text))
    ntasks: int | None = Field(default=None, sa_column=Column(Integer))
    # 作业步用到的节点（主机列表写法）
    node_list: str | None = Field(default=None, sa_column=Column(Text))
    start_time: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    end_time: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    # 用量：max_rss 为各任务进程树峰值中的最大者，ave_rss 为它们的平均（同 sacct 的 MaxRSS/AveRSS）
    max_rss_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))
    ave_rss_bytes: int | None = Field(default=None, sa_column=Column(BigInteger))
    user_cpu_seconds: float | None = Field(default=None, sa_column=Column(Float))
    system_cpu_seconds: float | None = Field(default=None, sa_column=Column(Float))


class SchedulerEpoch(SQLModel, table=True):
    """调度器每次（重）启动领取一个递增纪元。"""

    __tablename__ = "scheduler_epochs"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ApiToken(SQLModel, table=True):
    """API 令牌：只存 SHA-256 摘要，明文只在创建时显示一次。绑定一个账户，或为管理员。"""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True, index=True))
    # 明文的前几个字符，便于在列表中辨认令牌；令牌有 256 位熵，露出前缀不影响安全
    prefix: str = Field(max_length=16)
    account: str | None = Field(default=None, max_length=255)
    is_admin: bool = False
    note: str = Field(default="", max_length=255)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class JobStat(SQLModel, table=True):
    """作业计数的增量（数据库触发器在作业插入、改状态、开始、删除时写入，见迁移 0005_security）。

    /metrics 把同类的行相加即得各状态的作业数与提交→开始延迟的直方图，不必每次对 jobs 全表聚合；
    读取时顺便把增量合并成每类一行（conductor/stats.py），表的大小只随两次合并之间的变化增长。
    """

    __tablename__ = "job_stats"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    # state：label 为状态名；started：label 为延迟桶的上界（秒，"+Inf" 为其余）
    kind: str = Field(max_length=16)
    label: str = Field(max_length=32)
    n: int = Field(sa_column=Column(BigInteger, nullable=False))
    # started：这些作业的延迟秒数之和
    total: float = Field(default=0.0, sa_column=Column(Float, nullable=False, server_default="0"))


class LoginCode(SQLModel, table=True):
    """网页的一次性登录码：`conductor serve` 启动时打印 /ui#login=…，网页用它换一个管理员令牌。

    只存 SHA-256 摘要；用过一次或过期即失效。"""

    __tablename__ = "login_codes"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    code_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True, index=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class NodeDrain(SQLModel, table=True):
    """排空的节点（conductor/drains.py）：按节点名记，RESUME 时删除。读写在 store/drains.py。"""

    __tablename__ = "node_drains"

    node_name: str = Field(sa_column=Column(Text, primary_key=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    drained_by: str = Field(sa_column=Column(Text, nullable=False))
    since: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
