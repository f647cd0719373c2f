"""节点排空，端到端（真实 Ray 集群加两个 2 CPU 的工作节点，真实 HTTP 与 Slurm 命令）：

- scontrol update NodeName=… State=DRAIN Reason=…：节点上运行中的作业跑完，新作业去别的节点，
  -w 点名它的作业等 ReqNodeNotAvail；sinfo 显示 drng → drain，sinfo -R 与 scontrol show node 写明原因；
  State=RESUME 之后节点重新接作业；
- Ray 自己排空的节点（ray drain-node，自动扩缩容与实例回收用的同一个 GCS 接口）同样不再接新作业。
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.core.generated import autoscaler_pb2

from harness.waiting import wait_for
from tests.cluster.conftest import Service
from tests.cluster.live_api import LiveApi

BIN = str(Path(sys.executable).parent)
NAME_LABEL = "conductor.node-name"


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[LiveApi]:
    live = LiveApi(service)
    yield live
    live.close()


@pytest.fixture
def nodes(service: Service, ray_cluster: Cluster) -> Iterator[dict[str, object]]:
    """两个 2 CPU 的工作节点 dr-a、dr-b（每个测试新加，测完移除，排空记录也清掉）。"""
    tag = os.urandom(3).hex()
    added = {
        name: ray_cluster.add_node(num_cpus=2, labels={NAME_LABEL: f"{name}-{tag}"})
        for name in ("a", "b")
    }
    for node in added.values():
        wait_for(
            lambda n=node: n.node_id in service.scheduler_status()["agents"],  # type: ignore[attr-defined]
            60,
            what="新节点的代理就绪",
        )
    yield {name: (node, f"{name}-{tag}") for name, node in added.items()}
    for node in added.values():
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


def slurm(api: LiveApi, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env |= {"PATH": f"{BIN}:{env.get('PATH', '')}", "CONDUCTOR_URL": api.url}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, env=env)


def node_info(service: Service, name: str) -> dict:
    found = [
        n for n in service.client.get("/dashboard").json()["node_info"] if n["node_name"] == name
    ]
    assert found, name
    return found[-1]


def hold_on(service: Service, node: str, tmp_path: Path) -> tuple[Path, int]:
    """在 node 上跑一个作业，直到测试创建返回的文件 go；返回 (go, 作业号)，作业开始后才返回。"""
    go = tmp_path / "go"
    job = service.submit(
        f"touch started; while [ ! -e {go} ]; do sleep 0.1; done",
        current_working_directory=str(tmp_path),
        required_nodes=[node],
    )
    wait_for((tmp_path / "started").exists, 60, what=f"{node} 上的作业开始")
    return go, job


def head_name(service: Service, cluster: Cluster) -> str:
    head = cluster.head_node.node_id  # type: ignore[attr-defined]
    names = [n["node_name"] for n in service.client.get("/dashboard").json()["node_info"]
             if n["node_id"] == head]  # fmt: skip
    return names[0]


def reason(service: Service, job_id: int) -> str | None:
    return service.query(job_id).get("state_reason")


def test_drain_lets_the_running_job_finish_sends_new_jobs_elsewhere_and_resume_reopens(
    service: Service, ray_cluster: Cluster, api: LiveApi, nodes: dict, tmp_path: Path
) -> None:
    (_, a), (_, b) = nodes["a"], nodes["b"]
    go, first = hold_on(service, a, tmp_path)

    drained = slurm(api, "scontrol", "update", f"NodeName={a}", "State=DRAIN", "Reason=换内存")
    assert drained.returncode == 0, drained.stderr
    info = node_info(service, a)
    assert (info["state"], info["drain_reason"], info["available"]) == ("draining", "换内存", True)
    assert info["drained_by"] and info["drain_since"]
    assert f"{a} drng" in slurm(api, "sinfo", "-h", "-N", "-o", "%N %t").stdout.splitlines()

    # 新作业不去 a（a 还空着 1 个 CPU，最佳适配本会先挑它）；点名 a 的作业等节点
    elsewhere = [
        service.submit("sleep 0.2; echo ok", current_working_directory=str(tmp_path),
                       excluded_nodes=[head_name(service, ray_cluster)])
        for _ in range(2)
    ]  # fmt: skip
    pinned = service.submit(
        "echo pinned", current_working_directory=str(tmp_path), required_nodes=[a]
    )
    for job_id in elsewhere:
        assert service.wait_state(job_id, "COMPLETED")["detail"]["node_list"] == b
    wait_for(
        lambda: reason(service, pinned) == "ReqNodeNotAvail",
        30,
        what="点名排空节点的作业的等待原因",
    )
    assert service.state(pinned) == "PENDING"

    # 运行中的作业照常跑完；节点随即显示 drained
    go.touch()
    assert service.wait_state(first, "COMPLETED")["detail"]["node_list"] == a
    wait_for(lambda: node_info(service, a)["state"] == "drained", 30, what="a 显示 drained")
    sinfo = slurm(api, "sinfo", "-R", "-h")
    assert sinfo.returncode == 0, sinfo.stderr
    assert any(line.startswith("换内存") and line.endswith(a) for line in sinfo.stdout.splitlines())
    shown = slurm(api, "scontrol", "show", "node", a).stdout
    assert "State=IDLE+DRAIN " in shown and "Reason=换内存 [" in shown

    resumed = slurm(api, "scontrol", "update", f"NodeName={a}", "State=RESUME")
    assert resumed.returncode == 0, resumed.stderr
    assert service.wait_state(pinned, "COMPLETED")["detail"]["node_list"] == a
    assert (
        node_info(service, a)["state"] == "idle" and node_info(service, a)["drain_reason"] is None
    )
    again = slurm(api, "scontrol", "update", f"NodeName={a}", "State=RESUME")
    assert (again.returncode, again.stderr) == (
        1,
        "slurm_update error: Invalid node state specified\n",
    )


def test_conductor_drain_and_resume_commands(service: Service, api: LiveApi, nodes: dict) -> None:
    _, a = nodes["a"]
    conductor = str(Path(BIN) / "conductor")
    missing = subprocess.run(
        [conductor, "drain", a, "--url", api.url], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "--reason" in missing.stderr
    done = subprocess.run(
        [conductor, "drain", a, "--reason", "换风扇", "--url", api.url],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "已排空" in done.stdout, done.stderr
    assert node_info(service, a)["state"] == "drained"
    unknown = slurm(api, "scontrol", "update", "NodeName=no-such-node", "State=DRAIN", "Reason=x")
    assert unknown.stderr == "slurm_update error: Invalid node name specified\n"
    back = subprocess.run(
        [conductor, "resume", a, "--url", api.url], capture_output=True, text=True
    )
    assert back.returncode == 0 and "已恢复" in back.stdout, back.stderr
    assert node_info(service, a)["state"] == "idle"


def test_a_node_ray_is_draining_gets_no_new_jobs(
    service: Service, ray_cluster: Cluster, nodes: dict, tmp_path: Path
) -> None:
    (node_a, a), (_, b) = nodes["a"], nodes["b"]
    go, first = hold_on(service, a, tmp_path)
    gcs = ray._raylet.GcsClient(address=ray_cluster.address)
    accepted, why = gcs.drain_node(
        node_a.node_id,  # type: ignore[attr-defined]
        autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
        "测试：实例即将回收",
        0,
    )
    assert accepted, why
    wait_for(lambda: node_info(service, a)["state"] == "draining", 30, what="a 显示 Ray 在排空")
    assert node_info(service, a)["drained_by"] == "ray"
    later = service.submit("echo ok", current_working_directory=str(tmp_path),
                           excluded_nodes=[head_name(service, ray_cluster)])  # fmt: skip
    assert service.wait_state(later, "COMPLETED")["detail"]["node_list"] == b
    go.touch()
    assert service.wait_state(first, "COMPLETED")["detail"]["node_list"] == a
