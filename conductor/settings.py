"""服务配置：唯一的 Settings，环境变量前缀 CONDUCTOR_。"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conductor.account_limits import AccountLimit
from conductor.partitions import PartitionConfig, PartitionTable


class Settings(BaseSettings):
    """Conductor 的全部可配置项；CLI 选项默认取这里的值。"""

    model_config = SettingsConfigDict(env_prefix="CONDUCTOR_", extra="ignore")

    host: str = Field("127.0.0.1", description="API 监听地址")
    port: int = Field(8000, ge=1, le=65535, description="API 监听端口")
    public_url: str | None = Field(
        None,
        description="作业访问 API 用的地址（作业环境的 CONDUCTOR_URL），如 http://head:8000；"
        "为空时由 host 与 port 推出（监听所有地址时用本机在 Ray 集群里的地址）",
    )
    data_dir: Path = Field(Path("./conductor-data"), description="内嵌 PostgreSQL 与运行数据的目录")
    database_url: str | None = Field(None, description="外部 PostgreSQL 地址；为空时启动内嵌实例")
    ray_address: str | None = Field(None, description="外部 Ray 集群地址；为空时启动本地 Ray")
    num_cpus: int | None = Field(None, ge=1, description="本地 Ray 的逻辑 CPU 数，默认为本机核数")
    num_gpus: int | None = Field(
        None,
        ge=0,
        description="本地 Ray 的逻辑 GPU 数，默认为 Ray 探测到的数目；没有 GPU 的机器也可设置，用于试用与测试",
    )
    ray_port: int = Field(6379, ge=1, le=65535, description="本地 Ray 头节点（GCS）端口")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="本地 Ray 仪表盘端口")
    namespace: str = Field(
        "conductor", min_length=1, description="调度器与节点代理所在的 Ray 命名空间"
    )
    kill_wait: float = Field(
        30.0, ge=0, description="超时或取消时 SIGTERM 与 SIGKILL 之间的宽限秒数"
    )
    default_partition: str = Field("default", description="默认分区名")
    debug: bool = Field(False, description="调度器输出调试日志（每轮的放置决定、节点列表）")
    idle_resync: float = Field(2.0, gt=0, description="调度器空闲时与数据库对账的间隔秒数")
    scheduler_stall_timeout: float = Field(
        120.0,
        gt=0,
        description="调度器主循环超过这么多秒没有进展即报告不健康；达到两倍时看门狗让调度器进程退出，"
        "由 Ray 重启",
    )
    stranded_after: float = Field(
        30.0,
        gt=0,
        description="认领超过这么多秒、不在派发途中、其代理（同一实例）仍不持有的 RUNNING 作业"
        "由周期对账重新排队（它从未启动）",
    )
    launch_timeout: float = Field(
        60.0,
        gt=0,
        description="作业从派发到脚本启动的最长秒数（含 Ray 排队、切换用户、进入工作目录、打开日志文件）；"
        "超过即强制结束并记 FAILED。作业时限从脚本启动时才开始计时，这是它之前的兜底",
    )

    autoscale_max_bundles: int = Field(
        1000,
        ge=0,
        description="告诉 Ray 自动扩缩容器的排队作业份额（每个节点一份）上限：一次扩容最多为这么多份起节点；"
        "0 为不向自动扩缩容器请求（固定集群）",
    )
    autoscale_period: float = Field(
        1.0, gt=0, description="调度器重算并更新对自动扩缩容器的资源请求的间隔秒数"
    )
    agent_park_after: float = Field(
        30.0,
        ge=0,
        description="自动扩缩容的集群里（有集群配置时），节点上没有作业、也没有排队作业放得进它，满这么多秒后"
        "调度器让它的代理退出：代理占着一个 worker，Ray 就永远不认为节点空闲、不缩容。须小于集群配置的 "
        "idle_timeout_minutes；0 为从不（固定集群不看它）",
    )
    autoscaler_config: Path | None = Field(
        None,
        description="Ray 集群配置（ray up 的 YAML）：提交时按其中可扩出的节点类型判断作业能否运行；"
        "为空时用头节点上 ray up 写下的 ~/ray_bootstrap_config.yaml（存在时）",
    )

    partitions: dict[str, PartitionConfig] = Field(
        default_factory=dict,
        description='分区（JSON）：{"batch": {"default": true, "max_time": "1-00:00:00"}, ...}；'
        "为空时只有一个不限时的默认分区 default_partition",
    )
    account_limits: dict[str, AccountLimit] = Field(
        default_factory=dict,
        description='账户上限（JSON）：{"alice": {"max_running_jobs": 10, "max_cpus": 64, "max_gpus": 8}, "*": {...}}',
    )
    max_array_size: int = Field(1001, ge=1, le=100_000, description="一个作业数组最多的任务数")

    @field_validator("partitions")
    @classmethod
    def _one_default(cls, value: dict[str, PartitionConfig]) -> dict[str, PartitionConfig]:
        if value:
            PartitionTable.from_config(value, "")  # 恰好一个默认分区，否则启动即报错
        return value

    def partition_table(self) -> PartitionTable:
        return PartitionTable.from_config(self.partitions, self.default_partition)

    # —— 安全（见 docs/security.md）——
    auth: Literal["auto", "on", "off"] = Field(
        "on",
        description="API 令牌认证：默认开启（auto 与 on 相同，为兼容旧配置保留）；"
        "off 只给不会带令牌的旧客户端用，只能监听回环地址，且不能与账户映射同用",
    )
    work_root: Path | None = Field(
        None, description="若设置，作业的工作目录与日志路径必须在此目录之内（解析符号链接后）"
    )
    account_users: dict[str, str] = Field(
        default_factory=dict,
        description='账户到 Unix 用户的映射（JSON，如 {"alice":"alice"}）；服务以 root 运行时作业以该用户身份运行',
    )
    require_user_mapping: bool = Field(False, description="未映射到 Unix 用户的账户在提交时被拒绝")
    allow_root_jobs: bool = Field(
        False,
        description="服务以 root 运行时，允许未映射到 Unix 用户的账户的作业以 root 运行"
        "（默认不允许：这样的作业在提交时 403）",
    )
    max_script_bytes: int = Field(1024 * 1024, ge=1, description="脚本最大字节数（UTF-8）")
    max_env_entries: int = Field(256, ge=0, description="environment 最多条目数")
    max_env_bytes: int = Field(
        32 * 1024, ge=1, description="environment 单个条目（名 + 值）最大字节数"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="请求体最大字节数（超过即 413，不读入内存）"
    )
    max_request_jobs: int = Field(
        10_000,
        ge=1,
        description="一次提交请求（批量 × 数组任务）展开后最多写入的作业行数（超过即 422）",
    )
    max_request_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="一次提交请求展开后写入的总字节数上限（数组的每个任务各存一份脚本与环境；超过即 413）",
    )

    @field_validator("auth", mode="before")
    @classmethod
    def _auth_mode(cls, value: object) -> object:
        # 环境变量常写成 ON / Off：不分大小写、忽略空白
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # 数据目录在多个进程间传递，必须是绝对路径
        return value.expanduser().resolve()

    def auth_enabled(self) -> bool:
        """是否要求令牌：只有明确 CONDUCTOR_AUTH=off 时不要求（auto 与 on 相同）。

        原来 auto 在回环地址上关闭认证：本机任何用户、任何作业、同机的反向代理后面的任何人
        都能以服务身份执行命令。"""
        return self.auth != "off"

    def check_security(self) -> None:
        """拒绝不安全的组合（启动任何东西之前）。"""
        if self.auth != "off":
            return
        if not is_loopback(self.host):
            raise ValueError(
                f"认证已关闭（CONDUCTOR_AUTH=off），API 不能监听回环地址以外的 {self.host}："
                "任何能连上它的人都能以服务身份执行任意命令。请开启认证或改为监听 127.0.0.1"
            )
        if self.account_users:
            raise ValueError(
                "认证已关闭（CONDUCTOR_AUTH=off），不能同时按账户映射运行作业（CONDUCTOR_ACCOUNT_USERS）："
                "本机任何用户都能以任意账户提交，以那个账户映射到的 Unix 用户执行命令。请开启认证"
            )

    # —— 用哪个数据库、哪个 Ray：serve 与管理命令（doctor、retire-actors、token）共用这一条规则 ——

    def uses_embedded_postgres(self) -> bool:
        """没给 database_url：用数据目录下的内嵌 PostgreSQL（serve 启动它，管理命令连接它）。"""
        return not self.database_url

    def uses_local_ray(self) -> bool:
        """没给 ray_address：用本机的 Ray 头节点（serve 启动它，管理命令连接它）。"""
        return not self.ray_address

    def embedded_database_url(self) -> str:
        """serve 的内嵌 PostgreSQL 在数据目录下监听 Unix 套接字。"""
        return f"postgresql://postgres:@/postgres?host={self.data_dir / 'pg'}"

    def local_ray_address(self) -> str:
        """serve 的本地 Ray 头节点（GCS）地址。"""
        return f"127.0.0.1:{self.ray_port}"

    def resolved(self, embedded_url: str | None = None) -> Settings:
        """按上面的规则补全数据库与 Ray 地址。embedded_url 为 serve 实际启动的内嵌 PostgreSQL
        的地址；管理命令不给，取它在数据目录下的套接字。"""
        database_url = self.database_url
        if self.uses_embedded_postgres():
            database_url = embedded_url or self.embedded_database_url()
        return self.model_copy(
            update={
                "database_url": database_url,
                "ray_address": self.ray_address or self.local_ray_address(),
            }
        )

    def effective_num_cpus(self) -> int:
        """本地 Ray 的 CPU 数：未设置时取本机核数。"""
        return self.num_cpus or os.cpu_count() or 1


def is_loopback(host: str) -> bool:
    """监听地址是否只对本机开放（0.0.0.0、:: 与主机名都视为对网络开放）。"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """进程内唯一的配置实例。"""
    return Settings()
