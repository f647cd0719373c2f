"""执行器：在分配到的节点上以 Ray 任务运行作业脚本。

脚本在自己的会话（进程组）中运行，stdout/stderr 直接写入作业文件；
用 pidfd 等待进程结束，无轮询延迟；超时则 SIGTERM → 宽限 → SIGKILL 整棵进程树。
脚本结束后，残留的后台子孙进程一律杀掉：作业的任何进程都不活过作业本身。
用量（峰值内存、CPU 时间）与 --mem 的执行见 conductor.usage：能建 cgroup 时脚本在 exec 之前进入
作业 cgroup 的 batch 叶子，本节点的作业步任务进同一作业 cgroup 的各自叶子；作业结束时删除 cgroup。
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pwd
import select
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ray
from ray.util import get_current_placement_group

from cluster import service_url
from cluster.spool import (
    cancel_marker,
    leave_result,
    prepare_spool,
    script_path,
    started_marker,
    touch_marker,
    write_script,
)
from cluster.step_parts import RayParts
from cluster.step_server import StepServer, install_shim
from conductor.exec_result import ExecResult
from conductor.fileopen import open_output
from conductor.jobspec import JobSpec, build_env
from conductor.proctree import JobGroup, become_subreaper, kill_job_tree, live_children, spawn
from conductor.usage import Meter, Probe, wait_rusage

log = logging.getLogger("conductor.executor")


def _open_output(path: str, append: bool) -> int:
    """打开日志文件：只接受普通文件与 /dev/null，FIFO、设备、符号链接一律拒绝（不阻塞、不打开）。
    append 为追加（--open-mode=append），否则截断。"""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open_output(path, append)


# 以作业用户身份运行的引导脚本：工作目录与日志文件由该用户自己创建和打开，
# 服务（root）从不在用户可控的目录里创建文件（否则符号链接可让 root 覆盖任意文件）。
# 它在固定的最小环境里运行，不受用户的 environment 影响（BASH_ENV、PATH 等能让它在重定向之前
# 执行用户的代码）；用户的变量从 $5 号 fd（NUL 分隔）读入，只交给最后 exec 的作业脚本。
# 失败信息写到原来的标准错误（交给执行器的管道）；成功重定向后管道即关闭。
# 已存在的日志必须是普通文件（或 /dev/null）：exec >FIFO 会一直等读者。检查与打开之间
# 用户若换上 FIFO，只能挂住自己的作业：执行器等管道最多 _REDIRECT_TIMEOUT 秒。
_LAUNCH_AS_USER = r"""
envfd=$5
mapfile -d '' -t vars <&"$envfd" && exec {envfd}<&- || exit 1
mkdir -p -- "$1" && cd -- "$1" || exit 1
mkdir -p -- "$(dirname -- "$2")" "$(dirname -- "$3")" || exit 1
for f in "$2" "$3"; do
  if [ -e "$f" ] && [ ! -f "$f" ] && [ ! "$f" -ef /dev/null ]; then
    if [ -p "$f" ]; then k=FIFO; elif [ -c "$f" ] || [ -b "$f" ]; then k=设备
    elif [ -S "$f" ]; then k=套接字; elif [ -d "$f" ]; then k=目录; else k=特殊文件; fi
    echo "输出文件 $f 不是普通文件（$k），拒绝打开" >&2
    exit 1
  fi
done
if [ "$6" = a ]; then
  if [ "$2" = "$3" ]; then exec >>"$2" 2>&1 || exit 1; else exec >>"$2" 2>>"$3" || exit 1; fi
elif [ "$2" = "$3" ]; then exec >"$2" 2>&1 || exit 1; else exec >"$2" 2>"$3" || exit 1; fi
exec /usr/bin/env -i -- "${vars[@]}" /bin/bash "$4" "${@:7}"
"""

# 引导脚本自己的环境：固定、与用户无关
_BOOTSTRAP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
# 等引导脚本完成重定向（管道关闭）最多这么久、读它的失败信息最多这么多字节
_REDIRECT_TIMEOUT = 30.0
_FAILURE_MAX_BYTES = 4096


class _UserError(Exception):
    pass


def _user_identity(name: str) -> tuple[pwd.struct_passwd, list[int]]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise _UserError(f"Unix 用户 {name} 在本节点不存在") from exc
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise _UserError(f"服务不是以 root 运行，无法以用户 {name} 运行作业")
    return entry, os.getgrouplist(name, entry.pw_gid)


def _env_memfd(env: dict[str, str]) -> int:
    """把作业环境写进一个匿名内存文件（NUL 分隔），交给引导脚本从 fd 读：不经过它自己的环境。"""
    fd = os.memfd_create("conductor-env")
    body = b"".join(f"{k}={v}".encode("utf-8", "surrogateescape") + b"\0" for k, v in env.items())
    os.write(fd, body)  # memfd 一次写完，不会短写
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_failure(fd: int, timeout: float, limit: int = _FAILURE_MAX_BYTES) -> str | None:
    """读引导脚本的失败管道，直到 EOF：EOF 前什么都没写是成功（返回 ""），写了是失败原因。

    最多读 limit 字节、最多等 timeout 秒（到时仍未 EOF 返回 None）。其中的 NUL 由写库处转义
    （transitions 的说明文字清洗）。"""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while len(data) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            return None
        chunk = os.read(fd, limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _start_as_user(
    spec: JobSpec,
    entry: pwd.struct_passwd,
    groups: list[int],
    script: Path,
    env: dict[str, str],
    probe: Probe,
) -> tuple[subprocess.Popen[bytes], JobGroup]:
    """以 spec.run_as_user（uid、gid、initgroups 的附加组）启动作业。"""
    env = {
        **env,
        "HOME": entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": entry.pw_shell or "/bin/bash",
    }
    env_fd = _env_memfd(env)
    rfd, wfd = os.pipe()
    try:
        proc = spawn(
            [
                "/bin/bash",
                "--noprofile",
                "--norc",
                "-c",
                _LAUNCH_AS_USER,
                "launch",
                spec.work_dir,
                spec.stdout_path,
                spec.stderr_path,
                str(script),
                str(env_fd),
                "a" if spec.appends_output else "t",
                *spec.script_args,
            ],
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=wfd,
            env=_BOOTSTRAP_ENV,
            start_new_session=True,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=groups,
            pass_fds=(env_fd,),
            preexec_fn=probe.preexec(),
        )
    finally:
        os.close(wfd)
        os.close(env_fd)
    group = JobGroup(proc.pid)
    probe.started(proc.pid)
    try:
        failure = read_failure(rfd, _REDIRECT_TIMEOUT)
    finally:
        os.close(rfd)
    if failure is None:
        failure = f"引导脚本 {_REDIRECT_TIMEOUT:g} 秒内没有完成重定向（工作目录或输出文件打不开？）"
    if failure:
        kill_job_tree(spec.token, grace=0, group=group)
        proc.wait()
        group.close()
        raise _UserError(failure)
    return proc, group


@functools.cache
def _adopts_orphans() -> bool:
    """本进程是否已成为收养者（每个进程设置一次）。"""
    return become_subreaper()


def _may_have_leftovers() -> bool:
    """脚本退出后是否可能还有作业进程。本进程收养了作业的全部孤儿：
    没有存活的子进程就证明没有残留，省掉按标记扫描整个 /proc（每个作业最贵的一步）。"""
    if not _adopts_orphans():
        return True
    children = live_children()
    return children is None or bool(children)


def _reap_leftovers(timeout: float = 2.0) -> None:
    """回收刚被 SIGKILL 的残留进程。信号送达到进程变成僵尸之间有一小段时间：这时它已读不到环境
    （按标记扫描认为它没了），却还不是僵尸、回收不了。等到本进程没有存活的子进程为止（有上限）。"""
    deadline = time.monotonic() + timeout
    while live_children() and time.monotonic() < deadline:
        time.sleep(0.005)


def execute(
    spec: JobSpec,
    node_id: str = "",
    gpu_ids: Sequence[str | int] = (),
    steps: StepServer | None = None,
    service_url: str | None = None,
    signal_steps: Callable[[int], None] | None = None,
) -> ExecResult:
    """运行一个作业直到结束（不依赖 Ray，便于在任何进程里调用）。

    service_url 为 API 的地址（作业的 CONDUCTOR_URL）；signal_steps(信号) 把 --signal 的信号发给
    全部节点上作业步的任务（不带 B: 时，时限前由这里调用）。

    node_id 为真正执行它的 Ray 节点，作为 CONDUCTOR_NODE_ID 交给脚本；gpu_ids 为 Ray 分给
    这次执行的 GPU 编号，成为作业的 CUDA_VISIBLE_DEVICES 等变量。steps 为作业内的步服务
    （srun 连它）：脚本启动前开始监听，脚本结束后关闭，关闭时终止仍在运行的作业步。
    所在进程同一时刻只运行这一个作业（Ray worker 一次执行一个任务）：
    进程的子进程都属于它，脚本退出后残留的由这里清理并回收。
    """
    _adopts_orphans()
    script = script_path(spec)
    if cancel_marker(spec.token).exists():
        return ExecResult(returncode=None, error="作业在启动前已被取消")
    fds: list[int] = []
    env = {**build_env(spec, os.environ, gpu_ids, service_url), "CONDUCTOR_NODE_ID": node_id}
    # 作业在本节点的 cgroup（上限为它在本节点的内存）；建不了时采样测量、不限制
    meter = Meter.for_job(spec.job_id, spec.token, spec.memory_limit())
    batch = meter.probe("batch")
    if steps is not None:
        steps.meter = meter
    try:
        prepare_spool()
        if spec.run_as_user is not None:
            entry, groups = _user_identity(spec.run_as_user)
            _serve_steps(steps, env, (entry.pw_uid, entry.pw_gid, tuple(groups)))
            write_script(script, spec.script, entry)
            proc, group = _start_as_user(spec, entry, groups, script, env, batch)
        else:
            _serve_steps(steps, env, None)
            write_script(script, spec.script)
            proc = _start(spec, script, env, fds, batch)
            group = JobGroup(proc.pid)
            batch.started(proc.pid)
    except (OSError, subprocess.SubprocessError, _UserError) as exc:
        script.unlink(missing_ok=True)
        if steps is not None:
            steps.close()
        batch.finish(None)
        meter.close()
        return ExecResult(returncode=None, error=f"作业无法启动：{exc}")
    finally:
        for fd in fds:
            os.close(fd)
    touch_marker(started_marker(spec.token))
    try:
        timed_out = not _wait_with_signal(spec, proc, group, signal_steps)
        if timed_out:
            kill_job_tree(spec.token, grace=spec.kill_wait, group=group)
        # wait4 而不是 wait：脚本的 rusage 含它等待过的子孙的 CPU 时间（没有 cgroup 时用它）
        rusage = wait_rusage(proc)
        batch.stop_sampling()
        # 脚本已退出：清理它留在后台的子孙进程（含 setsid 逃出进程组的），再回收它们。
        # 首领已被回收、pid 可能复用：进程组经首领的 pidfd 指定，不会打中别人
        # 本节点上的作业步任务也是本进程的子进程，同样由这里杀掉；其他节点上的由步服务关闭时取消
        if _may_have_leftovers():
            kill_job_tree(spec.token, grace=0, group=group)
            _reap_leftovers()
        if steps is not None:
            steps.close()
        used = batch.finish(rusage)
        return ExecResult(returncode=proc.returncode, timed_out=timed_out, usage=used)
    finally:
        group.close()
        meter.close()
        # 启动标记留给代理删除：这里删了，代理恰在此刻检查期限时会误以为脚本从未启动
        script.unlink(missing_ok=True)


def _wait_with_signal(
    spec: JobSpec,
    proc: subprocess.Popen[bytes],
    group: JobGroup,
    signal_steps: Callable[[int], None] | None,
) -> bool:
    """等脚本结束，最多到时限；返回是否在时限内结束。

    --signal：到 时限 − signal_seconds 秒（不足 0 即立刻）时发信号，之后照常等到时限。B: 只发给批处理
    shell 本身（首领尚未被回收，pid 不会复用），不发给它的子进程与作业步；否则经 signal_steps 发给
    全部作业步的任务，不发给批处理 shell 与 srun。"""
    limit = spec.time_limit_seconds
    if spec.signal_number is None or limit is None:
        return group.wait_exit(limit)
    started = time.monotonic()
    lead = min(limit, max(0, limit - (spec.signal_seconds or 0)))
    if group.wait_exit(lead):
        return True
    if spec.signal_batch:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(spec.signal_number)
    elif signal_steps is not None:
        try:
            signal_steps(spec.signal_number)
        except Exception:  # noqa: BLE001 - 发不出信号不影响作业本身运行到时限
            log.exception("作业 %s：--signal 的信号发送失败", spec.job_id)
    return group.wait_exit(max(0.0, limit - (time.monotonic() - started)))


def _serve_steps(
    steps: StepServer | None,
    env: dict[str, str],
    identity: tuple[int, int, tuple[int, ...]] | None,
) -> None:
    """启动步服务，把它的套接字名与 srun 所在目录加进作业环境。"""
    if steps is None:
        return
    steps.start(identity)
    env.update(steps.env(env.get("PATH", "")))


def _start(
    spec: JobSpec, script: Path, env: dict[str, str], fds: list[int], probe: Probe
) -> subprocess.Popen[bytes]:
    """以服务自身的用户启动作业：执行器打开日志文件交给脚本。"""
    Path(spec.work_dir).mkdir(parents=True, exist_ok=True)
    append = spec.appends_output
    out_fd = _open_output(spec.stdout_path, append)
    fds.append(out_fd)
    err_fd = (
        out_fd if spec.stderr_path == spec.stdout_path else _open_output(spec.stderr_path, append)
    )
    if err_fd != out_fd:
        fds.append(err_fd)
    return spawn(
        ["/bin/bash", str(script), *spec.script_args],
        cwd=spec.work_dir,
        stdin=subprocess.DEVNULL,
        stdout=out_fd,
        stderr=err_fd,
        env=env,
        start_new_session=True,
        preexec_fn=probe.preexec(),
    )


@ray.remote(max_retries=0)
def run_job(
    spec: JobSpec, recorder: ray.actor.ActorHandle | None = None, namespace: str | None = None
) -> ExecResult:
    """Ray 任务入口。失败不重试：脚本的副作用未知，由用户决定是否重新提交。

    recorder 为本节点的代理：作业步的开始与结局经它写入数据库，--signal 的信号经它发给各节点上的
    作业步；namespace 为登记 API 地址的命名空间（cluster/service_url.py）。多节点作业运行在作业的放置组里
    （批处理节点为第 0 份），其他节点上的作业步任务放进各自的份额。
    返回之前在本节点留下结果文件（见 spool.result_file）。"""
    node_id = ray.get_runtime_context().get_node_id()
    gpu_ids = ray.get_gpu_ids()
    group = get_current_placement_group()
    remote = RayParts(group, spec.gpus, spec.kill_wait, spec) if group is not None else None

    def record(kind: str, *args: object) -> None:
        if recorder is not None:
            recorder.record_step.remote(spec.job_id, spec.token, kind, *args)

    def signal_steps(sig: int) -> None:
        if recorder is not None:
            ray.get(recorder.signal_job.remote(spec.job_id, sig, False, False), timeout=30)

    try:
        shim_dir = install_shim(prepare_spool())
    except OSError as exc:
        result = ExecResult(returncode=None, error=f"作业无法启动：无法放置 srun：{exc}")
    else:
        steps = StepServer(spec, node_id, gpu_ids, shim_dir, remote, record)
        result = execute(spec, node_id, gpu_ids, steps, service_url.lookup(namespace), signal_steps)
    leave_result(spec, result)
    return result
