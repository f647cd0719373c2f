"""交给执行器的作业规格，以及作业进程的环境变量。

环境 = 干净的基础变量 + 用户的 environment + Slurm 变量及 CONDUCTOR_ 孪生变量。
服务自身的配置与机密（数据库地址、服务的令牌）从不进入作业环境；作业只拿到自己这次执行的凭据
（CONDUCTOR_TOKEN，见 conductor/jobcred.py）。
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conductor.arrays import parse_array
from conductor.hostlist import compress, compress_counts
from conductor.jobcred import job_credential
from conductor.memory import slurm_mem_mb
from conductor.proctree import TOKEN_VAR

# 从节点环境继承的基础变量（白名单）
BASE_VARS = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "TERM")
DEFAULT_BASE = {"PATH": "/usr/local/bin:/usr/bin:/bin", "SHELL": "/bin/bash", "TMPDIR": "/tmp"}


@dataclass(frozen=True)
class Member:
    """作业分配中的一个节点：Ray 节点 id、节点名与该节点上归作业的 CPU 数、内存字节数。"""

    node_id: str
    node_name: str
    cpus: int
    memory: int


@dataclass(frozen=True)
class JobSpec:
    """执行一个作业所需的一切（可序列化后发往任意节点）。"""

    job_id: int
    name: str
    account: str
    partition: str
    script: str
    environment: dict[str, str]
    work_dir: str
    stdout_path: str
    stderr_path: str
    ntasks_per_node: int
    cpus_per_task: int
    cpus: int
    memory_bytes: int
    time_limit_seconds: int | None
    node_name: str
    token: str
    kill_wait: float
    array_job_id: int | None = None
    array_task_id: int | None = None
    array_spec: str | None = None
    # 以哪个 Unix 用户运行；None 为服务自身的用户
    run_as_user: str | None = None
    # 节点上归作业使用的 CPU 数（SLURM_CPUS_ON_NODE）：独占作业为整个节点，否则为所申请的
    cpus_on_node: int | None = None
    # ---- 资源（议题 16）----
    # 任务数；None 为旧写法，等于 ntasks_per_node（单节点）
    ntasks: int | None = None
    gpus: int = 0
    gpu_type: str | None = None
    gres: dict[str, float] = field(default_factory=dict)
    # --mem=0：整个节点的内存；node_memory 为该节点的内存字节数（已知时）
    whole_node_memory: bool = False
    node_memory: int | None = None
    # 提交时的 Slurm 写法（request.JobRequest.slurm_request）：SLURM_GPUS、SLURM_MEM_PER_CPU…
    slurm_request: dict[str, Any] = field(default_factory=dict)
    # ---- 多节点（议题 17）----
    # 分配的全部节点，第一个即运行批处理脚本的节点；单节点作业为空（只有 node_name 那一个）
    allocation: tuple[Member, ...] = ()
    # ---- 议题 18 ----
    # 重新排队过几次（SLURM_RESTART_COUNT）
    restart_count: int = 0
    # --open-mode：append / truncate；None 同 Slurm 的默认（JobFileAppend=0：截断）
    open_mode: str | None = None
    # --signal：时限前 signal_seconds 秒发 signal_number；signal_batch 为只发给批处理 shell
    signal_number: int | None = None
    signal_seconds: int | None = None
    signal_batch: bool = False
    # 传给脚本的参数（sbatch 脚本 参数...）
    script_args: tuple[str, ...] = ()

    @property
    def appends_output(self) -> bool:
        """输出文件以追加方式打开：只有 --open-mode=append；默认与 truncate 每次运行都截断（同 Slurm）。"""
        return self.open_mode == "append"

    @property
    def multi_node(self) -> bool:
        return len(self.allocation) > 1

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(m.node_name for m in self.allocation) or (self.node_name,)

    def memory_limit(self, index: int = 0) -> int:
        """作业在分配的第 index 个节点上的内存（字节，--mem 按节点计），即该节点 cgroup 的上限；0 为不限。

        --mem=0 的作业拿整个节点的内存（认领时记下），不知道时为 0。"""
        if self.allocation:
            return self.allocation[index].memory
        if self.whole_node_memory:
            return self.node_memory or self.memory_bytes
        return self.memory_bytes

    @property
    def total_tasks(self) -> int:
        return self.ntasks or self.ntasks_per_node

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        token: str,
        kill_wait: float,
        node_cpus: int | None = None,
        node_memory: int | None = None,
        members: dict[str, tuple[int, int]] | None = None,
    ) -> JobSpec:
        """由 jobs 表的一行构造。node_cpus、node_memory 为所在节点的 CPU 总数与内存字节数
        （独占作业与 --mem=0 用）；members 为各节点 id → (CPU 总数, 内存字节数)，多节点作业用。

        库里的值不成样子时 ValueError，消息指明哪一列：调度器据此让这个作业失败。"""
        environment = row["environment"] or {}
        if not isinstance(environment, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in environment.items()
        ):
            raise ValueError(
                f"environment 应为字符串到字符串的 JSON 对象，实为 {str(environment)[:100]!r}"
            )
        args = row.get("script_args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"script_args 应为字符串的 JSON 数组，实为 {str(args)[:100]!r}")
        return cls(
            job_id=row["id"],
            name=row["name"],
            account=row["account"],
            partition=row["partition"],
            script=row["script"],
            environment=dict(environment),
            work_dir=row["work_dir"],
            stdout_path=row["stdout_path"],
            stderr_path=row["stderr_path"],
            ntasks_per_node=row["ntasks_per_node"],
            cpus_per_task=row["cpus_per_task"],
            cpus=row["cpus"],
            memory_bytes=row["memory_bytes"],
            time_limit_seconds=row["time_limit_seconds"],
            node_name=row["node_name"] or "",
            token=token,
            kill_wait=kill_wait,
            array_job_id=row.get("array_job_id"),
            array_task_id=row.get("array_task_id"),
            array_spec=row.get("array_spec"),
            run_as_user=row.get("run_as_user"),
            cpus_on_node=node_cpus if row.get("exclusive") and node_cpus else None,
            ntasks=row.get("ntasks") or row["ntasks_per_node"],
            gpus=row.get("gpus") or 0,
            gpu_type=row.get("gpu_type"),
            gres=dict(row.get("gres") or {}),
            whole_node_memory=bool(row.get("whole_node_memory")),
            node_memory=node_memory,
            slurm_request=dict(row.get("slurm_request") or {}),
            allocation=_allocation(row, members or {}),
            restart_count=int(row.get("restart_count") or 0),
            open_mode=row.get("open_mode"),
            signal_number=row.get("signal_number"),
            signal_seconds=row.get("signal_seconds"),
            signal_batch=bool(row.get("signal_batch")),
            script_args=tuple(args),
        )


def _allocation(row: Mapping[str, Any], members: dict[str, tuple[int, int]]) -> tuple[Member, ...]:
    """多节点作业的各节点份额：CPU 与内存是每节点的量；独占作业、--mem=0 取该节点的全部。"""
    ids, names = row.get("node_ids") or [], row.get("node_names") or []
    if len(ids) < 2:
        return ()
    if len(ids) != len(names):
        raise ValueError(f"node_ids 与 node_names 的个数不同：{ids!r} / {names!r}")
    alloc = []
    for node_id, name in zip(ids, names, strict=True):
        if node_id not in members:
            raise ValueError(f"分配中的节点 {name}（{node_id}）已不在存活节点中")
        total_cpus, total_memory = members[node_id]
        cpus = total_cpus if row.get("exclusive") else row["cpus"]
        memory = total_memory if row.get("whole_node_memory") else row["memory_bytes"]
        alloc.append(Member(node_id, name, int(cpus), int(memory)))
    return tuple(alloc)


def array_vars(spec: JobSpec) -> dict[str, str]:
    """数组任务的 SLURM_ARRAY_* 变量；不是数组任务时为空。"""
    if spec.array_job_id is None or spec.array_task_id is None or spec.array_spec is None:
        return {}
    indices = parse_array(spec.array_spec, max_tasks=10**6).indices
    return {
        "SLURM_ARRAY_JOB_ID": str(spec.array_job_id),
        "SLURM_ARRAY_TASK_ID": str(spec.array_task_id),
        "SLURM_ARRAY_TASK_COUNT": str(len(indices)),
        "SLURM_ARRAY_TASK_MIN": str(indices[0]),
        "SLURM_ARRAY_TASK_MAX": str(indices[-1]),
    }


def memory_vars(spec: JobSpec) -> dict[str, str]:
    """内存变量，同 Slurm：按哪种写法申请就设哪一个（SLURM_MEM_PER_CPU / _PER_GPU / _PER_NODE）。

    --mem=0 时为节点的全部内存；节点内存未知则不设，免得作业读到 0。"""
    request = spec.slurm_request
    if "mem_per_cpu" in request:
        return {"SLURM_MEM_PER_CPU": slurm_mem_mb(int(request["mem_per_cpu"]))}
    if "mem_per_gpu" in request:
        return {"SLURM_MEM_PER_GPU": slurm_mem_mb(int(request["mem_per_gpu"]))}
    if spec.whole_node_memory:
        return (
            {}
            if spec.node_memory is None
            else {"SLURM_MEM_PER_NODE": slurm_mem_mb(spec.node_memory)}
        )
    return {"SLURM_MEM_PER_NODE": slurm_mem_mb(spec.memory_bytes)}


# slurm_request 的键 → 作业环境变量（值即用户所写，如 a100:2）
_GPU_REQUEST_VARS = {
    "gpus_per_job": "SLURM_GPUS",
    "gpus_per_node": "SLURM_GPUS_PER_NODE",
    "gpus_per_task": "SLURM_GPUS_PER_TASK",
    "cpus_per_gpu": "SLURM_CPUS_PER_GPU",
}


def gpu_request_vars(spec: JobSpec) -> dict[str, str]:
    """与 Ray 分到哪几块 GPU 无关的 GPU 变量：只在用户以相应写法申请时设置，同 Slurm。"""
    return {
        var: str(spec.slurm_request[key])
        for key, var in _GPU_REQUEST_VARS.items()
        if key in spec.slurm_request
    }


def gpu_vars(gpu_ids: Sequence[str | int]) -> dict[str, str]:
    """Ray 分给作业的 GPU 编号 → CUDA_VISIBLE_DEVICES、SLURM_JOB_GPUS、SLURM_GPUS_ON_NODE、
    GPU_DEVICE_ORDINAL（没有 GPU 时为空）。

    Slurm 用 cgroup 隔离设备时把 CUDA_VISIBLE_DEVICES 重新编号为 0..n-1；Ray 不隔离设备，
    作业看得见节点上全部 GPU，所以这里用 Ray 给出的物理编号，SLURM_JOB_GPUS 也是物理编号。"""
    ids = ",".join(str(i) for i in gpu_ids)
    if not ids:
        return {}
    return {
        "CUDA_VISIBLE_DEVICES": ids,
        "GPU_DEVICE_ORDINAL": ids,
        "SLURM_JOB_GPUS": ids,
        "SLURM_GPUS_ON_NODE": str(len(gpu_ids)),
    }


def spread_tasks(ntasks: int, nodes: int) -> list[int]:
    """任务按 Slurm 的 block 分布摊到各节点：前 ntasks % nodes 个节点各多一个（5 个摊到 2 个节点为 3,2）。"""
    base, extra = divmod(ntasks, nodes)
    return [base + (i < extra) for i in range(nodes)]


def allocation_vars(spec: JobSpec) -> dict[str, str]:
    """分配的形状：节点列表（Slurm 的主机列表写法）、节点数、每节点的任务数与 CPU 数。
    批处理脚本运行在第一个节点上（SLURM_NODEID=0）。"""
    names = spec.node_names
    cpus = [m.cpus for m in spec.allocation] or [spec.cpus_on_node or spec.cpus]
    nodelist = compress(names)
    return {
        "SLURM_JOB_NUM_NODES": str(len(names)),
        "SLURM_NNODES": str(len(names)),
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_NODELIST": nodelist,
        "SLURM_TASKS_PER_NODE": compress_counts(spread_tasks(spec.total_tasks, len(names))),
        "SLURM_JOB_CPUS_PER_NODE": compress_counts(cpus),
        "SLURM_CPUS_ON_NODE": str(cpus[0]),
        "SLURM_NODEID": "0",
        "SLURMD_NODENAME": names[0],
    }


def open_mode_vars(spec: JobSpec) -> dict[str, str]:
    """给了 --open-mode 时的 SLURM_OPEN_MODE（a / t），同 slurmctld 的 job_scheduler.c；没给不设。"""
    if spec.open_mode is None:
        return {}
    return {"SLURM_OPEN_MODE": "a" if spec.open_mode == "append" else "t"}


def service_vars(spec: JobSpec, service_url: str | None) -> dict[str, str]:
    """作业里的 Slurm 命令访问 API 所需：服务地址与这次执行的作业凭据（见 conductor/jobcred.py）。

    服务地址未知（API 尚未登记）时只给凭据：命令会报告连不上，而不是连到别处。"""
    env = {"CONDUCTOR_TOKEN": job_credential(spec.job_id, spec.token)}
    if service_url:
        env["CONDUCTOR_URL"] = service_url
    return env


def slurm_vars(spec: JobSpec) -> dict[str, str]:
    """Slurm 作业变量；脚本无需修改即可沿用。"""
    return (
        array_vars(spec)
        | memory_vars(spec)
        | gpu_request_vars(spec)
        | {
            "SLURM_JOB_ID": str(spec.job_id),
            "SLURM_JOBID": str(spec.job_id),
            "SLURM_JOB_NAME": spec.name,
            "SLURM_CPUS_PER_TASK": str(spec.cpus_per_task),
            "SLURM_NTASKS": str(spec.ntasks or spec.ntasks_per_node),
            "SLURM_NPROCS": str(spec.ntasks or spec.ntasks_per_node),
            "SLURM_NTASKS_PER_NODE": str(spec.ntasks_per_node),
            "SLURM_SUBMIT_DIR": spec.work_dir,
            "SLURM_JOB_ACCOUNT": spec.account,
            "SLURM_JOB_PARTITION": spec.partition,
            # 批处理作业总是设置（首次运行为 0），同 Slurm 的 src/common/env.c
            "SLURM_RESTART_COUNT": str(spec.restart_count),
        }
        | open_mode_vars(spec)
        | allocation_vars(spec)
    )


def build_env(
    spec: JobSpec,
    node_env: Mapping[str, str],
    gpu_ids: Sequence[str | int] = (),
    service_url: str | None = None,
) -> dict[str, str]:
    """作业进程的完整环境。用户变量不能覆盖 Slurm 变量、GPU 变量、作业凭据与追踪标记。

    gpu_ids 为 Ray 分给这次执行的 GPU 编号（执行器里的 ray.get_gpu_ids()）；service_url 为
    API 的地址（CONDUCTOR_URL）。"""
    env = dict(DEFAULT_BASE)
    env.update({k: node_env[k] for k in BASE_VARS if k in node_env})
    env.update(spec.environment)
    # 没分到 GPU 的作业看不见节点上的 GPU（Slurm 用 cgroup 隐藏设备；这里至少让 CUDA 程序不去用别人的卡）
    gpu_env = gpu_vars(gpu_ids) if gpu_ids else {"CUDA_VISIBLE_DEVICES": ""}
    scheduler_vars = slurm_vars(spec) | gpu_env
    env.update(scheduler_vars)
    env.update(
        {
            "CONDUCTOR_" + k.removeprefix("SLURM_"): v
            for k, v in scheduler_vars.items()
            if k.startswith("SLURM_")
        }
    )
    env.update(service_vars(spec, service_url))
    env[TOKEN_VAR] = spec.token
    return env
