"""节点本地的临时目录（spool）：作业脚本的副本、取消/启动标记与结果文件的位置和读写。

执行器与节点代理都按令牌在这里找文件：执行器写脚本、放启动标记、留下结果；代理放取消标记、
上任时补记前任留下的结果。以服务用户运行的作业也能写这个目录，这里的读写都不信任已有的文件。
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pwd
import stat
import tempfile
from pathlib import Path

from conductor.exec_result import ExecResult
from conductor.fileopen import open_regular
from conductor.jobspec import JobSpec
from conductor.usage import Usage


def spool_location(euid: int, home: str, runtime_dir: str | None) -> Path:
    """按服务用户选临时目录：一个只有服务用户（或 root）能在其中建目录的位置。

    放在共享的 /tmp 下，别的本地用户抢先建一个同名目录，就能让本节点的作业全部无法启动。
    root 用 /run（只有 root 可写）；其他用户用自己的 XDG_RUNTIME_DIR，没有就用 ~/.cache。"""
    if euid == 0:
        return Path("/run/conductor-spool")
    if runtime_dir:
        return Path(runtime_dir) / "conductor-spool"
    return Path(home) / ".cache" / "conductor" / "spool"


@functools.cache
def spool_dir() -> Path:
    """节点本地的临时目录：脚本文件、取消/启动标记与结果文件放在这里（每个进程算一次）。"""
    return spool_location(os.geteuid(), os.path.expanduser("~"), os.environ.get("XDG_RUNTIME_DIR"))


# root 的临时目录允许别人穿过（不能列出、不能新建）：映射到的用户要按路径打开自己那份 0600 脚本
def _spool_mode() -> int:
    return 0o711 if os.geteuid() == 0 else 0o700


def prepare_spool(spool: Path | None = None) -> Path:
    """建立（或核对）临时目录：必须是归本服务用户所有的目录，权限收紧为 _spool_mode()。"""
    spool = spool or spool_dir()
    spool.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        spool.mkdir(mode=0o700)
    st = os.lstat(spool)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise OSError(f"临时目录 {spool} 不属于服务用户，拒绝使用")
    if stat.S_IMODE(st.st_mode) != _spool_mode():
        os.chmod(spool, _spool_mode())
    return spool


def script_path(spec: JobSpec) -> Path:
    """作业脚本在临时目录里的副本（执行器写入，结束时删除）。"""
    return spool_dir() / f"job-{spec.job_id}-{spec.token[:8]}.sh"


def cancel_marker(token: str) -> Path:
    """取消标记：代理在取消时创建；任务若此后才开始执行，就不再启动脚本。"""
    return spool_dir() / f"cancel-{token}"


def started_marker(token: str) -> Path:
    """启动标记：脚本已启动（时限已开始计时）。代理据此区分“卡在启动前”与“运行超时”。"""
    return spool_dir() / f"started-{token}"


def result_file(token: str) -> Path:
    """执行结果文件：执行器返回前写下，代理把结局写入数据库后删除。

    代理在两者之间死亡时（Ray 随之杀掉执行器，但已经结束的脚本留下了结果），新代理上任时据此
    以真实的退出码补记结局，而不是让对账记成“代理已退出”的 FAILED。"""
    return spool_dir() / f"result-{token}.json"


# 结果文件的大小上限：文件在作业（以服务用户运行时）可写的目录里，读它不能读进任意多的数据
RESULT_MAX_BYTES = 64 * 1024


def leave_result(spec: JobSpec, result: ExecResult) -> None:
    """原子地写下结果文件（先写临时文件再改名）：读到的要么没有，要么完整。失败只放弃这份兜底。"""
    body = json.dumps(
        {
            "job_id": spec.job_id,
            "token": spec.token,
            "time_limit_seconds": spec.time_limit_seconds,
            **dataclasses.asdict(result),
        }
    ).encode()
    try:
        fd, tmp = tempfile.mkstemp(dir=spool_dir(), prefix=".result-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            os.replace(tmp, result_file(spec.token))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def read_result(path: Path) -> tuple[int, str, int | None, ExecResult] | None:
    """读一个结果文件：(作业 id, 令牌, 时限秒数, 结果)；不是普通文件、过大或内容不对时为 None。"""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            raw = f.read(RESULT_MAX_BYTES + 1)
        if len(raw) > RESULT_MAX_BYTES:
            return None
        data = json.loads(raw)
        job_id, token, limit = data["job_id"], data["token"], data["time_limit_seconds"]
        result = ExecResult(
            data["returncode"],
            bool(data["timed_out"]),
            data["error"],
            Usage.from_dict(data.get("usage")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fields_ok = (
        isinstance(job_id, int)
        and isinstance(token, str)
        and (limit is None or isinstance(limit, int))
        and (result.returncode is None or isinstance(result.returncode, int))
        and (result.error is None or isinstance(result.error, str))
    )
    return (job_id, token, limit, result) if fields_ok else None


def leftover_results() -> list[tuple[int, str, int | None, ExecResult]]:
    """临时目录里的全部结果文件（读不出的跳过）。"""
    found = []
    for path in spool_dir().glob("result-*.json"):
        left = read_result(path)
        if left is not None and path.name == f"result-{left[1]}.json":
            found.append(left)
    return found


def touch_marker(path: Path) -> bool:
    """建立一个空的标记文件，不跟随符号链接、不阻塞：以服务用户运行的作业能在临时目录里
    抢先放一个同名的 FIFO 或符号链接，普通的 touch 会被 FIFO 挂住。返回是否成功。"""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o600)
    except OSError:
        return False
    os.close(fd)
    return True


def write_script(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    """写作业脚本：新建（O_EXCL，不跟随符号链接）、一开始就是 0600，需要时先改属主再写内容。

    同名的旧文件（上次执行中途死亡留下的，或以服务用户运行的作业放的符号链接）先删掉再新建。"""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        path.unlink()
        fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        if owner is not None:
            os.fchown(f.fileno(), owner.pw_uid, owner.pw_gid)
        f.write(text.encode("utf-8", "surrogateescape"))
