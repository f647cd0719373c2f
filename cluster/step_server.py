"""作业内的步服务：批处理脚本里的 srun 连到这里，由它在分配内布局、启动并收尾作业步。

服务跑在执行器进程里（批处理节点上），监听抽象 Unix 套接字 conductor-step-<令牌>，名字经
CONDUCTOR_STEP_SOCKET 交给作业。批处理节点上的任务在本进程直接启动（step_tasks），其他节点的
任务交给 step_parts（Ray 任务，放在作业放置组的对应份额里）。分配的 CPU、GPU 按作业步记账：
一个作业步拿不到足够的空闲份额就等（同 Slurm 的 “step creation temporarily disabled”），
超过整个分配则立刻以 Slurm 的原文失败。
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import conductor
from conductor import steplink
from conductor.exec_result import OOM_EXIT_CODE
from conductor.hostlist import compress
from conductor.jobspec import JobSpec
from conductor.proctree import STEP_VAR, TOKEN_VAR
from conductor.step_tasks import LocalTask, run_node_tasks
from conductor.steps import (
    AllocNode,
    StepError,
    StepLayout,
    StepRequest,
    TaskSlot,
    exit_status,
    expand_step_pattern,
    file_scope,
    layout,
    split_gpus,
    task_env,
)
from conductor.usage import Meter, TaskUsage, Usage, summarize

log = logging.getLogger("conductor.steps")

# 任务结局：rank →（退出码, 信号）
Results = dict[int, tuple[int | None, int | None]]
# 在其他节点上运行一部分任务：(分配下标, 任务, 每任务 GPU 数, 输出回调, 取消事件, kill_on_bad_exit,
# 各任务用量的去处 rank → Usage) → 结局（见 step_parts.RayParts）
RemotePart = Callable[
    [
        int,
        list[LocalTask],
        int,
        Callable[[int, int, bytes], None],
        threading.Event,
        bool,
        dict[int, Usage],
    ],
    Results,
]
# 作业步记录：("start", 步号, 名称, 任务数, 节点列表) / ("finish", 步号, 状态, 退出码, 用量)
Recorder = Callable[..., None]

SHIM_DIR = "bin"
SIGKILL = 9


def socket_name(token: str) -> str:
    return f"conductor-step-{token}"


# 作业 PATH 最前面的命令：srun，以及作业里提交、查询、取消用的 Slurm 命令（用作业自己的凭据，
# 见 docs/security.md）。命令名 → (模块, 入口函数)，同 pyproject.toml 的 [project.scripts]
SHIM_COMMANDS: dict[str, tuple[str, str]] = {
    "srun": ("conductor.srun", "main"),
    **{
        name: (f"conductor.client.slurm.{name}", "run")
        for name in ("sbatch", "squeue", "scancel", "sacct", "sinfo", "scontrol")
    },
}


def shim_text(python: str, source_root: str, command: str = "srun") -> str:
    """命令的外壳脚本：先用服务自己的 Python；作业用户执行不了它（例如装在 0700 的 /root 下）时
    退回 PATH 里的 python3。这些命令只用标准库与几个纯 Python 模块，源码目录放在 sys.path 最前即可，
    不改 PYTHONPATH（srun 把自己的环境原样交给任务）。-I：不受用户的 PYTHON* 变量影响。"""
    module, func = SHIM_COMMANDS[command]
    run = (
        f"import sys; sys.argv[0] = {command!r}; sys.path.insert(0, {source_root!r}); "
        f"from {module} import {func}; sys.exit({func}())"
    )
    return (
        "#!/bin/sh\n"
        f"svc={shlex.quote(python)}\n"
        "py=$svc\n"
        'if [ ! -x "$py" ]; then\n'
        "  py=$(command -v python3) || {\n"
        f'    echo "{command}: error: 作业用户执行不了 Conductor 的 Python（$svc），PATH 里也没有 python3" >&2\n'
        "    exit 1\n"
        "  }\n"
        "fi\n"
        f'exec "$py" -I -c {shlex.quote(run)} "$@"\n'
    )


def install_shim(spool: Path) -> Path:
    """在临时目录下放 srun 与 Slurm 的几个命令（SHIM_COMMANDS），返回它们所在的目录。

    目录里只有这些命令：放在作业 PATH 的最前面，不会遮住用户自己的 python 等命令。"""
    bin_dir = spool / SHIM_DIR
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(bin_dir, 0o755)
    root = str(Path(conductor.__file__).resolve().parent.parent)
    for command in SHIM_COMMANDS:
        _install(bin_dir, command, shim_text(sys.executable, root, command))
    return bin_dir


def _install(bin_dir: Path, command: str, body: str) -> None:
    """内容不同才换（原子替换）：同一节点上的作业共用这个目录。"""
    shim = bin_dir / command
    try:
        current = shim.read_text()
    except OSError:
        current = None
    if current != body:
        tmp = bin_dir / f".{command}-{os.getpid()}"
        tmp.write_text(body)
        os.chmod(tmp, 0o755)
        os.replace(tmp, shim)


@dataclass
class _Grant:
    cpus: dict[int, int]
    gpus: dict[int, int]
    local_gpu_ids: list[Any] = field(default_factory=list)


class Pool:
    """分配中尚未被作业步占用的 CPU 与 GPU（下标同分配）。批处理节点（下标 0）的 GPU 记到具体编号。"""

    def __init__(self, nodes: Sequence[AllocNode], local_gpu_ids: Sequence[Any]) -> None:
        self.cpus = [n.cpus for n in nodes]
        self.gpus = [n.gpus for n in nodes]
        self.local_gpu_ids = list(local_gpu_ids)
        self.cond = threading.Condition()

    def _need(self, lay: StepLayout) -> tuple[dict[int, int], dict[int, int]]:
        return (
            {i: lay.cpus_on(i) for i in lay.node_indices},
            {i: lay.gpus_on(i) for i in lay.node_indices},
        )

    def _fits(self, lay: StepLayout) -> bool:
        cpus, gpus = self._need(lay)
        return all(self.cpus[i] >= c for i, c in cpus.items()) and all(
            self.gpus[i] >= g for i, g in gpus.items()
        )

    def take(
        self, lay: StepLayout, stop: threading.Event, on_wait: Callable[[], None]
    ) -> _Grant | None:
        """占下作业步的份额；暂时不够时先调用一次 on_wait 再等，stop 被置位时放弃（返回 None）。"""
        with self.cond:
            waited = False
            while not self._fits(lay):
                if stop.is_set():
                    return None
                if not waited:
                    waited = True
                    on_wait()
                self.cond.wait(0.2)
            cpus, gpus = self._need(lay)
            for i, c in cpus.items():
                self.cpus[i] -= c
            for i, g in gpus.items():
                self.gpus[i] -= g
            taken = gpus.get(0, 0)
            ids, self.local_gpu_ids = self.local_gpu_ids[:taken], self.local_gpu_ids[taken:]
            return _Grant(cpus, gpus, ids)

    def give(self, grant: _Grant) -> None:
        with self.cond:
            for i, c in grant.cpus.items():
                self.cpus[i] += c
            for i, g in grant.gpus.items():
                self.gpus[i] += g
            self.local_gpu_ids += grant.local_gpu_ids
            self.cond.notify_all()


class StepServer:
    """一个作业的步服务。start() 后把 env() 加进作业环境；脚本结束后 close()。"""

    def __init__(
        self,
        spec: JobSpec,
        node_id: str,
        gpu_ids: Sequence[Any],
        shim_dir: Path,
        remote: RemotePart | None = None,
        record: Recorder | None = None,
    ) -> None:
        self.spec = spec
        self.node_id = node_id
        self.shim_dir = shim_dir
        self.remote = remote
        self.record = record or (lambda *args: None)
        self.job_uid = os.geteuid()
        self.identity: tuple[int, int, tuple[int, ...]] | None = None
        self.name = socket_name(spec.token)
        members = spec.allocation
        if members:
            self.alloc = [AllocNode(m.node_name, m.cpus, spec.gpus) for m in members]
            self.node_ids = [m.node_id for m in members]
        else:
            cpus = spec.cpus_on_node or spec.cpus
            self.alloc = [AllocNode(spec.node_name, cpus, spec.gpus)]
            self.node_ids = [node_id]
        self.pool = Pool(self.alloc, gpu_ids)
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.next_step = 0
        self.active: set[threading.Event] = set()
        self.threads: list[threading.Thread] = []
        self.listener: socket.socket | None = None
        # 作业在本节点的测量与内存上限（执行器启动脚本前设上）：本节点的任务进同一个作业 cgroup
        self.meter: Meter | None = None

    def env(self, path: str) -> dict[str, str]:
        """加进作业环境的变量：步服务的套接字名，PATH 最前面是 srun 所在的目录。"""
        return {steplink.SOCKET_VAR: self.name, "PATH": f"{self.shim_dir}:{path}"}

    def start(self, identity: tuple[int, int, tuple[int, ...]] | None = None) -> None:
        """开始监听。identity 为作业的 Unix 身份 (uid, gid, 附加组)，以服务用户运行时为 None：
        只有该用户和 root 能连；作业步的任务以这个身份运行。"""
        self.identity = identity
        if identity is not None:
            self.job_uid = identity[0]
        self.listener = steplink.listen(self.name)
        self.listener.settimeout(0.2)
        accept = threading.Thread(target=self._accept, name="step-accept", daemon=True)
        accept.start()
        self.threads.append(accept)

    def close(self, timeout: float = 10.0) -> None:
        """脚本已结束：不再接受 srun，终止仍在运行的作业步并等它们收尾（有上限）。"""
        self.closing.set()
        with self.lock:
            for cancelled in self.active:
                cancelled.set()
        for thread in list(self.threads):
            thread.join(timeout)
        if self.listener is not None:
            self.listener.close()

    # ------------------------------------------------------------ 连接

    def _accept(self) -> None:
        assert self.listener is not None
        while not self.closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            if not self._trusted(conn):
                conn.close()
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="step", daemon=True)
            thread.start()
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]

    def _trusted(self, conn: socket.socket) -> bool:
        """只接受作业用户（或 root）的连接：抽象套接字本机谁都能连。"""
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid in (0, self.job_uid):
            return True
        log.warning("作业 %s 的步服务拒绝了 uid %s 的连接", self.spec.job_id, uid)
        return False

    def _serve(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()

        def send(frame: dict[str, Any]) -> None:
            with send_lock, contextlib.suppress(OSError):
                steplink.send(conn, frame)

        cancelled = threading.Event()
        with self.lock:
            self.active.add(cancelled)
        try:
            with conn, conn.makefile("rb") as reader:
                frame = steplink.recv(reader)
                if frame is None or frame.get("t") != "run":
                    return
                watcher = threading.Thread(
                    target=_watch_client, args=(reader, cancelled), name="step-client", daemon=True
                )
                watcher.start()
                if self.closing.is_set():
                    cancelled.set()
                self._run_step(frame, send, cancelled)
        except (steplink.LinkError, OSError, ValueError, TypeError) as exc:
            log.warning("作业 %s 的一个 srun 请求无效：%s", self.spec.job_id, exc)
            send(steplink.error_frame(f"srun: error: 请求无效：{exc}"))
        finally:
            with self.lock:
                self.active.discard(cancelled)

    # ------------------------------------------------------------ 作业步

    def _run_step(
        self,
        frame: dict[str, Any],
        send: Callable[[dict[str, Any]], None],
        cancelled: threading.Event,
    ) -> None:
        spec = self.spec
        req = StepRequest.from_dict(frame["request"])
        cwd = str(frame.get("cwd") or spec.work_dir)
        env = {str(k): str(v) for k, v in dict(frame.get("env") or {}).items()}
        if not req.command:
            send(steplink.error_frame("srun: fatal: No command given to execute."))
            return
        try:
            lay = layout(req, self.alloc, spec.job_id, spec.total_tasks, spec.cpus_per_task)
        except StepError as exc:
            send(steplink.error_frame(exc.message, exc.exit_code))
            return
        if spec.run_as_user is not None and (req.output or req.error):
            send(
                steplink.error_frame(
                    "srun: error: 以指定 Unix 用户运行的作业暂不支持 srun -o/-e（输出文件须由该用户"
                    "自己打开）；请在命令里自行重定向"
                )
            )
            return
        for warning in lay.warnings:
            send(steplink.warn_frame(warning))
        with self.lock:
            step_id = self.next_step
            self.next_step += 1
        waited = False

        def on_wait() -> None:
            nonlocal waited
            waited = True
            # src/srun/allocate.c / step_ctx 的原文
            send(
                steplink.warn_frame(
                    f"srun: Job {spec.job_id} step creation temporarily disabled, retrying "
                    "(Requested nodes are busy)"
                )
            )

        grant = self.pool.take(lay, cancelled, on_wait)
        if grant is None:
            send(
                steplink.error_frame(
                    f"srun: error: Unable to create step for job {spec.job_id}: "
                    "Job/step already completing or completed"
                )
            )
            return
        try:
            if waited:
                send(steplink.warn_frame(f"srun: Step created for StepId={spec.job_id}.{step_id}"))
            self._launch(req, lay, step_id, cwd, env, grant, send, cancelled)
        finally:
            self.pool.give(grant)

    def _launch(
        self,
        req: StepRequest,
        lay: StepLayout,
        step_id: int,
        cwd: str,
        env: dict[str, str],
        grant: _Grant,
        send: Callable[[dict[str, Any]], None],
        cancelled: threading.Event,
    ) -> None:
        names = [n.name for n in self.alloc]
        send(steplink.step_frame(step_id, lay.ntasks))
        name = req.job_name or os.path.basename(req.command[0])
        node_list = compress([names[i] for i in lay.node_indices])
        self.record("start", step_id, name, lay.ntasks, node_list)
        work_dir = os.path.join(cwd, req.chdir) if req.chdir else cwd
        parts = {
            i: self._tasks(req, lay, step_id, i, work_dir, env, grant) for i in lay.node_indices
        }

        def emit(rank: int, stream: int, data: bytes) -> None:
            send(steplink.output_frame(rank, stream, data))

        results: Results = {}
        usages: dict[int, Usage] = {}
        threads = []
        for index, tasks in parts.items():
            thread = threading.Thread(
                target=self._run_part,
                args=(
                    index,
                    tasks,
                    lay.gpus_per_task,
                    emit,
                    cancelled,
                    req.kill_on_bad_exit,
                    results,
                    step_id,
                    usages,
                ),
                name=f"step-{step_id}-{index}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        codes = [results.get(t.rank, (None, SIGKILL))[0] for t in lay.tasks]
        signals = [results.get(t.rank, (None, SIGKILL))[1] for t in lay.tasks]
        status = exit_status(codes, signals)
        hosts = [names[t.node_index] for t in lay.tasks]
        # 结局在发出退出帧之前定下：srun 收到退出帧就断开连接，断开会置位 cancelled
        used, ave_rss = summarize(usages.values())
        state, code = _step_state(cancelled, codes, signals), _exit_code(codes, signals)
        if used.oom_killed:
            # 同 Slurm：作业步里有进程被内存上限 OOM 杀掉，作业步即 OUT_OF_MEMORY，退出码 0:125
            state, code = "OUT_OF_MEMORY", OOM_EXIT_CODE
        send(steplink.exit_frame(codes, signals, status, hosts))
        self.record("finish", step_id, state, code, step_usage(used, ave_rss))

    def _run_part(
        self,
        index: int,
        tasks: list[LocalTask],
        gpus_per_task: int,
        emit: Callable[[int, int, bytes], None],
        cancelled: threading.Event,
        kill_on_bad_exit: bool,
        results: Results,
        step_id: int = 0,
        usages: dict[int, Usage] | None = None,
    ) -> None:
        measured: dict[int, Usage] = {}
        try:
            if index == 0:
                tu = TaskUsage(self.meter, f"step{step_id}")
                part = run_node_tasks(
                    tasks, emit, cancelled, kill_on_bad_exit, self.spec.kill_wait, tu
                )
                measured = tu.results
            elif self.remote is None:
                raise RuntimeError("多节点作业步缺少远端执行器")
            else:
                part = self.remote(
                    index, tasks, gpus_per_task, emit, cancelled, kill_on_bad_exit, measured
                )
        except Exception as exc:  # noqa: BLE001 - 一个节点出错：这部分任务记为被杀，其余照常收尾
            log.warning("作业 %s 的作业步在节点 %s 上出错：%s", self.spec.job_id, index, exc)
            for task in tasks:
                emit(task.rank, 2, f"srun: error: {self.alloc[index].name}: {exc}\n".encode())
            part = {t.rank: (None, SIGKILL) for t in tasks}
        results.update(part)
        if usages is not None:
            usages.update(measured)
        if kill_on_bad_exit and any(r != (0, None) for r in part.values()):
            cancelled.set()

    def _tasks(
        self,
        req: StepRequest,
        lay: StepLayout,
        step_id: int,
        index: int,
        work_dir: str,
        env: dict[str, str],
        grant: _Grant,
    ) -> list[LocalTask]:
        """分配下标 index 上的任务。批处理节点的 GPU 编号在这里分好；其他节点的由远端按 Ray 分到的编号分。"""
        spec = self.spec
        names = [n.name for n in self.alloc]
        slots = lay.tasks_on(index)
        gpu_sets: list[list[Any]] = [[] for _ in slots]
        if index == 0 and lay.gpus_per_task:
            gpu_sets = split_gpus(grant.local_gpu_ids, len(slots), lay.gpus_per_task)
        # 令牌强制写入：任务改不掉它，取消、超时与节点清理按它找到任务的全部进程
        base = {
            **env,
            TOKEN_VAR: spec.token,
            STEP_VAR: f"{spec.job_id}.{step_id}",
            "CONDUCTOR_NODE_ID": self.node_ids[index],
        }
        base.setdefault("PATH", f"{self.shim_dir}:/usr/local/bin:/usr/bin:/bin")
        tasks = []
        for slot, gpus in zip(slots, gpu_sets, strict=True):
            task_vars = task_env(
                base,
                job_id=spec.job_id,
                step_id=step_id,
                layout=lay,
                slot=slot,
                node_names=names,
                gpu_ids=gpus,
            )
            tasks.append(
                LocalTask(
                    rank=slot.rank,
                    argv=tuple(req.command),
                    env=task_vars,
                    cwd=work_dir,
                    stdout_path=self._output(req.output, lay, step_id, slot),
                    stderr_path=self._output(req.error or req.output, lay, step_id, slot),
                    append=req.open_mode == "append",
                    identity=self.identity,
                )
            )
        return tasks

    def _output(
        self, pattern: str | None, lay: StepLayout, step_id: int, slot: TaskSlot
    ) -> str | None:
        if pattern is None:
            return None
        spec = self.spec
        scope = file_scope(pattern)
        return expand_step_pattern(
            pattern,
            job_id=spec.job_id,
            step_id=step_id,
            rank=slot.rank if scope == "task" else None,
            node_name=self.alloc[slot.node_index].name,
            node_index=lay.step_node_id(slot.node_index),
            array_job_id=spec.array_job_id,
            array_task_id=spec.array_task_id,
            job_name=spec.name,
            user=spec.run_as_user,
        )


def _watch_client(reader: IO[bytes], cancelled: threading.Event) -> None:
    """读 srun 之后的帧：cancel 帧或连接断开（srun 被杀）都取消作业步。"""
    try:
        while True:
            frame = steplink.recv(reader)
            if frame is None or frame.get("t") == "cancel":
                break
    except (steplink.LinkError, OSError, ValueError):
        pass
    cancelled.set()


def _step_state(
    cancelled: threading.Event, codes: Sequence[int | None], signals: Sequence[int | None]
) -> str:
    if all(c == 0 for c in codes) and not any(signals):
        return "COMPLETED"
    return "CANCELLED" if cancelled.is_set() else "FAILED"


def step_usage(used: Usage, ave_rss: int | None) -> dict[str, Any]:
    """交给代理记进 job_steps 的用量（普通 dict：经 Ray 传给代理）。"""
    return {
        "max_rss_bytes": used.max_rss_bytes,
        "ave_rss_bytes": ave_rss,
        "user_cpu_seconds": used.user_cpu_seconds,
        "system_cpu_seconds": used.system_cpu_seconds,
    }


def _exit_code(codes: Sequence[int | None], signals: Sequence[int | None]) -> str:
    """Slurm 作业步的 ExitCode 写法 “退出码:信号”：取最大的退出码与最大的信号。"""
    code = max((c for c in codes if c is not None), default=0)
    sig = max((s for s in signals if s), default=0)
    return f"{code}:{sig}"


def with_gpus(task: LocalTask, ids: Sequence[Any]) -> LocalTask:
    """给远端节点上的任务设上它分到的 GPU（同 task_env 给批处理节点任务设的那几个变量）。"""
    value = ",".join(str(g) for g in ids)
    gpu = {"CUDA_VISIBLE_DEVICES": value, "GPU_DEVICE_ORDINAL": value, "SLURM_STEP_GPUS": value}
    twins = {"CONDUCTOR_STEP_GPUS": value}
    return replace(task, env={**task.env, **gpu, **twins})
