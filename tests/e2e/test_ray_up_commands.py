"""ray-cluster.yaml 里的头节点与工作节点启动命令，真实运行。

同一组命令（只换了虚拟环境路径、跳过 `ray stop`、去掉 ray up 生成的自动扩缩配置），
经 YAML 中的变量给出临时目录与空闲端口；系统 PostgreSQL 换成测试自己起的一个监听 TCP 的实例。
第一个测试接着在这个集群上原样执行 docs/deployment.md 的升级步骤（retire-actors、重启监督进程）。
第二个测试把工作节点放进另一个网络命名空间，经一对 veth 的真实网络链路加入头节点。
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.serve import CONDUCTOR, free_port
from harness.waiting import wait_for
from tests.cluster.conftest import job_payload
from tests.e2e.ray_up import (
    Link,
    Node,
    clean_env,
    netns_unavailable,
    start_commands,
    tcp_postgres,
    veth_netns,
    wait_http,
)

HEAD_NAME, WORKER_NAME = "yaml-head", "yaml-worker"


class Deployment:
    """按 ray-cluster.yaml 起的一个头节点与一个工作节点，以及头节点上的 Conductor。"""

    def __init__(self, workdir: Path, ray_tmp: Path, database_url: str, head_ip: str) -> None:
        self.workdir = workdir
        self.ray_tmp = ray_tmp
        self.database_url = database_url
        self.head_ip = head_ip
        self.ray_port, self.api_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.nodes: list[Node] = []

    def start_head(self, node_ip: str | None) -> Node:
        env = clean_env(
            # 每个节点自己的 Ray 临时目录，如同不同的机器
            RAY_TMPDIR=str(self.ray_tmp / "head"),
            CLUSTER_RAY_PORT=str(self.ray_port),
            CLUSTER_DASHBOARD_PORT=str(free_port()),
            CLUSTER_NODE_NAME=HEAD_NAME,
            CONDUCTOR_PORT=str(self.api_port),
            CONDUCTOR_DATA_DIR=str(self.workdir / "conductor-data"),
            CONDUCTOR_DATABASE_URL=self.database_url,
            CONDUCTOR_KILL_WAIT="2",
            CONDUCTOR_IDLE_RESYNC="0.5",
            # 测试以 root 运行：作业以服务的用户（root）运行须明确允许（生产默认不允许）
            CONDUCTOR_ALLOW_ROOT_JOBS="true",
            # serve 把本机用户的管理员令牌写在这里（不写进运行测试的用户的真实 HOME）
            XDG_CONFIG_HOME=str(self.workdir / "config"),
        )
        if node_ip:
            env["CLUSTER_NODE_IP"] = node_ip
        node = Node("head", self.workdir, start_commands("head"), env)
        self.nodes.append(node)
        node.wait_started()
        return node

    def start_worker(self, node_ip: str | None, prefix: tuple[str, ...] = ()) -> Node:
        env = clean_env(
            RAY_TMPDIR=str(self.ray_tmp / "worker"),
            RAY_HEAD_IP=self.head_ip,  # ray up 为工作节点设置的变量
            CLUSTER_RAY_PORT=str(self.ray_port),
            CLUSTER_NODE_NAME=WORKER_NAME,
        )
        if node_ip:
            env["CLUSTER_NODE_IP"] = node_ip
        node = Node("worker", self.workdir, start_commands("worker"), env, prefix)
        self.nodes.append(node)
        node.wait_started()
        return node

    @property
    def headers(self) -> dict[str, str]:
        """serve 写入的管理员令牌（认证默认开启）。"""
        token = (self.workdir / "config" / "conductor" / "token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def worker_node_id(self) -> str:
        """等 API 看到存活的工作节点，返回它的 Ray 节点 id。"""

        def found() -> str | None:
            nodes = httpx.get(self.url + "/dashboard", headers=self.headers, timeout=10).json()[
                "node_info"
            ]
            for n in nodes:
                if n["node_name"] == WORKER_NAME and n["available"] and n["total_cpus"] > 0:
                    return str(n["node_id"])
            return None

        return wait_for(found, 60, interval=0.5, what="API 看到工作节点")

    def submit(self, script: str, **job: object) -> str:
        body = job_payload(script, current_working_directory=str(self.workdir / "jobs"), **job)
        resp = httpx.post(self.url + "/jobs/submit", json=body, headers=self.headers, timeout=30)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["job_id"])

    def wait_done(self, job_id: str) -> dict:
        def done() -> dict | None:
            got = httpx.get(
                f"{self.url}/jobs/query/{job_id}", headers=self.headers, timeout=30
            ).json()
            return got if got["state"] not in ("PENDING", "RUNNING") else None

        return wait_for(done, 90, interval=0.3, what=lambda: f"作业 {job_id} 结束\n{self.logs()}")

    def run_job(self, script: str, **job: object) -> dict:
        """经 API 提交一个作业并等它结束，返回查询结果。"""
        return self.wait_done(self.submit(script, **job))

    def scheduler_epoch(self) -> int | None:
        """健康时调度器的纪元；API 正在重启或不健康时为 None。"""
        try:
            resp = httpx.get(self.url + "/health", timeout=10)
        except httpx.HTTPError:
            return None
        return resp.json()["components"]["scheduler"]["epoch"] if resp.status_code == 200 else None

    def logs(self) -> str:
        """失败时的线索：Conductor 的日志与各节点启动命令的输出。"""
        serve_log = self.workdir / "conductor-data" / "serve.log"
        parts = [serve_log.read_text()[-4000:] if serve_log.exists() else ""]
        parts += [f"--- {n.name} ---\n{n.log_tail()}" for n in self.nodes]
        return "\n".join(parts)

    def stop(self) -> None:
        # 先停工作节点再停头节点：与真实集群的停止顺序一致
        for node in reversed(self.nodes):
            node.stop()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Ray 的 Unix 套接字路径有长度上限（约 107 字节）：Ray 临时目录放在 /tmp 下的短路径。"""
    path = Path(tempfile.mkdtemp(prefix="cr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_yaml_start_commands_bring_up_head_and_worker(tmp_path: Path, short_tmp: Path) -> None:
    with tcp_postgres(["127.0.0.1"], clients=["127.0.0.1"]) as database_url:
        deploy = Deployment(tmp_path, short_tmp, database_url, head_ip="127.0.0.1")
        try:
            head = deploy.start_head(node_ip=None)
            deploy.start_worker(node_ip=None)
            wait_http(deploy.url + "/health", 120, head)
            worker_id = deploy.worker_node_id()

            # 头节点不跑作业（CLUSTER_HEAD_CPUS 默认 0）：作业只能落在工作节点上
            result = deploy.run_job('echo "$CONDUCTOR_NODE_ID"')
            assert result["state"] == "COMPLETED", result
            assert result["detail"]["node_list"] == WORKER_NAME
            assert result["job_log"]["stdout"].strip() == worker_id  # 执行器报告的真实节点

            upgrade_in_place(deploy, worker_id)
        finally:
            deploy.stop()
        assert len(deploy.nodes[0].seen) > 3 and len(deploy.nodes[1].seen) > 3  # Ray 的各个进程
        assert not [p for n in deploy.nodes for p in n.survivors()]


def upgrade_in_place(deploy: Deployment, worker_id: str) -> None:
    """docs/deployment.md 的升级第 2、3 步，对着按 yaml 起的集群原样执行：运行中的作业不受影响。"""
    jobs = deploy.workdir / "jobs"
    running = deploy.submit(
        "touch started; while [ ! -f go ]; do sleep 0.1; done; echo done", standard_output="up.out"
    )
    wait_for((jobs / "started").exists, 60, what=lambda: f"作业启动\n{deploy.logs()}")
    epoch = deploy.scheduler_epoch()
    assert epoch is not None

    retire = subprocess.run(
        [CONDUCTOR, "retire-actors", "--ray-address", f"127.0.0.1:{deploy.ray_port}"],
        env=clean_env(
            RAY_TMPDIR=str(deploy.ray_tmp / "head"), CONDUCTOR_DATABASE_URL=deploy.database_url
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert retire.returncode == 0, retire.stderr
    said = "".join(retire.stdout.split())  # rich 会按终端宽度折行
    assert "调度器已永久停止" in said and "已停止1个空闲的节点代理" in said  # 头节点的代理
    assert f"保留节点{worker_id}的代理（仍有作业[{running}]" in said
    data = deploy.workdir / "conductor-data"
    subprocess.run(["bash", "-c", f"pkill -TERM -P $(cat {data}/serve.pid)"], check=True)

    # 外层循环拉起新的 conductor serve：新 API 进程建出新调度器（新纪元），接管作业
    wait_for(
        lambda: (deploy.scheduler_epoch() or 0) > epoch,
        120,
        interval=0.5,
        what=lambda: f"新调度器就绪\n{deploy.logs()}",
    )
    assert "收到信号 SIGTERM" in (data / "serve.log").read_text()
    (jobs / "go").touch()
    result = deploy.wait_done(running)
    assert result["state"] == "COMPLETED" and result["job_log"]["stdout"] == "done\n", result
    # 新调度器照常调度：新作业在工作节点上运行
    assert deploy.run_job("true", standard_output="after.out")["state"] == "COMPLETED"


@pytest.fixture
def link() -> Iterator[Link]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"无法创建网络命名空间：{reason}")
    with contextlib.ExitStack() as stack:
        try:
            value = stack.enter_context(veth_netns())
        except RuntimeError as exc:  # 已建好的部分在 veth_netns 里删除
            pytest.skip(f"无法创建网络命名空间：{exc}")
        yield value


def test_worker_in_another_network_namespace_joins_over_veth(
    tmp_path: Path, short_tmp: Path, link: Link
) -> None:
    # PostgreSQL 只听 veth 上头节点一侧的地址：工作节点上的代理经这条链路写作业结局
    # （API 与调度器在头节点上，也经这个地址连接）
    with tcp_postgres([link.head_ip], clients=[link.head_ip, link.worker_ip]) as database_url:
        deploy = Deployment(tmp_path, short_tmp, database_url, head_ip=link.head_ip)
        try:
            head = deploy.start_head(node_ip=link.head_ip)
            deploy.start_worker(node_ip=link.worker_ip, prefix=("ip", "netns", "exec", link.netns))
            wait_http(deploy.url + "/health", 120, head)
            worker_id = deploy.worker_node_id()

            result = deploy.run_job('echo "$CONDUCTOR_NODE_ID"; readlink /proc/self/ns/net')
            assert result["state"] == "COMPLETED", result
            assert result["detail"]["node_list"] == WORKER_NAME
            node_id, netns = result["job_log"]["stdout"].split()
            assert node_id == worker_id
            assert netns == f"net:[{link.netns_inode}]"  # 脚本确实在第二个网络命名空间里运行
        finally:
            deploy.stop()
        assert len(deploy.nodes[0].seen) > 3 and len(deploy.nodes[1].seen) > 3  # Ray 的各个进程
        assert not [p for n in deploy.nodes for p in n.survivors()]
