"""在一台机器上真实运行 ray-cluster.yaml 里的头节点与工作节点启动命令的测试工具。

- start_commands：从 YAML 读出命令，只做三处替换（见函数说明），其余原样交给 bash。
- tcp_postgres：一个监听 TCP 的真实 PostgreSQL（工作节点上的代理经网络写作业结局）。
- Node：一个“节点”，在 node_launcher.py 之下执行命令，停止时按进程树结束它启动的一切。
- veth_netns：网络命名空间 + veth 对，模拟第二台机器与两机之间的真实网络链路。
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import yaml
from sqlalchemy import create_engine, text

from conductor.db import normalize_url
from conductor.embedded_pg import EmbeddedPostgres
from harness.serve import free_port
from harness.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("node_launcher.py")
VENV_IN_YAML = "~/conductor-venv/bin/"
# ray up 在头节点上写好这份配置，头节点的自动扩缩器据此经 SSH 拉起工作节点；测试里没有 ray up 与 SSH
AUTOSCALER_FLAG = " --autoscaling-config=~/ray_bootstrap_config.yaml"


def start_commands(kind: str, config: str = "ray-cluster.yaml") -> list[str]:
    """ray-cluster.yaml 中 `kind`（head/worker）的启动命令，换成本机可运行的形式。

    只做三处替换：虚拟环境换成当前测试所用的（~/conductor-venv → sys.executable 所在目录）；
    跳过 `ray stop`（它会停掉本机上所有 Ray 集群，包括并行运行的其他测试）；
    去掉 --autoscaling-config（那份文件由 ray up 生成）。端口、目录、地址经 YAML 中的变量给出。
    """
    commands = yaml.safe_load((ROOT / config).read_text())[f"{kind}_start_ray_commands"]
    venv_bin = str(Path(sys.executable).parent) + "/"
    out = []
    for command in commands:
        if command.strip() == VENV_IN_YAML + "ray stop":
            continue
        if kind == "head" and "ray start --head" in command:
            assert AUTOSCALER_FLAG in command, command
            command = command.replace(AUTOSCALER_FLAG, "")
        out.append(command.replace(VENV_IN_YAML, venv_bin))
    assert all("~/conductor-venv" not in c for c in out), out
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """不带测试进程自己的 Conductor/Ray 设置的环境。"""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONDUCTOR_", "CLUSTER_", "RAY_ADDRESS", "RAY_TMPDIR"))
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def tcp_postgres(listen: list[str], clients: list[str]) -> Iterator[str]:
    """一个监听 listen 中各地址的真实 PostgreSQL，只接受来自 clients（IP）的口令认证连接；
    返回第一个地址上的连接串。

    先用内嵌 PostgreSQL（pgserver）初始化数据目录并建好用户与库，再用同一套二进制文件
    以 TCP 重新启动它；pgserver 自己只开 Unix 套接字。
    """
    root = Path(tempfile.mkdtemp(prefix="conductor-tcp-pg-"))
    pgdata = root / "pg"
    embedded = EmbeddedPostgres(root)
    server = embedded._server
    pg_ctl = [str(server.bin_path / "pg_ctl"), "-D", str(pgdata)]
    started = False
    try:
        password = secrets.token_hex(12)
        admin = create_engine(normalize_url(embedded.url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE conductor LOGIN PASSWORD '{password}'"))
            conn.execute(text("CREATE DATABASE conductor OWNER conductor"))
        admin.dispose()
        embedded.stop()
        hba = ["local all all trust"] + [f"host all all {ip}/32 scram-sha-256" for ip in clients]
        (pgdata / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        port = free_port()
        options = f"-h {','.join(listen)} -p {port} -k {pgdata}"
        log = pgdata / "tcp.log"
        done = subprocess.run(
            [*pg_ctl, "-w", "-l", str(log), "-o", options, "start"],
            capture_output=True,
            text=True,
            timeout=60,
            user=server.system_user,
        )
        started = True  # 即使报错也可能已在运行：结束时总是 stop
        assert done.returncode == 0, f"PostgreSQL 启动失败：{done.stderr}\n{log.read_text()}"
        yield f"postgresql://conductor:{password}@{listen[0]}:{port}/conductor"
    finally:
        if started:
            subprocess.run(
                [*pg_ctl, "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                user=server.system_user,
            )
        else:
            embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


class Node:
    """一个“节点”：在 node_launcher.py 之下依次执行 commands；stop() 结束它的全部后代进程。

    prefix 放在启动器前面，例如 ["ip", "netns", "exec", 名字] 让整个节点运行在另一个网络命名空间里。
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        commands: list[str],
        env: dict[str, str],
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.status_path = workdir / f"{name}.status"
        self.log_path = workdir / f"{name}.log"
        self.proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                str(LAUNCHER),
                str(self.status_path),
                str(self.log_path),
                *commands,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.seen: dict[int, psutil.Process] = {}

    def survivors(self) -> list[psutil.Process]:
        """stop() 结束过的进程中仍然活着的（psutil.Process 带创建时间，PID 复用不会误认）。"""
        alive = []
        for p in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        return alive

    def log_tail(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def wait_started(self, timeout: float = 120) -> None:
        """等全部命令执行完；某条命令失败时带着日志报错。"""
        status = wait_for(
            lambda: self.status_path.exists() and self.status_path.read_text(),
            timeout,
            interval=0.2,
            what=lambda: f"{self.name} 的启动命令执行完\n{self.log_tail()}",
        )
        assert status == "ok", f"{self.name}：{status}\n{self.log_tail()}"

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """SIGTERM 全部后代，5 秒后 SIGKILL 仍活着的；重复到没有后代为止，再结束启动器。"""
        for _ in range(5):
            procs = self.descendants()
            self.seen.update((p.pid, p) for p in procs)
            if not procs:
                break
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.terminate()
            _, alive = psutil.wait_procs(procs, timeout=5)
            for p in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(alive, timeout=5)
        self.proc.kill()
        self.proc.wait()


def wait_http(url: str, timeout: float, node: Node) -> None:
    def up() -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout, interval=0.5, what=lambda: f"{url} 可用\n{node.log_tail()}")


@dataclass(frozen=True)
class Link:
    """两个网络命名空间之间的一条 veth 链路：头节点一侧在本命名空间，工作节点一侧在 netns 中。"""

    netns: str
    head_ip: str
    worker_ip: str
    netns_inode: int


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str | None:
    """不能创建网络命名空间时返回原因。"""
    if os.geteuid() != 0:
        return "创建网络命名空间需要 root（当前 euid 不是 0）"
    if shutil.which("ip") is None:
        return "没有 ip 命令（iproute2）"
    return None


@contextlib.contextmanager
def veth_netns() -> Iterator[Link]:
    """新建一个网络命名空间与一对 veth（名字唯一，可并行），结束时无论成败都删除。

    创建失败时抛出 RuntimeError，消息写明哪一步、内核怎么说。
    """
    tag = uuid.uuid4().hex[:6]
    netns, host_if, peer_if = f"conductor-{tag}", f"cv{tag}h", f"cv{tag}w"
    # 10.213.0.0/16 中随机的 /30：并行运行的测试各用各的
    n = int(tag, 16) % 16384
    base = f"10.213.{n // 64}.{(n % 64) * 4}"
    prefix = base.rsplit(".", 1)[0]
    last = int(base.rsplit(".", 1)[1])
    head_ip, worker_ip = f"{prefix}.{last + 1}", f"{prefix}.{last + 2}"
    try:
        steps = [
            ("netns", "add", netns),
            ("link", "add", host_if, "type", "veth", "peer", "name", peer_if),
            ("link", "set", peer_if, "netns", netns),
            ("addr", "add", f"{head_ip}/30", "dev", host_if),
            ("link", "set", host_if, "up"),
            ("-n", netns, "addr", "add", f"{worker_ip}/30", "dev", peer_if),
            ("-n", netns, "link", "set", peer_if, "up"),
            ("-n", netns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise RuntimeError(f"`ip {' '.join(step)}` 失败：{done.stderr.strip()}")
        inode = os.stat(f"/run/netns/{netns}").st_ino
        yield Link(netns, head_ip, worker_ip, inode)
    finally:
        _kill_netns_processes(netns)
        _ip("netns", "del", netns)
        _ip("link", "del", host_if)


def _kill_netns_processes(netns: str) -> None:
    """兜底：结束仍在该命名空间里的进程（正常情况下 Node.stop 已结束它们）。"""
    for _ in range(3):
        listed = _ip("netns", "pids", netns)
        pids = [int(p) for p in listed.stdout.split()] if listed.returncode == 0 else []
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.5)
