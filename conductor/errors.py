"""错误层级：一个根 ConductorError，每个子类的文档字符串即默认消息。"""

from __future__ import annotations


class ConductorError(Exception):
    """Conductor 内部错误。"""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class JobNotFound(ConductorError):
    """作业不存在。"""


class InvalidJobRequest(ConductorError):
    """作业请求无效。"""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class NodeNotFound(ConductorError):
    """集群里没有这个节点（Slurm：Invalid node name specified）。"""


class NodeNotDrained(ConductorError):
    """节点没有在排空，无需恢复（Slurm：Invalid node state specified）。"""


class JobNotPending(ConductorError):
    """作业已不在排队，不能挂起、放行或修改。"""


class JobStateConflict(ConductorError):
    """作业当前的状态不允许该操作。"""


class DatabaseUnavailable(ConductorError):
    """PostgreSQL 不可用，请稍后重试。"""


class TransactionConflict(ConductorError):
    """与并发的操作冲突（死锁或串行化失败），事务已回滚，请重试。"""


class SchedulerUnavailable(ConductorError):
    """调度器不可用，请稍后重试。"""


class ClusterUnavailable(ConductorError):
    """Ray 集群不可用，请稍后重试。"""


class LogUnreadable(ConductorError):
    """无法读取日志文件。"""


class Unauthorized(ConductorError):
    """需要有效的 API 令牌：请在 Authorization 头中以 Bearer 方式提供（CLI 读取 CONDUCTOR_TOKEN 或 ~/.config/conductor/token）。"""


class Forbidden(ConductorError):
    """无权执行该操作。"""
