"""GPU 与通用资源（议题 16 的验收）：真实 Ray 集群上的逻辑 GPU、真实 PostgreSQL。

会话的头节点（4 CPU、没有 GPU）之外，本模块加两个节点：
- gpu-node：2 CPU、2 块 GPU；
- a100-node：2 CPU、1 块 GPU（型号 A100，Ray 的 accelerator_type 资源），特性 a100、ib，
  通用资源 nvme:1。

作业把看到的环境变量写进 env-<作业号>.txt；要它一直运行的作业等测试创建 go-<作业号> 才结束
（不靠 sleep 计时）。
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from sqlalchemy import text

from harness.serve import cli
from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service, job_payload, make_settings
from tests.cluster.live_api import LiveApi

GPU_NODE = "gpu-node"
A100_NODE = "a100-node"
GPU_NODES = {GPU_NODE, A100_NODE}
MB = 2**20

# 作业看到的变量（未设置记为 <unset>，与空串区分），先写临时文件再改名：测试读到的总是完整的
VARS = (
    "CUDA_VISIBLE_DEVICES SLURM_JOB_GPUS SLURM_GPUS_ON_NODE GPU_DEVICE_ORDINAL SLURM_GPUS "
    "SLURM_CPUS_ON_NODE SLURM_NTASKS SLURM_MEM_PER_CPU SLURM_MEM_PER_NODE SLURM_JOB_NODELIST"
)
REPORT = (
    f'for v in {VARS}; do echo "$v=${{!v-<unset>}}"; done > .env-$SLURM_JOB_ID '
    "&& mv .env-$SLURM_JOB_ID env-$SLURM_JOB_ID.txt\n"
)
# 报告之后一直运行，直到测试创建 go-<作业号>
HOLD = REPORT + "until [ -e go-$SLURM_JOB_ID ]; do sleep 0.1; done\n"


@pytest.fixture(scope="module")
def service(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    svc = Service(make_settings(database_url, account_limits={"gcap": {"max_gpus": 1}}))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def nodes(service: Service, ray_cluster: Cluster) -> Iterator[dict[str, str]]:
    """两个 GPU 节点；返回节点名 → 节点 id（含头节点，键 "head"）。"""
    added = [
        ray_cluster.add_node(num_cpus=2, num_gpus=2, labels={"conductor.node-name": GPU_NODE}),
        ray_cluster.add_node(
            num_cpus=2,
            num_gpus=1,
            resources={"accelerator_type:A100": 1, "nvme": 1},
            labels={"conductor.node-name": A100_NODE, "conductor.features": "a100,ib"},
        ),
    ]
    try:
        for node in added:
            wait_for(
                lambda n=node: n.node_id in service.scheduler_status()["agents"],
                60,
                what="GPU 节点的代理就绪",
            )
        names = {
            n["node_name"]: n["node_id"]
            for n in service.client.get("/dashboard").json()["node_info"]
            if n["available"]
        }
        assert set(names) >= GPU_NODES, names
        head = ray_cluster.head_node.node_id
        names["head"] = next(name for name, node_id in names.items() if node_id == head)
        yield names
    finally:
        for node in added:
            if node in ray_cluster.worker_nodes:
                ray_cluster.remove_node(node)


@pytest.fixture(autouse=True)
def clean_queue(service: Service, tmp_path: Path) -> Iterator[None]:
    """每个测试结束时放行并取消遗留作业、等资源归还，互不影响。"""
    yield
    with service.engine.connect() as conn:
        live = conn.execute(
            text("SELECT id FROM jobs WHERE state IN ('PENDING', 'RUNNING')")
        ).scalars()
        for job_id in list(live):
            service.client.post(f"/jobs/cancel/{job_id}")
    wait_for(lambda: service.held_cpus() == 0, 60, what="资源全部归还")


def submit(service: Service, script: str, tmp: Path, **job: object) -> int:
    return service.submit(
        script, current_working_directory=str(tmp), standard_output="%j.out", **job
    )


def env_of(tmp: Path, job_id: int) -> dict[str, str]:
    path = tmp / f"env-{job_id}.txt"
    wait_for(path.exists, 60, what=f"作业 {job_id} 写出它的环境")
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def release(tmp: Path, job_id: int) -> None:
    (tmp / f"go-{job_id}").touch()


def reason(service: Service, job_id: int) -> str | None:
    return service.query(job_id)["state_reason"]


def wait_reason(service: Service, job_id: int, expected: str) -> None:
    wait_for(
        lambda: reason(service, job_id) == expected,
        30,
        what=lambda: f"作业 {job_id} 的等待原因为 {expected}，当前 {reason(service, job_id)}",
    )


def node_of(service: Service, job_id: int) -> str:
    return service.query(job_id)["detail"]["node_list"]


def columns(service: Service, job_id: int) -> dict:
    with service.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT cpus, memory_bytes, gpus, gpu_type, gres, whole_node_memory, ntasks "
                "FROM jobs WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
    return dict(row._mapping)


def occupy_a100(service: Service, tmp: Path) -> int:
    """用一个要 A100 型号的作业占住 a100-node 唯一的 GPU（它只能落在那里）。"""
    job_id = submit(service, HOLD, tmp, tres_per_node="gres/gpu:a100:1")
    service.wait_state(job_id, "RUNNING")
    assert node_of(service, job_id) == A100_NODE
    return job_id


# ---------- 两块 GPU 的节点 ----------


def test_two_gpu_jobs_share_a_two_gpu_node_and_a_third_waits(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    typed = occupy_a100(service, tmp_path)
    assert env_of(tmp_path, typed)["CUDA_VISIBLE_DEVICES"] == "0"
    first, second = (submit(service, HOLD, tmp_path, tres_per_job="gres/gpu:1") for _ in "ab")
    envs = {}
    for job_id in (first, second):
        service.wait_state(job_id, "RUNNING")
        assert node_of(service, job_id) == GPU_NODE
        envs[job_id] = env_of(tmp_path, job_id)
    # 同时运行、各拿一块不同的 GPU；Slurm 的变量与之一致
    assert {envs[first]["CUDA_VISIBLE_DEVICES"], envs[second]["CUDA_VISIBLE_DEVICES"]} == {
        "0",
        "1",
    }
    for env in envs.values():
        assert env["SLURM_JOB_GPUS"] == env["CUDA_VISIBLE_DEVICES"] == env["GPU_DEVICE_ORDINAL"]
        assert env["SLURM_GPUS_ON_NODE"] == "1" and env["SLURM_GPUS"] == "1"
        assert env["SLURM_JOB_NODELIST"] == GPU_NODE
    # 第三个：头节点的 4 个 CPU 都空着，但它要 GPU，只能等
    third = submit(service, HOLD, tmp_path, tres_per_job="gres/gpu:1")
    wait_reason(service, third, "Resources")
    assert service.state(third) == "PENDING"
    release(tmp_path, first)
    service.wait_state(first, "COMPLETED")
    service.wait_state(third, "RUNNING")
    assert node_of(service, third) == GPU_NODE
    # 拿到的正是刚空出来的那块
    assert env_of(tmp_path, third)["CUDA_VISIBLE_DEVICES"] == envs[first]["CUDA_VISIBLE_DEVICES"]


def test_cpu_jobs_see_no_gpu_and_gpu_jobs_avoid_the_head(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    gpu_job = submit(service, REPORT, tmp_path, tres_per_job="gres/gpu:1")
    cpu_job = submit(service, REPORT, tmp_path)
    # 落在 GPU 节点上的 CPU 作业同样看不见那里的 GPU
    cpu_on_gpu_node = submit(service, REPORT, tmp_path, required_nodes=[GPU_NODE])
    for job_id in (gpu_job, cpu_job, cpu_on_gpu_node):
        service.wait_state(job_id, "COMPLETED")
    assert node_of(service, gpu_job) in GPU_NODES
    assert env_of(tmp_path, gpu_job)["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    # 不要 GPU 的作业先用没有 GPU 的节点
    assert node_of(service, cpu_job) == nodes["head"]
    assert node_of(service, cpu_on_gpu_node) == GPU_NODE
    for job_id in (cpu_job, cpu_on_gpu_node):
        env = env_of(tmp_path, job_id)
        assert env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["SLURM_JOB_GPUS"] == env["SLURM_GPUS_ON_NODE"] == "<unset>"
    # GPU 全被占住时，GPU 作业在空闲的头节点旁等待
    holders = [occupy_a100(service, tmp_path)] + [
        submit(service, HOLD, tmp_path, tres_per_job="gres/gpu:2")
    ]
    service.wait_state(holders[1], "RUNNING")
    waiting = submit(service, REPORT, tmp_path, tres_per_job="gres/gpu:1")
    wait_reason(service, waiting, "Resources")
    assert service.state(waiting) == "PENDING"


# ---------- -C、-w、-x、型号与通用资源 ----------


def test_constraints_node_lists_types_and_gres_are_honoured(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    cases = {
        "a100": ({"constraints": "a100"}, {A100_NODE}),
        "and": ({"constraints": "a100&ib"}, {A100_NODE}),
        "or": ({"constraints": "h100|a100"}, {A100_NODE}),
        # 最佳适配本会选头节点（CPU 作业先用没有 GPU 的节点）
        "w": ({"required_nodes": [GPU_NODE]}, {GPU_NODE}),
        "x_head": ({"excluded_nodes": nodes["head"]}, GPU_NODES),
        # 最佳适配本会选空闲 GPU 最少的 a100-node
        "x_gpu": ({"excluded_nodes": A100_NODE, "tres_per_job": "gres/gpu:1"}, {GPU_NODE}),
        "type": ({"tres_per_node": "gres/gpu:a100:1"}, {A100_NODE}),
        "gres": ({"tres_per_node": "gres/nvme:1"}, {A100_NODE}),
    }
    ids = {name: submit(service, REPORT, tmp_path, **job) for name, (job, _) in cases.items()}
    for name, job_id in ids.items():
        service.wait_state(job_id, "COMPLETED")
        assert node_of(service, job_id) in cases[name][1], name
    assert columns(service, ids["gres"])["gres"] == {"nvme": 1.0}
    assert service.query(ids["type"])["detail"]["tres_alloc_str"] == (
        "cpu=1,mem=100M,node=1,gres/gpu=1,gres/gpu:a100=1"
    )


def test_requests_no_node_can_hold_are_refused_at_submit(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    def refused(**job: object) -> dict:
        before = service.client.get("/jobs").json()["jobs"]
        resp = service.client.post(
            "/jobs/submit", json=job_payload("true", current_working_directory=str(tmp_path), **job)
        )
        assert resp.status_code == 422, resp.text
        assert service.client.get("/jobs").json()["jobs"] == before  # 什么也没保存
        return resp.json()

    body = refused(tres_per_node="gres/gpu:4")
    assert body["errors"][0]["field"] == "job.gpus"
    assert "4 个 GPU" in body["detail"] and "最大 2 个" in body["detail"]
    body = refused(tres_per_job="gres/gpu:4")
    assert body["errors"][0]["field"] == "job.gpus"
    body = refused(tres_per_node="gres/fpga:1")
    assert body["errors"][0]["field"] == "job.gres" and "fpga" in body["detail"]
    body = refused(tres_per_node="gres/nvme:2")
    assert body["errors"][0]["field"] == "job.gres"
    body = refused(tres_per_node="gres/gpu:h100:1")
    assert body["errors"][0]["field"] == "job.gpus" and "h100" in body["detail"]
    body = refused(constraints="h100")
    assert body["errors"][0]["field"] == "job.constraints"
    body = refused(required_nodes=["no-such-node"])
    assert body["errors"][0]["field"] == "job.required_nodes"
    # 要 a100 特性又排除了唯一有它的节点
    body = refused(constraints="a100", excluded_nodes=A100_NODE)
    assert body["errors"][0]["field"] == "job.constraints"


# ---------- 回填 ----------


def test_gpu_wide_head_is_not_delayed_but_cpu_jobs_backfill(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    """gpu-node：一个 1 GPU 的作业还要跑（时限 1 分钟）；要 2 块 GPU 的队首预留在它结束时。
    排在后面、要 1 块 GPU 且 10 分钟的作业现在放得下，但会推迟队首：不许先跑；
    只要 CPU 的作业用的是预留之外的 CPU：回填到 gpu-node 上。"""
    occupy_a100(service, tmp_path)  # 否则后面的 1 GPU 作业去 a100-node，与队首无关
    blocker = submit(service, HOLD, tmp_path, tres_per_job="gres/gpu:1", time_limit="1")
    service.wait_state(blocker, "RUNNING")
    assert node_of(service, blocker) == GPU_NODE
    head = submit(service, HOLD, tmp_path, tres_per_job="gres/gpu:2", time_limit="10")
    gpu_behind = submit(service, HOLD, tmp_path, tres_per_job="gres/gpu:1", time_limit="10")
    cpu_behind = submit(service, HOLD, tmp_path, required_nodes=[GPU_NODE], time_limit="10")
    service.wait_state(cpu_behind, "RUNNING")
    wait_reason(service, head, "Resources")
    wait_reason(service, gpu_behind, "Priority")  # 放得下，但要让队首先用
    assert service.state(gpu_behind) == "PENDING"
    release(tmp_path, blocker)
    service.wait_state(head, "RUNNING")
    assert node_of(service, head) == GPU_NODE
    assert set(env_of(tmp_path, head)["CUDA_VISIBLE_DEVICES"].split(",")) == {"0", "1"}
    assert service.state(gpu_behind) == "PENDING"
    release(tmp_path, head)
    service.wait_state(gpu_behind, "RUNNING")


# ---------- 账户的 GPU 上限 ----------


def test_account_gpu_cap_holds_gpu_jobs_but_not_cpu_jobs(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    first = submit(service, HOLD, tmp_path, account="gcap", tres_per_job="gres/gpu:1")
    service.wait_state(first, "RUNNING")
    second = submit(service, HOLD, tmp_path, account="gcap", tres_per_job="gres/gpu:1")
    cpu = submit(service, REPORT, tmp_path, account="gcap")
    other = submit(service, REPORT, tmp_path, account="someone", tres_per_job="gres/gpu:1")
    service.wait_state(cpu, "COMPLETED")
    service.wait_state(other, "COMPLETED")  # 别的账户照用空着的 GPU
    wait_reason(service, second, "AssocGrpGRES")
    assert service.state(second) == "PENDING"
    release(tmp_path, first)
    service.wait_state(second, "RUNNING")


# ---------- 原样的 Slurm 脚本，经真实 CLI ----------


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[LiveApi]:
    live = LiveApi(service)
    yield live
    live.close()


def cli_submit(api: LiveApi, tmp: Path, name: str, directives: str, *args: str) -> int:
    script = tmp / name
    script.write_text(f"#!/bin/bash\n{directives}\necho hello from $SLURM_JOB_ID\n{REPORT}")
    proc = cli(api.url, "submit", str(script), "-D", str(tmp), "--parsable", *args)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


TRAIN = """#SBATCH --job-name=train
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=2
#SBATCH --mem=100M
#SBATCH --time=00:05:00
#SBATCH --mail-type=END
#SBATCH -o %x_%j.out"""


def test_real_world_scripts_get_exactly_what_they_ask_for(
    service: Service, nodes: dict[str, str], api: LiveApi, tmp_path: Path
) -> None:
    train = cli_submit(api, tmp_path, "train.sh", TRAIN)
    tasks = cli_submit(
        api,
        tmp_path,
        "tasks.sh",
        "#SBATCH -n 4\n#SBATCH --mem-per-cpu=50M\n#SBATCH -o node-%N-%j.out",
    )
    body = service.wait_state(train, "COMPLETED")
    env = env_of(tmp_path, train)
    assert (tmp_path / f"train_{train}.out").read_text() == f"hello from {train}\n"
    assert body["detail"]["node_list"] in GPU_NODES
    assert env["CUDA_VISIBLE_DEVICES"] in {"0", "1"} and env["SLURM_GPUS_ON_NODE"] == "1"
    assert (env["SLURM_CPUS_ON_NODE"], env["SLURM_NTASKS"]) == ("2", "1")
    assert (env["SLURM_MEM_PER_NODE"], env["SLURM_MEM_PER_CPU"]) == ("100", "<unset>")
    row = columns(service, train)
    assert (row["cpus"], row["memory_bytes"], row["gpus"]) == (2, 100 * MB, 1)
    assert body["detail"]["tres_alloc_str"] == "cpu=2,mem=100M,node=1,gres/gpu=1"
    assert body["time"]["limit_time"] == "0:05:00"

    # -n 4 --mem-per-cpu：一个节点上 4 个 CPU、每 CPU 50M；没要 GPU
    body = service.wait_state(tasks, "COMPLETED")
    node = body["detail"]["node_list"]
    assert node == nodes["head"]  # 只有头节点有 4 个 CPU
    assert (tmp_path / f"node-{node}-{tasks}.out").read_text() == f"hello from {tasks}\n"
    env = env_of(tmp_path, tasks)
    assert (env["SLURM_CPUS_ON_NODE"], env["SLURM_NTASKS"]) == ("4", "4")
    assert (env["SLURM_MEM_PER_CPU"], env["SLURM_MEM_PER_NODE"]) == ("50", "<unset>")
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    row = columns(service, tasks)
    assert (row["cpus"], row["memory_bytes"], row["gpus"], row["ntasks"]) == (4, 200 * MB, 0, 4)
    assert body["detail"]["tres_alloc_str"] == "cpu=4,mem=200M,node=1"

    # --exclusive --mem=0：整个节点（CPU 作业的首选是没有 GPU 的头节点）的 CPU 与内存
    whole = cli_submit(api, tmp_path, "whole.sh", "#SBATCH --exclusive\n#SBATCH --mem=0")
    body = service.wait_state(whole, "COMPLETED")
    assert body["detail"]["node_list"] == nodes["head"]
    head_memory = next(
        n["Resources"]["memory"] for n in ray.nodes() if n["NodeID"] == nodes[nodes["head"]]
    )
    env = env_of(tmp_path, whole)
    assert env["SLURM_CPUS_ON_NODE"] == str(CLUSTER_CPUS)
    # 以 MB 计向上取整（conductor.memory.slurm_mem_mb）
    assert env["SLURM_MEM_PER_NODE"] == str(-(-int(head_memory) // MB))
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    row = columns(service, whole)
    # 认领时记下拿到的整个节点的内存：查询照实显示分配到的 mem
    assert row["whole_node_memory"] and row["gpus"] == 0
    assert row["memory_bytes"] == int(head_memory)
    alloc = re.fullmatch(
        # 独占：分到节点的全部 CPU（同 Slurm 的 AllocTRES）
        rf"cpu={CLUSTER_CPUS},mem=(\d+)([MG]),node=1",
        service.query(whole)["detail"]["tres_alloc_str"],
    )
    assert alloc is not None, service.query(whole)["detail"]
    assert int(alloc[1]) * (1024 if alloc[2] == "G" else 1) == -(-int(head_memory) // MB)

    # 资源选项写在命令行上同样照办（同 sbatch：命令行覆盖 #SBATCH）
    typed = cli_submit(api, tmp_path, "typed.sh", "#SBATCH --mem=50M", "--gpus=1", "-C", "a100")
    body = service.wait_state(typed, "COMPLETED")
    assert body["detail"]["node_list"] == A100_NODE
    assert env_of(tmp_path, typed)["CUDA_VISIBLE_DEVICES"] == "0"
    assert body["detail"]["tres_alloc_str"] == "cpu=1,mem=50M,node=1,gres/gpu=1"


def test_srun_gives_each_task_its_share_of_the_jobs_gpus(
    service: Service, nodes: dict[str, str], tmp_path: Path
) -> None:
    """--gpus-per-task=1：每个任务的 CUDA_VISIBLE_DEVICES 是作业 GPU 中各不相同的一块；不写则同 Slurm 拿全部。"""
    job_id = submit(
        service,
        "echo job $CUDA_VISIBLE_DEVICES\n"
        "srun --gpus-per-task=1 bash -c 'echo task $SLURM_PROCID $CUDA_VISIBLE_DEVICES'\n"
        "srun -n 1 bash -c 'echo all $CUDA_VISIBLE_DEVICES'\n",
        tmp_path,
        tasks=2,
        tres_per_node="gres/gpu:2",
    )
    service.wait_state(job_id, "COMPLETED")
    lines = (tmp_path / f"{job_id}.out").read_text().splitlines()
    job_gpus = next(line for line in lines if line.startswith("job ")).split()[1].split(",")
    assert len(job_gpus) == 2
    tasks = sorted(line.split()[1:] for line in lines if line.startswith("task "))
    assert [t[0] for t in tasks] == ["0", "1"]
    assert sorted(t[1] for t in tasks) == sorted(job_gpus)
    assert next(line for line in lines if line.startswith("all ")).split()[1] == ",".join(job_gpus)
