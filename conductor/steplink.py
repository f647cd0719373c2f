"""srun 与作业内步服务之间的线路格式：流套接字上的 JSON 行，一行一帧，字节以 base64 放在字段 d。

客户端 → 服务：run（创建作业步）、cancel（取消）。
服务 → 客户端：step（步号）、o（某任务的一块输出）、warn、exit（各任务结局与 srun 退出码）、error。
帧的构造与解析都在这里，两端共用；只用标准库，srun 启动时导入它不拖慢启动。
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Mapping, Sequence
from typing import IO, Any

# 单帧上限：防止坏对端发来没有换行的无穷数据耗尽内存
MAX_FRAME = 16 * 1024 * 1024
# 作业步套接字名所在的环境变量（Linux 抽象套接字，连接时前面加 \0）
SOCKET_VAR = "CONDUCTOR_STEP_SOCKET"


class LinkError(Exception):
    """对端发来的帧无法解析。"""


def send(sock: socket.socket, obj: Mapping[str, Any]) -> None:
    """发送一帧（整行一次 sendall：多个线程各发整帧时不会交错，调用者仍应自行加锁）。"""
    sock.sendall(encode(obj))


def encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def recv(file: IO[bytes]) -> dict[str, Any] | None:
    """读一帧；EOF 时返回 None。file 为 sock.makefile("rb")。"""
    line = file.readline(MAX_FRAME + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > MAX_FRAME:
            raise LinkError(f"帧超过 {MAX_FRAME} 字节")
        raise LinkError("连接在一帧的中途断开")
    try:
        frame = json.loads(line)
    except ValueError as exc:
        raise LinkError(f"帧不是合法的 JSON：{exc}") from exc
    if not isinstance(frame, dict) or not isinstance(frame.get("t"), str):
        raise LinkError("帧缺少类型字段 t")
    return frame


def connect(name: str, timeout: float | None = None) -> socket.socket:
    """连接名为 name 的抽象 Unix 套接字。"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect("\0" + name)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def listen(name: str, backlog: int = 16) -> socket.socket:
    """在抽象 Unix 套接字 name 上监听（不落盘，进程退出即消失）。"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------- 帧的构造


def run_frame(request: Mapping[str, Any], cwd: str, env: Mapping[str, str]) -> dict[str, Any]:
    """request 为 dataclasses.asdict(StepRequest)。"""
    return {"t": "run", "request": dict(request), "cwd": cwd, "env": dict(env)}


def cancel_frame() -> dict[str, Any]:
    return {"t": "cancel"}


def step_frame(step_id: int, ntasks: int | None = None) -> dict[str, Any]:
    """ntasks 为作业步的任务数：srun -l 按它决定序号的对齐宽度（同 Slurm）。"""
    frame: dict[str, Any] = {"t": "step", "step_id": step_id}
    if ntasks is not None:
        frame["ntasks"] = ntasks
    return frame


def output_frame(rank: int, stream: int, data: bytes) -> dict[str, Any]:
    """stream：1 为 stdout，2 为 stderr。"""
    return {"t": "o", "r": rank, "s": stream, "d": base64.b64encode(data).decode("ascii")}


def warn_frame(msg: str) -> dict[str, Any]:
    return {"t": "warn", "msg": msg}


def exit_frame(
    codes: Sequence[int | None],
    signals: Sequence[int | None],
    status: int,
    hosts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """codes/signals 按 rank 排列；status 为 srun 的退出码（steps.exit_status）。

    hosts（可选，按 rank 排列的节点名）给出时，srun 像 Slurm 一样报告非零退出的任务。"""
    frame: dict[str, Any] = {
        "t": "exit",
        "codes": list(codes),
        "signals": list(signals),
        "status": status,
    }
    if hosts is not None:
        frame["hosts"] = list(hosts)
    return frame


def error_frame(msg: str, status: int = 1) -> dict[str, Any]:
    return {"t": "error", "msg": msg, "status": status}


# ---------------------------------------------------------------- 帧的解析


def output_data(frame: Mapping[str, Any]) -> tuple[int, int, bytes]:
    """o 帧 →（rank, stream, 数据）。"""
    try:
        rank, stream = int(frame["r"]), int(frame["s"])
        data = base64.b64decode(frame["d"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise LinkError(f"输出帧无效：{exc}") from exc
    if stream not in (1, 2):
        raise LinkError(f"输出帧的流 {stream} 无效（应为 1 或 2）")
    return rank, stream, data


def frame_status(frame: Mapping[str, Any]) -> int:
    """exit/error 帧的退出码（0..255）。"""
    try:
        status = int(frame.get("status", 1))
    except (TypeError, ValueError) as exc:
        raise LinkError(f"退出码无效：{frame.get('status')!r}") from exc
    return status & 0xFF
