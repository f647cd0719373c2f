"""API 进程使用的集群客户端：唤醒调度器、取消作业、发信号、读日志、取节点与健康状况。

只做薄薄一层：Ray 异常在这里翻译为 ConductorError。
"""

from __future__ import annotations

import errno
import io
import logging
import threading
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cluster.names import SCHEDULER_NAME, agent_name
from cluster.nodes import RayNode, list_nodes
from conductor.errors import ClusterUnavailable, LogUnreadable, SchedulerUnavailable
from conductor.settings import Settings

log = logging.getLogger("conductor.client")

NODES_TTL = 1.0
# 唤醒线程每发出一次唤醒后至少歇这么久（最多每秒 100 次）：这段时间里到来的提交合并为下一次唤醒；
# 空闲时的第一个提交立即唤醒，不受影响
WAKE_GAP = 0.01


class ClusterClient:
    """与调度器、节点代理通信。"""

    def __init__(self, settings: Settings) -> None:
        self.namespace = settings.namespace
        self._scheduler: ray.actor.ActorHandle | None = None
        self._nodes: tuple[float, list[RayNode]] = (0.0, [])
        self._dashboard: str | None = None
        self._wake_wanted = threading.Event()
        self._waker: threading.Thread | None = None
        self._waker_lock = threading.Lock()

    def scheduler(self) -> ray.actor.ActorHandle:
        if self._scheduler is None:
            try:
                self._scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self.namespace)
            except ValueError as exc:
                raise SchedulerUnavailable("调度器 actor 不存在") from exc
        return self._scheduler

    def wake(self) -> None:
        """通知调度器有新作业（不等待，请求线程里不调用 Ray）。

        只置一个标志，由唤醒线程发出 actor 调用；它发送与歇息期间到来的多次唤醒合并为一次
        （issue 20：每秒数百个提交时，每个请求一次 actor 调用既占 API 进程的 CPU，也让调度器
        多醒很多次）。调度器重启中也不影响：它启动后会读取队列。"""
        self._wake_wanted.set()
        if self._waker is None:
            with self._waker_lock:
                if self._waker is None:
                    self._waker = threading.Thread(
                        target=self._wake_loop, name="scheduler-waker", daemon=True
                    )
                    self._waker.start()

    def _wake_loop(self) -> None:
        while True:
            self._wake_wanted.wait()
            self._wake_wanted.clear()
            self._send_wake()
            time.sleep(WAKE_GAP)

    def _send_wake(self) -> None:
        try:
            self.scheduler().wake.remote()
        except Exception as exc:  # noqa: BLE001 - 作业已持久化，唤醒失败不影响正确性
            self._scheduler = None
            log.warning("唤醒调度器失败（作业已保存，将在调度器恢复后运行）：%s", exc)

    def scheduler_status(self, timeout: float = 3.0) -> dict:
        try:
            return ray.get(self.scheduler().status.remote(), timeout=timeout)
        except (RayActorError, GetTimeoutError) as exc:
            self._scheduler = None
            raise SchedulerUnavailable(f"调度器无响应：{type(exc).__name__}") from exc

    def nodes(self) -> list[RayNode]:
        """集群节点（1 秒缓存，避免每个请求都访问 GCS）。"""
        fetched, nodes = self._nodes
        if time.monotonic() - fetched > NODES_TTL:
            try:
                nodes = list_nodes()
            except Exception as exc:  # noqa: BLE001
                raise ClusterUnavailable(f"无法读取 Ray 节点：{exc}") from exc
            self._nodes = (time.monotonic(), nodes)
        return nodes

    def dashboard_url(self) -> str | None:
        """Ray 仪表盘地址。仪表盘可能晚于集群就绪，所以每次取不到时再读一次。"""
        if self._dashboard is None:
            try:
                # 仪表盘把地址登记在 GCS 的 KV 里；Ray 没有公开读取它的 API
                from ray._private.services import get_webui_url_from_internal_kv

                url = get_webui_url_from_internal_kv()
            except Exception:  # noqa: BLE001
                url = None
            if url:
                self._dashboard = url if url.startswith("http") else f"http://{url}"
        return self._dashboard

    def cancel(self, node_id: str, job_id: int) -> None:
        """让作业所在节点的代理终止其进程树（不等待）。消息丢失时代理会从数据库发现取消。"""
        try:
            agent = ray.get_actor(agent_name(node_id), namespace=self.namespace)
            agent.cancel.remote(job_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("通知节点代理取消作业 %s 失败：%s", job_id, exc)

    def signal(
        self, node_id: str, job_id: int, sig: int, batch: bool, full: bool, timeout: float = 15.0
    ) -> int | None:
        """经批处理节点的代理给运行中的作业发信号；代理不持有该作业时 None，否则为收到信号的进程数。"""
        try:
            agent = ray.get_actor(agent_name(node_id), namespace=self.namespace)
            return ray.get(agent.signal_job.remote(job_id, sig, batch, full), timeout=timeout)
        except (ValueError, RayActorError, GetTimeoutError) as exc:
            raise ClusterUnavailable(f"运行作业的节点不可达，无法发送信号：{exc}") from exc

    def _agent(self, node_id: str) -> ray.actor.ActorHandle:
        try:
            return ray.get_actor(agent_name(node_id), namespace=self.namespace)
        except ValueError as exc:
            raise ClusterUnavailable(f"运行作业的节点不可达，无法读取日志：{exc}") from exc

    def read_logs(
        self,
        node_id: str,
        stdout_path: str,
        stderr_path: str,
        timeout: float = 10.0,
        owner: str | None = None,
    ) -> dict[str, str | None]:
        """经作业所在节点的代理读取日志（不假设共享文件系统）。

        owner 为作业运行的 Unix 用户：日志文件必须属于它，才不会被符号链接骗去读别人的文件。
        某个文件读不了（无权读取、不能定位的特殊文件）时，那一路给出写明原因的说明，另一路照常。"""
        agent = self._agent(node_id)
        try:
            return _get(agent.read_logs.remote(stdout_path, stderr_path, owner), timeout, "")
        except LogUnreadable:
            pass  # 两个文件一起读：逐个再读一次，找出是哪一个读不了
        logs: dict[str, str | None] = {}
        for stream, path in (("stdout", stdout_path), ("stderr", stderr_path)):
            ref = agent.read_logs.remote(path, path, owner)
            try:
                logs[stream] = _get(ref, timeout, path)["stdout"]
            except LogUnreadable as exc:
                logs[stream] = f"[{exc.message}]"
        return logs

    def read_log_range(
        self,
        node_id: str,
        path: str,
        offset: int | None,
        limit: int,
        owner: str | None = None,
        timeout: float = 10.0,
    ) -> dict:
        """经作业所在节点的代理按偏移读取日志：{"data": bytes|None, "offset": int, "size": int}。

        owner 为作业的 Unix 用户：只读属于它的文件。文件读不了时 LogUnreadable。"""
        agent = self._agent(node_id)
        return _get(agent.read_log_range.remote(path, offset, limit, owner), timeout, path)


def _get(ref: ray.ObjectRef, timeout: float, path: str) -> dict:
    """取节点代理读日志的结果：代理不可达 → ClusterUnavailable；代理读文件失败 → LogUnreadable。"""
    try:
        return ray.get(ref, timeout=timeout)
    except (RayActorError, GetTimeoutError) as exc:
        raise ClusterUnavailable(f"运行作业的节点不可达，无法读取日志：{exc}") from exc
    except RayTaskError as exc:
        raise LogUnreadable(_unreadable(path, exc.cause)) from exc


def _unreadable(path: str, cause: BaseException) -> str:
    """读日志失败的一句话原因（不带 Ray 的调用栈）。"""
    where = f"日志文件 {path}" if path else "日志文件"
    if isinstance(cause, io.UnsupportedOperation) or getattr(cause, "errno", None) == errno.ESPIPE:
        return f"无法读取{where}：它不是普通文件，不能按偏移读取"
    if isinstance(cause, PermissionError):
        return f"无法读取{where}：服务的用户无权读取（Permission denied）"
    if isinstance(cause, OSError) and cause.strerror:
        return f"无法读取{where}：{cause.strerror}"
    return f"无法读取{where}：{type(cause).__name__}"
