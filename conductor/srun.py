"""srun 命令：在 Conductor 批处理作业内创建作业步，把各任务的输出转到本进程的 stdout/stderr。

作业环境里的 CONDUCTOR_STEP_SOCKET 给出作业内步服务的抽象套接字名；本命令只是客户端，
布局与启动都由服务完成。为了启动快，只导入标准库与 conductor.steps/steplink。
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import IO, Any

from conductor import steplink
from conductor.steps import (
    HelpRequested,
    StepError,
    export_env,
    label_width,
    parse_srun_args,
    task_exit_messages,
    with_open_mode,
)

USAGE = """\
用法：srun [选项...] 命令 [参数...]

在当前 Conductor 作业的分配内启动一个作业步（N 个任务）。

  -n, --ntasks=N            任务数（默认：作业的任务数）
  -N, --nodes=N[-M]         节点数（取最小值）
      --ntasks-per-node=N   每节点任务数
  -c, --cpus-per-task=N     每任务 CPU 数（默认：作业的）
      --gpus-per-task=[类型:]N  每任务 GPU 数
  -l, --label               每行输出前加任务序号
  -o, --output=模式         stdout 写入文件（%j %J %s %t %n %N %A %a %%；none 为丢弃）
  -e, --error=模式          stderr 写入文件
  -u, --unbuffered          不缓冲输出
  -K, --kill-on-bad-exit[=0|1]  有任务非零退出时终止其余任务
  -D, --chdir=目录          任务的工作目录
      --export=ALL|NONE|变量[,变量=值...]  传给任务的环境变量
  -J, --job-name=名称       作业步名称
  -h, --help                显示本帮助

其余 Slurm 选项（--mpi、--cpu-bind、--mem 等）会被接受并提示已忽略。
"""


def _err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


class _Output:
    """把任务输出写到 stdout/stderr；-l 时按任务、按流缓冲到整行再加 “序号: ” 前缀。"""

    def __init__(self, label: bool) -> None:
        self.label = label
        self.width = 1
        self.partial: dict[tuple[int, int], bytes] = {}
        self.broken = False

    def _stream(self, stream: int) -> IO[bytes]:
        return sys.stdout.buffer if stream == 1 else sys.stderr.buffer

    def write(self, rank: int, stream: int, data: bytes) -> None:
        if self.broken:
            return
        if self.label:
            buf = self.partial.pop((rank, stream), b"") + data
            *lines, rest = buf.split(b"\n")
            if rest:
                self.partial[(rank, stream)] = rest
            if not lines:
                return
            prefix = f"{rank:>{self.width}}: ".encode()
            data = b"".join(prefix + line + b"\n" for line in lines)
        self._emit(stream, data)

    def _emit(self, stream: int, data: bytes) -> None:
        if self.broken:
            return
        out = self._stream(stream)
        try:
            out.write(data)
            out.flush()
        except BrokenPipeError:
            self.broken = True

    def finish(self) -> None:
        """结束时写出没有换行的半行（-l 时同 Slurm 补一个换行）。"""
        partial, self.partial = self.partial, {}
        for (rank, stream), rest in sorted(partial.items()):
            self._emit(stream, f"{rank:>{self.width}}: ".encode() + rest + b"\n")


class _Canceller:
    """SIGINT/SIGTERM：第一次发取消帧并继续等结局；第二次 SIGINT 直接断开连接。"""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.sent = False
        self.aborted = False

    def cancel(self) -> None:
        with self.lock:
            if self.sent:
                return
            self.sent = True
        _err("srun: 已取消作业步，正在终止任务")
        with contextlib.suppress(OSError):
            steplink.send(self.sock, steplink.cancel_frame())

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.sent:
            self.aborted = True
            _err("srun: 强制终止：断开与作业步的连接")
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            return
        self.cancel()


def _environment(export: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    env = export_env(export, environ)
    env.pop(steplink.SOCKET_VAR, None)  # 服务自己给任务设置，不必回传
    return env


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        req = with_open_mode(parse_srun_args(args), os.environ)
    except HelpRequested:
        sys.stdout.write(USAGE)
        return 0
    except StepError as exc:
        _err(exc.message)
        return exc.exit_code
    for warning in req.warnings:
        _err(warning)
    name = os.environ.get(steplink.SOCKET_VAR)
    if not name:
        _err("srun: error: 不在 Conductor 作业内（没有 CONDUCTOR_STEP_SOCKET），无法创建作业步")
        return 1
    try:
        sock = steplink.connect(name, timeout=10.0)
    except OSError as exc:
        _err(f"srun: error: 无法连接本作业的作业步服务（{name}）：{exc.strerror or exc}")
        return 1
    with sock:
        return _run(sock, req.to_dict(), req.label)


def _run(sock: socket.socket, request: dict[str, Any], label: bool) -> int:
    canceller = _Canceller(sock)
    previous = {
        sig: signal.signal(sig, canceller.handle) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    output = _Output(label)
    try:
        steplink.send(
            sock,
            steplink.run_frame(request, os.getcwd(), _environment(request["export"], os.environ)),
        )
        with sock.makefile("rb") as reader:
            return _read_frames(reader, output, canceller)
    except steplink.LinkError as exc:
        _err(f"srun: error: 与作业步服务的通信出错：{exc}")
        return 1
    except OSError as exc:
        if canceller.aborted:
            return 1
        _err(f"srun: error: 与作业步服务的连接出错：{exc.strerror or exc}")
        return 1
    finally:
        output.finish()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _read_frames(reader: IO[bytes], output: _Output, canceller: _Canceller) -> int:
    while True:
        frame = steplink.recv(reader)
        if frame is None:
            if not canceller.aborted:
                _err("srun: error: 作业步服务在作业步结束前断开了连接")
            return 1
        kind = frame["t"]
        if kind == "o":
            rank, stream, data = steplink.output_data(frame)
            output.write(rank, stream, data)
            if output.broken:
                canceller.cancel()  # 同 Slurm 的 SIGPIPE：读端没了就结束作业步
        elif kind == "step":
            if isinstance(frame.get("ntasks"), int):
                output.width = label_width(frame["ntasks"])
        elif kind == "warn":
            _err(str(frame.get("msg", "")))
        elif kind == "exit":
            output.finish()
            hosts = frame.get("hosts")
            if isinstance(hosts, list):
                for line in task_exit_messages(
                    frame.get("codes", []), frame.get("signals", []), hosts, canceller.sent
                ):
                    _err(line)
            return steplink.frame_status(frame)
        elif kind == "error":
            output.finish()
            _err(str(frame.get("msg", "")))
            return steplink.frame_status(frame)
        # 不认识的帧类型：新版本服务的扩展，忽略


if __name__ == "__main__":
    sys.exit(main())
