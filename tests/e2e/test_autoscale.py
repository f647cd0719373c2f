"""端到端：Ray 真实的自动扩缩容器（v1，StandardAutoscaler）配上 Ray 自己的假多节点提供者
（`ray.autoscaler._private.fake_multi_node`，Ray 的自动扩缩容测试用的同一个），在本机起节点。

头节点 0 个 CPU：作业只能跑在自动扩缩容器按 Conductor 的请求起来的节点上。`conductor serve` 连接这个集群
（--ray-address），并按同一份集群配置判断作业能否运行（CONDUCTOR_AUTOSCALER_CONFIG）。
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from ray._private.services import get_node_ip_address

from harness.serve import ServeProcess, free_port
from harness.waiting import wait_for

RAY = str(Path(sys.executable).with_name("ray"))
# 空闲 6 秒即缩容（Ray 自己的测试配置也是 0.1 分钟）
IDLE_MINUTES = 0.1


def _config(gcs: str) -> dict:
    # 假提供者的节点是本机真实的 raylet：内存取本机的，不能写进 resources（Ray 拒绝）
    types = {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        "cpu": {
            "resources": {"CPU": 1, "partition:batch": 1},
            "node_config": {},
            "min_workers": 0,
            "max_workers": 2,
        },
        "gpu": {
            "resources": {"CPU": 1, "GPU": 1, "partition:gpu": 1},
            "node_config": {},
            "min_workers": 0,
            "max_workers": 1,
        },
    }
    return {
        "cluster_name": "conductor-autoscale-test",
        "max_workers": 3,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs,
        },
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_MINUTES,
        "docker": {},
        **dict.fromkeys(
            (
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
                "cluster_synced_files",
                "rsync_exclude",
                "rsync_filter",
            ),
            [],
        ),
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


class AutoscalingHead:
    """`ray start --head --block --autoscaling-config …`；假节点是自动扩缩容进程的子进程，按记下的 PID 清理。"""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.address = f"{get_node_ip_address()}:{self.port}"
        self.config = tmp / "cluster.yaml"
        self.config.write_text(yaml.safe_dump(_config(self.address)))
        env = dict(os.environ)
        env.update(
            RAY_FAKE_CLUSTER="1",
            AUTOSCALER_UPDATE_INTERVAL_S="1",
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        )
        self.log = (tmp / "ray-head.log").open("w")
        self.proc = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--block",
                f"--port={self.port}",
                "--num-cpus=0",
                "--num-gpus=0",
                f"--dashboard-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--autoscaling-config={self.config}",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: dict[int, psutil.Process] = {}

    def note(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]

    def stop(self) -> None:
        self.note()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for p in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running():
                    p.kill()
        self.log.close()


class Cluster:
    def __init__(self, head: AutoscalingHead, serve: ServeProcess) -> None:
        self.head, self.serve = head, serve

    def submit(self, script: str, work: Path, *args: str) -> str:
        path = work / f"job-{len(list(work.iterdir()))}.sh"
        path.write_text(script)
        out = self.serve.cli("submit", str(path), "-D", str(work), *args, "--json")
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)["job_id"])

    def state(self, job_id: str) -> str:
        try:
            return str(self.serve.query(job_id).get("state", ""))
        except httpx.HTTPError:
            return ""

    def detail(self, job_id: str) -> dict:
        body = self.serve.query(job_id)
        return body.get("detail", body)

    def workers(self) -> dict[str, dict]:
        """存活的工作节点（有 CPU 的；头节点 0 个 CPU）：节点名 → GET /dashboard 的 node_info。"""
        self.head.note()
        resp = httpx.get(f"{self.serve.url}/dashboard", headers=self.serve.headers, timeout=30)
        resp.raise_for_status()
        return {
            n["node_name"]: n
            for n in resp.json()["node_info"]
            if n["available"] and n["total_cpus"] > 0
        }

    def request(self) -> dict:
        """调度器报告的对自动扩缩容器的请求：份额总数与其中排队作业的份数。"""
        try:
            resp = httpx.get(f"{self.serve.url}/health", timeout=30)
            return resp.json()["components"]["scheduler"].get("autoscale_request") or {}
        except (httpx.HTTPError, KeyError, ValueError):
            return {}

    def parked(self) -> list[str]:
        """调度器报告的停放节点（代理因空闲已退出）。"""
        try:
            resp = httpx.get(f"{self.serve.url}/health", timeout=30)
            return list(resp.json()["components"]["scheduler"].get("parked") or [])
        except (httpx.HTTPError, KeyError, ValueError):
            return []

    def log(self) -> str:
        return self.serve.log_tail() + "\n--- Ray 头节点 ---\n" + self.head.tail()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("autoscale")
    head = AutoscalingHead(tmp)
    serve = None
    try:
        serve = ServeProcess(
            tmp,
            tmp / "data",
            "--ray-address",
            head.address,
            env={
                "CONDUCTOR_PARTITIONS": json.dumps({"batch": {"default": True}, "gpu": {}}),
                "CONDUCTOR_AUTOSCALER_CONFIG": str(head.config),
                # 空闲 2 秒即停放代理（默认 30 秒；须小于空闲超时）
                "CONDUCTOR_AGENT_PARK_AFTER": "2",
            },
        )
        serve.wait_healthy()
        yield Cluster(head, serve)
    finally:
        if serve is not None:
            with contextlib.suppress(Exception):
                serve.stop()
            serve.cleanup()
        head.stop()


def test_gpu_job_brings_up_a_gpu_node_and_the_request_is_withdrawn(
    cluster: Cluster, tmp_path: Path
) -> None:
    assert cluster.workers() == {}  # 缩到零：一台工作节点也没有
    job = cluster.submit("echo gpu=$CUDA_VISIBLE_DEVICES\n", tmp_path, "-p", "gpu", "-G", "1")
    # 请求里有这个作业的一份（节点起来之前它一直在）
    wait_for(lambda: cluster.request().get("pending", 0) >= 1, 60, what=cluster.log)
    wait_for(lambda: cluster.state(job) == "COMPLETED", 240, interval=0.5, what=cluster.log)
    node = cluster.detail(job)["node_list"]
    info = cluster.workers().get(node)
    assert info is not None and info["total_gpus"] == 1 and info["partition"] == "gpu", info
    # 队列空了：请求撤回
    wait_for(lambda: cluster.request() == {"bundles": 0, "pending": 0}, 60, what=cluster.log)


def test_idle_node_is_removed_after_the_idle_timeout_and_comes_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    job = cluster.submit("true\n", tmp_path, "-p", "gpu", "-G", "1")
    wait_for(lambda: cluster.state(job) == "COMPLETED", 240, interval=0.5, what=cluster.log)
    node = cluster.detail(job)["node_list"]
    node_id = cluster.workers()[node]["node_id"]
    # 节点代理占着一个 worker，Ray 就不认为节点空闲：调度器先让空闲节点的代理退出（停放）
    wait_for(lambda: node_id in cluster.parked(), 60, what=cluster.log)
    # 之后 Ray 的空闲超时（6 秒）到了才回收；扩缩器每秒一轮
    wait_for(lambda: node not in cluster.workers(), 120, interval=1, what=cluster.log)
    # 再来一个 GPU 作业：节点重新扩出来，作业照常运行
    again = cluster.submit("true\n", tmp_path, "-p", "gpu", "-G", "1")
    wait_for(lambda: cluster.state(again) == "COMPLETED", 240, interval=0.5, what=cluster.log)


def test_two_node_gang_brings_up_two_nodes(cluster: Cluster, tmp_path: Path) -> None:
    job = cluster.submit(
        "srun bash -c 'echo $SLURM_PROCID $CONDUCTOR_NODE_ID'\n",
        tmp_path,
        "-N",
        "2",
        "--ntasks-per-node",
        "1",
        "-o",
        "gang.out",
    )
    wait_for(lambda: cluster.state(job) == "COMPLETED", 240, interval=0.5, what=cluster.log)
    detail = cluster.detail(job)
    assert detail["allocated_nodes"] == 2, detail
    tasks = sorted(line.split() for line in (tmp_path / "gang.out").read_text().splitlines())
    assert [rank for rank, _ in tasks] == ["0", "1"], tasks
    assert len({node_id for _, node_id in tasks}) == 2, tasks
    wait_for(lambda: cluster.request() == {"bundles": 0, "pending": 0}, 60, what=cluster.log)


def test_node_with_a_running_job_is_not_scaled_down(cluster: Cluster, tmp_path: Path) -> None:
    job = cluster.submit("sleep 30\n", tmp_path)
    wait_for(lambda: cluster.state(job) == "RUNNING", 240, interval=0.5, what=cluster.log)
    node = cluster.detail(job)["node_list"]
    # 空闲超时是 6 秒：看满它的四倍，跑着作业的节点一直都在，作业一直在跑
    watched_until = time.monotonic() + 4 * IDLE_MINUTES * 60
    while time.monotonic() < watched_until:
        assert node in cluster.workers(), cluster.log()
        assert cluster.state(job) == "RUNNING", cluster.log()
        time.sleep(0.5)
    wait_for(lambda: cluster.state(job) == "COMPLETED", 120, interval=0.5, what=cluster.log)
