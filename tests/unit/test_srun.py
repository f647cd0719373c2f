"""srun 客户端：真实子进程连到测试里的一个小服务（抽象套接字，说 steplink 协议）。"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conductor import steplink
from conductor.steps import StepRequest

ROOT = Path(__file__).resolve().parents[2]

# 服务的行为：收到 run 帧后按脚本回帧；script(send, frame, reader) 可继续读客户端的帧
Script = Callable[[Callable[[dict[str, Any]], None], dict[str, Any], Any], None]


class _Server:
    def __init__(self, script: Script) -> None:
        self.name = f"conductor-test-{secrets.token_hex(6)}"
        self.sock = steplink.listen(self.name)
        self.script = script
        self.received: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as reader:
            frame = steplink.recv(reader)
            assert frame is not None
            self.received.append(frame)

            def send(obj: dict[str, Any]) -> None:
                steplink.send(conn, obj)

            self.script(send, frame, reader)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], _Server]]:
    servers: list[_Server] = []

    def start(script: Script) -> _Server:
        server = _Server(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _srun(
    args: list[str], socket_name: str | None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != steplink.SOCKET_VAR}
    env["PYTHONPATH"] = str(ROOT)
    env["MY_VAR"] = "hello"
    if socket_name is not None:
        env[steplink.SOCKET_VAR] = socket_name
    return subprocess.run(
        [sys.executable, "-m", "conductor.srun", *args],
        env=env,
        capture_output=True,
        timeout=60,
        **kw,
    )


def _out(rank: int, stream: int, text: str) -> dict[str, Any]:
    return steplink.output_frame(rank, stream, text.encode())


def test_labels_streams_and_exit_code(serve: Callable[[Script], _Server]) -> None:
    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], _r: Any) -> None:
        send(steplink.step_frame(5, ntasks=12))
        send(steplink.warn_frame("srun: warning: 测试警告"))
        send(_out(0, 1, "a\nb"))  # 半行：等下一块
        send(_out(11, 1, "eleven\n"))
        send(_out(0, 1, "c\n"))
        send(_out(3, 2, "oops\n"))
        send(_out(2, 1, "tail-no-newline"))
        send(steplink.exit_frame([0] * 12, [None] * 12, 3))

    server = serve(script)
    result = _srun(["-l", "-n", "12", "--mpi=pmix", "echo", "hi"], server.name)
    assert result.returncode == 3
    assert result.stdout.decode() == " 0: a\n11: eleven\n 0: bc\n 2: tail-no-newline\n"
    err = result.stderr.decode()
    assert "srun: 警告：--mpi=pmix 不支持，已忽略\n" in err
    assert "srun: warning: 测试警告\n" in err
    assert " 3: oops\n" in err
    run = server.received[0]
    assert run["t"] == "run"
    req = StepRequest.from_dict(run["request"])
    assert req.ntasks == 12 and req.label and req.command == ("echo", "hi")
    assert run["cwd"] == os.getcwd()
    assert run["env"]["MY_VAR"] == "hello"
    assert steplink.SOCKET_VAR not in run["env"]


def test_without_label_output_is_passed_through(serve: Callable[[Script], _Server]) -> None:
    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], _r: Any) -> None:
        send(steplink.step_frame(0, ntasks=2))
        send(_out(0, 1, "par"))
        send(_out(1, 1, "tial\n"))
        send(steplink.output_frame(0, 2, b"\xff\x00bin"))
        send(steplink.exit_frame([0, 0], [None, None], 0))

    server = serve(script)
    result = _srun(["-n2", "cmd"], server.name)
    assert result.returncode == 0
    assert result.stdout == b"partial\n"
    assert result.stderr == b"\xff\x00bin"


def test_task_failure_messages_and_signal_status(serve: Callable[[Script], _Server]) -> None:
    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], _r: Any) -> None:
        send(steplink.exit_frame([0, 2, None], [None, None, 9], 137, hosts=["n1", "n1", "n2"]))

    result = _srun(["-n3", "cmd"], serve(script).name)
    assert result.returncode == 137
    assert result.stderr.decode().splitlines() == [
        "srun: error: n1: task 1: Exited with exit code 2",
        "srun: error: n2: task 2: Killed",
    ]


def test_export_none_sends_only_scheduler_vars(serve: Callable[[Script], _Server]) -> None:
    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], _r: Any) -> None:
        send(steplink.exit_frame([0], [None], 0))

    server = serve(script)
    result = _srun(["--export=NONE", "cmd"], server.name)
    assert result.returncode == 0
    env = server.received[0]["env"]
    assert "MY_VAR" not in env and "PATH" not in env
    assert all(k.startswith(("SLURM_", "CONDUCTOR_")) for k in env)


def test_error_frame(serve: Callable[[Script], _Server]) -> None:
    msg = "srun: error: Unable to create step for job 12: More processors requested than permitted"

    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], _r: Any) -> None:
        send(steplink.error_frame(msg, 1))

    result = _srun(["-n", "99", "cmd"], serve(script).name)
    assert result.returncode == 1
    assert result.stderr.decode() == msg + "\n"
    assert result.stdout == b""


def test_server_closing_without_exit_frame(serve: Callable[[Script], _Server]) -> None:
    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], _r: Any) -> None:
        send(_out(0, 1, "x\n"))

    result = _srun(["cmd"], serve(script).name)
    assert result.returncode == 1
    assert result.stdout == b"x\n"
    assert "srun: error: 作业步服务在作业步结束前断开了连接" in result.stderr.decode()


def test_sigint_sends_cancel_and_waits_for_exit(serve: Callable[[Script], _Server]) -> None:
    got_cancel = threading.Event()

    def script(send: Callable[[dict[str, Any]], None], frame: dict[str, Any], reader: Any) -> None:
        send(steplink.step_frame(1, ntasks=1))
        send(_out(0, 1, "running\n"))
        cancel = steplink.recv(reader)
        assert cancel == steplink.cancel_frame()
        got_cancel.set()
        send(_out(0, 1, "terminated\n"))
        send(steplink.exit_frame([None], [15], 143))

    server = serve(script)
    env = {k: v for k, v in os.environ.items() if k != steplink.SOCKET_VAR}
    env |= {"PYTHONPATH": str(ROOT), steplink.SOCKET_VAR: server.name}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conductor.srun", "sleep", "100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"running\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert got_cancel.is_set()
    assert proc.returncode == 143
    assert out == b"terminated\n"
    # 取消后被信号杀死的任务不报错（同 Slurm）
    assert err.decode() == "srun: 已取消作业步，正在终止任务\n"


def test_missing_socket_env() -> None:
    result = _srun(["hostname"], None)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "srun: error: 不在 Conductor 作业内（没有 CONDUCTOR_STEP_SOCKET），无法创建作业步\n"
    )


def test_nobody_listening() -> None:
    result = _srun(["hostname"], f"conductor-test-absent-{secrets.token_hex(6)}")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("srun: error: 无法连接本作业的作业步服务")


def test_argument_errors_and_help() -> None:
    result = _srun(["--foo", "x"], None)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "srun: unrecognized option '--foo'\nTry \"srun --help\" for more information\n"
    )
    result = _srun([], None)
    assert (result.returncode, result.stderr) == (1, b"srun: fatal: No command given to execute.\n")
    result = _srun(["--help"], None)
    assert result.returncode == 0
    assert "用法：srun" in result.stdout.decode()


def test_srun_imports_only_the_stdlib_and_its_peers() -> None:
    code = (
        "import sys, conductor.srun; "
        "bad = [m for m in ('ray', 'sqlalchemy', 'sqlmodel', 'httpx', 'pydantic', 'fastapi') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_steplink_round_trip() -> None:
    a, b = socket.socketpair()
    with a, b, b.makefile("rb") as reader:
        steplink.send(a, steplink.output_frame(3, 2, b"\x00\xffdata"))
        steplink.send(a, steplink.exit_frame([0], [None], 0))
        a.shutdown(socket.SHUT_WR)
        frame = steplink.recv(reader)
        assert frame is not None
        assert steplink.output_data(frame) == (3, 2, b"\x00\xffdata")
        frame = steplink.recv(reader)
        assert frame is not None and steplink.frame_status(frame) == 0
        assert steplink.recv(reader) is None


def test_steplink_rejects_garbage() -> None:
    a, b = socket.socketpair()
    with a, b, b.makefile("rb") as reader:
        a.sendall(b'not json\n[1]\n{"t": "o"}\npartial')
        a.shutdown(socket.SHUT_WR)
        for _ in range(2):
            with pytest.raises(steplink.LinkError):
                steplink.recv(reader)
        frame = steplink.recv(reader)
        assert frame is not None
        with pytest.raises(steplink.LinkError):
            steplink.output_data(frame)
        with pytest.raises(steplink.LinkError):
            steplink.recv(reader)
