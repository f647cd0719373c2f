"""`conductor serve` 在一台新机器上第一次启动，以及启动不起来时的表现。

新机器：空的 HOME（没有 ~/.ray、~/.config），环境里没有任何 Ray 令牌设置——serve 自己准备令牌，
之后连接集群的管理命令（doctor、token）用同样的 --data-dir 就能找到服务。
启动不起来（端口被占、数据目录坏了）：试几次后以一行中文错误（原因与日志文件）和非零退出码停止，
不无限重启。
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conductor.startup import EXIT_STARTUP_FAILED
from harness.serve import CONDUCTOR, ServeProcess
from harness.waiting import wait_for


def _admin(serve: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """在服务的 HOME 里运行管理命令（同一用户的另一个终端）。"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "RAY_AUTH"))}
    env |= {"HOME": str(serve.home), "CONDUCTOR_RAY_PORT": str(serve.ray_port)}
    return subprocess.run([CONDUCTOR, *args], capture_output=True, text=True, timeout=120, env=env)


def test_first_start_on_fresh_machine_provides_ray_token(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "1")
    try:
        serve.wait_healthy()
        token = serve.home / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert len(token.read_text()) == 64
        assert f"Ray 令牌：{token}（权限 0600）" in serve.log_path.read_text()

        data = str(serve.data_dir)
        doctor = _admin(serve, "doctor", "--data-dir", data)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "Ray 集群可达" in doctor.stdout
        created = _admin(serve, "token", "create", "--data-dir", data, "--account", "a")
        assert created.returncode == 0, created.stderr
        listed = _admin(serve, "token", "list", "--data-dir", data)
        assert listed.returncode == 0 and created.stdout.strip()[:12] in listed.stdout
        revoked = _admin(serve, "token", "revoke", "1", "--data-dir", data)
        assert revoked.returncode == 0, revoked.stderr
        # 网页的一次性登录地址（serve 启动时打印的那个过期之后）
        url = _admin(serve, "token", "login-url", "--data-dir", data, "--url", serve.url)
        assert url.returncode == 0, url.stderr
        assert url.stdout.startswith(serve.url + "/ui#login=cdl_"), url.stdout
        code = url.stdout.strip().split("#login=", 1)[1]
        assert httpx.post(serve.url + "/auth/login", json={"code": code}).status_code == 200
        assert serve.stop() == 0, serve.log_tail()
    finally:
        serve.cleanup()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """一个被别的进程占着的端口。"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _failed_start(serve: ServeProcess) -> str:
    """serve 必须自己停下：非零退出码，最后一行是中文错误，不留下任何进程。返回全部输出。"""
    try:
        wait_for(
            serve.exited, 240, interval=0.2, what=lambda: f"serve 自行停止\n{serve.log_tail()}"
        )
        code = serve.proc.wait()
        wait_for(lambda: not serve.alive_seen(), 15, what=lambda: f"残留进程 {serve.alive_seen()}")
    finally:
        serve.cleanup()
    output = serve.log_path.read_text()
    assert code == EXIT_STARTUP_FAILED, output[-3000:]
    return output


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_api_port_taken_stops_serve_with_cause(tmp_path: Path, taken_port: int) -> None:
    serve = ServeProcess(tmp_path, tmp_path / "data", "--num-cpus", "1", port=taken_port)
    output = _failed_start(serve)
    last = _last_line(output)
    assert last.startswith("错误：API 进程无法启动：无法监听 127.0.0.1:"), last
    assert "Address already in use" in last
    assert str(serve.data_dir / "logs" / "api.log") in last
    assert "API 进程第 3 次启动失败" in output and "第 4 次" not in output


def test_ray_cannot_start_stops_serve_with_cause(tmp_path: Path) -> None:
    # Ray 的临时目录指向一个普通文件之下：ray start 每次都立刻失败（端口被占也会失败，但每次要等约 40 秒）
    (tmp_path / "not-a-dir").write_text("")
    serve = ServeProcess(
        tmp_path,
        tmp_path / "data",
        "--num-cpus",
        "1",
        env={"RAY_TMPDIR": str(tmp_path / "not-a-dir" / "ray")},
    )
    output = _failed_start(serve)
    last = _last_line(output)
    assert last.startswith("错误：本地 Ray 无法启动：ray start 退出（代码 1）："), last
    assert "NotADirectoryError" in last
    assert str(serve.data_dir / "logs" / "ray-head.log") in last
    assert "本地 Ray 第 3 次启动失败" in output and "API 进程" not in output


def test_postgres_cannot_start_stops_serve_with_cause(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "pg").write_text("不是目录")  # 数据目录被别的东西占了
    serve = ServeProcess(tmp_path, data, "--num-cpus", "1")
    output = _failed_start(serve)
    last = _last_line(output)
    assert last.startswith("错误：内嵌 PostgreSQL 无法启动："), last
    assert str(data / "pg" / "log") in last


def test_second_serve_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """同一个数据目录同时只能有一个 serve：第二个若照常启动，会连上第一个的内嵌 PostgreSQL，
    第一个停止时把它一起停掉，第二个的调度器从此连不上数据库。"""
    data = tmp_path / "data"
    first = ServeProcess(tmp_path, data, "--num-cpus", "1")
    try:
        first.wait_healthy()
        second = ServeProcess(tmp_path, data, "--num-cpus", "1")
        last = _last_line(_failed_start(second))
        assert last.startswith(f"错误：数据目录 {data} 正被另一个 conductor serve 使用"), last
        assert f"pid {first.proc.pid}" in last
        assert first.healthy()  # 第一个不受影响
    finally:
        first.cleanup()
