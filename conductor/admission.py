"""提交时的安全检查（纯函数）：大小限制、路径限定在 WORK_ROOT 内、账户到 Unix 用户的映射，
以及请求是否永远无法运行（没有一个节点容得下它）。

任何一项不通过都在写入数据库之前拒绝，什么也不保存。
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from conductor.errors import Forbidden, InvalidJobRequest
from conductor.features import parse_constraint
from conductor.placement import NodeView, PendingJob, selected
from conductor.resources import CPU, GPU, MEMORY, Resources
from conductor.settings import Settings


class PayloadTooLarge(InvalidJobRequest):
    """请求内容过大。"""


def _kib(n: int) -> str:
    return f"{n / 1024:g} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:g} MiB"


def check_limits(script: str, environment: Mapping[str, str], settings: Settings) -> None:
    """脚本大小、环境变量条数与单条大小。"""
    size = len(script.encode("utf-8", errors="surrogatepass"))
    if size > settings.max_script_bytes:
        raise PayloadTooLarge(
            "script",
            f"脚本过大：{size} 字节，上限 {settings.max_script_bytes} 字节"
            f"（{_kib(settings.max_script_bytes)}，CONDUCTOR_MAX_SCRIPT_BYTES）",
        )
    if len(environment) > settings.max_env_entries:
        raise InvalidJobRequest(
            "job.environment",
            f"环境变量过多：{len(environment)} 个，上限 {settings.max_env_entries} 个"
            "（CONDUCTOR_MAX_ENV_ENTRIES）",
        )
    for key, value in environment.items():
        entry = len(key.encode()) + len(value.encode("utf-8", errors="surrogatepass"))
        if entry > settings.max_env_bytes:
            raise InvalidJobRequest(
                "job.environment",
                f"环境变量 {key[:64]} 过大：{entry} 字节，单条上限 {settings.max_env_bytes} 字节"
                "（CONDUCTOR_MAX_ENV_BYTES）",
            )


def stored_bytes(script: str, environment: Mapping[str, str], *texts: str | None) -> int:
    """一个作业行要保存的主要内容的字节数（脚本、环境变量与各个文本字段）。"""
    size = len(script.encode("utf-8", errors="surrogatepass"))
    for key, value in environment.items():
        size += len(key.encode("utf-8", errors="surrogatepass"))
        size += len(value.encode("utf-8", errors="surrogatepass"))
    return size + sum(len(t.encode("utf-8", errors="surrogatepass")) for t in texts if t)


def check_request_total(rows: int, size: int, settings: Settings, field: str) -> None:
    """一次请求展开后（批量 × 数组任务）的总行数与总字节数：在构造任何作业之前检查。"""
    if rows > settings.max_request_jobs:
        raise InvalidJobRequest(
            field,
            f"一次请求展开后共 {rows} 个作业（批量的作业数 × 数组的任务数），"
            f"上限 {settings.max_request_jobs} 个（CONDUCTOR_MAX_REQUEST_JOBS）",
        )
    if size > settings.max_request_bytes:
        raise PayloadTooLarge(
            field,
            f"一次请求展开后要写入约 {size} 字节（数组的每个任务各存一份脚本与环境变量），"
            f"上限 {settings.max_request_bytes} 字节（{_kib(settings.max_request_bytes)}，"
            "CONDUCTOR_MAX_REQUEST_BYTES）",
        )


def resolve_existing(path: str) -> str:
    """把绝对路径规范化：已存在的前缀逐级解析符号链接（与内核打开文件时一致），
    不存在的部分按字面拼接。`..` 在解析符号链接之后才回退，所以 `link/..` 也不能逃出。"""
    return os.path.realpath(path)


def confine(path: str, root: Path, field: str) -> str:
    """path（绝对路径）解析后必须在 root 之内，否则 422；返回解析后的路径。"""
    real_root = os.path.realpath(root)
    real = resolve_existing(path)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        shown = path if real == os.path.normpath(path) else f"{path}（解析为 {real}）"
        raise InvalidJobRequest(
            field, f"路径 {shown} 不在允许的目录 {real_root} 之内（CONDUCTOR_WORK_ROOT）"
        )
    return real


def service_is_root() -> bool:
    """API 进程是否以 root 运行（作业默认以服务自身的用户运行，见 docs/security.md）。"""
    return os.geteuid() == 0


def resolve_run_as(account: str, settings: Settings, as_root: bool | None = None) -> str | None:
    """账户对应的 Unix 用户；未映射时为 None（以服务自身的用户运行）。

    要求映射时拒绝未映射的账户；服务以 root 运行（as_root，默认看本进程）时，未映射账户的作业
    会以 root 运行，除非运维明确允许（CONDUCTOR_ALLOW_ROOT_JOBS），否则同样拒绝。"""
    user = settings.account_users.get(account)
    if user is None:
        if settings.require_user_mapping:
            raise Forbidden(
                f"账户 {account} 没有映射到 Unix 用户，服务要求每个账户都映射"
                "（CONDUCTOR_ACCOUNT_USERS / CONDUCTOR_REQUIRE_USER_MAPPING）"
            )
        if (service_is_root() if as_root is None else as_root) and not settings.allow_root_jobs:
            raise Forbidden(
                f"账户 {account} 没有映射到 Unix 用户，而服务以 root 运行：它的作业会以 root 身份执行。"
                "请在 CONDUCTOR_ACCOUNT_USERS 里为它映射一个用户，或由运维明确允许作业以 root 运行"
                "（CONDUCTOR_ALLOW_ROOT_JOBS=true）"
            )
        return None
    try:
        pwd.getpwnam(user)
    except KeyError as exc:
        raise InvalidJobRequest(
            "job.account", f"账户 {account} 映射到的 Unix 用户 {user} 在本机不存在"
        ) from exc
    return user


class JobRequest(Protocol):
    """准入要看的作业需求（作业行与 PendingJob 都符合）。"""

    @property
    def partition(self) -> str: ...
    @property
    def cpus(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def gpus(self) -> float: ...
    @property
    def gpu_type(self) -> str | None: ...
    @property
    def gres(self) -> Mapping[str, float]: ...
    @property
    def whole_node_memory(self) -> bool: ...
    @property
    def constraints(self) -> str | None: ...
    @property
    def required_nodes(self) -> Sequence[str]: ...
    @property
    def excluded_nodes(self) -> Sequence[str]: ...
    @property
    def nodes(self) -> int: ...


def _names(items: Iterable[object]) -> str:
    shown = sorted({str(i) for i in items})
    more = f" 等 {len(shown)} 个" if len(shown) > 20 else ""
    return "、".join(shown[:20]) + more if shown else "无"


def check_can_ever_run(job: JobRequest, nodes: Sequence[NodeView]) -> None:
    """永远无法运行的请求在提交时拒绝（422，点名字段与缺的资源），而不是让它永远 PENDING。

    nodes 是集群的存活节点（带分区与特性）；需求是每个节点的量，所以要有 nodes 个（单节点作业一个）节点各自
    同时容得下它的每一项需求并通过 -w/-x/-C 与 GPU 型号的筛选，且 -w 列出的都在其中。集群或分区暂无存活节点时
    接受：节点加入后即可运行。依次检查 -w、分区、节点数、-x、-C、GPU 型号、CPU、GPU、通用资源、内存，
    最后是容得下的节点数，报第一项不满足的。"""
    if not nodes:
        return
    count = int(job.nodes or 1)
    request = PendingJob(
        0,
        job.cpus,
        job.memory_bytes,
        job.partition,
        gpus=job.gpus,
        gres=dict(job.gres),
        gpu_type=job.gpu_type.lower() if job.gpu_type else None,
        whole_node_memory=job.whole_node_memory,
        constraints=job.constraints or None,
        required_nodes=list(job.required_nodes),
        excluded_nodes=list(job.excluded_nodes),
        nodes=count,
    )
    part = request.partition
    members = [n for n in nodes if part in n.partitions]
    _check_required(request, nodes, members)
    if not members:
        return
    _check_count(request, members, f"分区 {part} 只有")
    if request.constraints is not None:
        try:
            parse_constraint(request.constraints)
        except ValueError as exc:
            raise InvalidJobRequest("job.constraints", str(exc)) from exc
    named = [n for n in members if n.node_name not in request.excluded_nodes]
    if not named:
        raise InvalidJobRequest(
            "job.excluded_nodes",
            f"excluded_nodes（-x）排除了分区 {part} 的全部节点（{_names(n.node_name for n in members)}）",
        )
    chosen = [n for n in named if selected(request, n)]
    if not chosen:
        raise InvalidJobRequest(
            "job.constraints",
            f"constraints（-C）{request.constraints} 在分区 {part} 中没有节点满足"
            f"（节点的特性：{_names(f for n in named for f in n.features)}）",
        )
    filtered = bool(request.required_nodes or request.excluded_nodes or request.constraints)
    scope = f"分区 {part} 中任何{'符合 -w/-x/-C 的' if filtered else ''}节点"
    if request.gpu_type is not None:
        typed = [n for n in chosen if request.gpu_type in n.features]
        if not typed:
            raise InvalidJobRequest(
                "job.gpus",
                f"GPU 类型 {request.gpu_type}（gres gpu:{request.gpu_type}:N / gpus {request.gpu_type}:N）"
                f"不在{scope}上（节点的特性：{_names(f for n in chosen for f in n.features)}）",
            )
        chosen = typed
    declared = {name for n in nodes for name in n.custom}
    unknown = sorted(name for name in request.gres if name not in declared)
    if unknown:
        raise InvalidJobRequest(
            "job.gres",
            f"未知的通用资源 {'、'.join(unknown)}：集群中没有节点声明它"
            f"（已声明：{_names(declared)}；节点用 ray start --resources 声明）",
        )
    chosen = _narrow(
        chosen,
        CPU,
        request.cpus,
        lambda most: InvalidJobRequest(
            "job.cpus_per_task",
            f"请求{'每个节点 ' if request.nodes > 1 else ' '}{request.cpus} 个 CPU"
            "（ntasks_per_node × cpus_per_task），"
            f"超过{scope}的容量（最大 {most:g} 个）",
        ),
    )
    chosen = _narrow(
        chosen,
        GPU,
        request.gpus,
        lambda most: InvalidJobRequest(
            "job.gpus",
            f"请求每个节点 {request.gpus:g} 个 GPU（gres gpu:{request.gpus:g} / gpus {request.gpus:g}），"
            f"超过{scope}的 GPU 数（CPU 足够的节点中最大 {most:g} 个）",
        ),
    )
    for name, amount in sorted(request.gres.items()):
        chosen = _narrow(chosen, name, amount, _gres_error(name, amount, scope))
    if not request.whole_node_memory:
        enough = (
            "CPU 足够的" if not request.gpus and not request.gres else "CPU、GPU 与通用资源都足够的"
        )
        chosen = _narrow(
            chosen,
            MEMORY,
            request.memory_bytes,
            lambda most: InvalidJobRequest(
                "job.memory_per_node",
                f"请求内存 {request.memory_bytes // 2**20} MB，超过分区 {part} 中任何 {enough}节点的"
                f"可用内存（最大 {int(most) // 2**20} MB）",
            ),
        )
    lead = f"分区 {part} 中{'符合 -w/-x/-C、' if filtered else ''}容得下每个节点的需求的节点只有"
    _check_gang(request, chosen, lead)


def _check_count(job: PendingJob, nodes: Sequence[NodeView], lead: str) -> None:
    """作业要 nodes 个不同的节点：可用的不够时点名 job.nodes 并给出有几个。"""
    if len(nodes) < job.nodes:
        raise InvalidJobRequest(
            "job.nodes",
            f"请求 {job.nodes} 个节点（nodes / -N），{lead} {len(nodes)} 个"
            f"（{_names(n.node_name for n in nodes)}）",
        )


def _check_gang(job: PendingJob, chosen: Sequence[NodeView], lead: str) -> None:
    """筛选与每节点容量都过了之后：还要凑得齐 nodes 个，且 -w 列出的都在其中（多节点作业才会不满足）。"""
    _check_count(job, chosen, lead)
    lost = sorted(set(job.required_nodes) - {n.node_name for n in chosen})
    if lost:
        raise InvalidJobRequest(
            "job.required_nodes",
            f"required_nodes（-w）中的节点 {_names(lost)} 不满足 -C、GPU 型号或容不下每个节点的需求",
        )


def _gres_error(name: str, amount: float, scope: str) -> Callable[[float], InvalidJobRequest]:
    return lambda most: InvalidJobRequest(
        "job.gres",
        f"请求通用资源 {name}:{amount:g}，超过{scope}的数量（CPU 与 GPU 足够的节点中最大 {most:g}）",
    )


def _narrow(
    nodes: list[NodeView],
    resource: str,
    need: float,
    error: Callable[[float], InvalidJobRequest],
) -> list[NodeView]:
    """留下这一项总量容得下 need 的节点；一个也没有时抛出 error(这些节点中的最大值)。"""
    if need <= 0:
        return nodes
    kept = [n for n in nodes if Resources({resource: need}).fits_in(n.total)]
    if not kept:
        raise error(max((n.total[resource] for n in nodes), default=0.0))
    return kept


def _check_required(
    job: PendingJob, nodes: Sequence[NodeView], members: Sequence[NodeView]
) -> None:
    """-w：作业要用到列出的每个节点（同 Slurm），所以至多列 nodes 个；它们须在集群里、在作业的分区里、
    没被 -x 排除。"""
    wanted = sorted(set(job.required_nodes))
    if not wanted:
        return
    if len(wanted) > job.nodes:
        raise InvalidJobRequest(
            "job.required_nodes",
            (
                "作业只在一个节点上运行"
                if job.nodes == 1
                else f"作业在 {job.nodes} 个节点上运行（nodes / -N）"
            )
            + f"，而 required_nodes（-w）列出了 {len(wanted)} 个节点（{_names(wanted)}）："
            + f"Slurm 要求作业用到列出的每一个节点，请至多列 {job.nodes} 个",
        )
    for name in wanted:
        if name not in {n.node_name for n in nodes}:
            raise InvalidJobRequest(
                "job.required_nodes",
                f"required_nodes（-w）中的节点 {name} 不在集群中（存活的节点：{_names(n.node_name for n in nodes)}）",
            )
        if name in job.excluded_nodes:
            raise InvalidJobRequest(
                "job.required_nodes",
                f"节点 {name} 同时出现在 required_nodes（-w）与 excluded_nodes（-x）中",
            )
        if members and name not in {n.node_name for n in members}:
            raise InvalidJobRequest(
                "job.required_nodes",
                f"required_nodes（-w）中的节点 {name} 不属于分区 {job.partition}"
                f"（该分区的节点：{_names(n.node_name for n in members)}）",
            )
