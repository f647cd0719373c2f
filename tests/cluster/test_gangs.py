"""多节点作业与作业步（真实的 3 节点 Ray 集群：头节点 4 CPU + gw1、gw2 各 2 CPU，真实 PostgreSQL）。

分配整体就位（放置组），批处理脚本在第一个节点上运行，srun 把任务铺到分配的各节点；
取消、超时、失去节点与调度器崩溃都要覆盖到每一个节点。
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from sqlalchemy import text

from conductor.hostlist import expand
from conductor.proctree import kill_job_tree
from harness.waiting import pid_alive, wait_for
from tests.cluster.conftest import Service, job_payload

WORKER_CPUS = 2
NAME_LABEL = "conductor.node-name"


def _add(service: Service, cluster: Cluster, name: str) -> object:
    node = cluster.add_node(num_cpus=WORKER_CPUS, labels={NAME_LABEL: name})
    wait_for(
        lambda: node.node_id in service.scheduler_status()["agents"],
        60,
        what=f"节点 {name} 的代理就绪",
    )
    return node


@pytest.fixture(scope="module")
def workers(service: Service, ray_cluster: Cluster) -> Iterator[dict[str, object]]:
    nodes = {name: _add(service, ray_cluster, name) for name in ("gw1", "gw2")}
    yield nodes
    for node in nodes.values():
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


@pytest.fixture
def names(service: Service, workers: dict[str, object]) -> dict[str, str]:
    """存活节点名 → 节点 id。"""
    return {
        n["node_name"]: n["node_id"]
        for n in service.client.get("/dashboard").json()["node_info"]
        if n["available"]
    }


def _head_name(names: dict[str, str], ray_cluster: Cluster) -> str:
    return next(name for name, nid in names.items() if nid == ray_cluster.head_node.node_id)


def _gang(service: Service, script: str, wd: Path, **job: object) -> int:
    """2 个节点、每节点 2 个任务的作业。"""
    fields: dict[str, object] = {
        "nodes": 2,
        "ntasks_per_node": 2,
        "current_working_directory": str(wd),
        "standard_output": "out.txt",
        "standard_error": "err.txt",
    }
    return service.submit(script, **(fields | job))


def _pids(wd: Path, ranks: int) -> dict[int, tuple[int, str]]:
    """等每个任务写下 pid-<rank>（内容 “pid 节点id”），返回 rank →（pid, 节点 id）。"""
    files = [wd / f"pid-{r}" for r in range(ranks)]
    wait_for(lambda: all(f.exists() and f.read_text().endswith("\n") for f in files), 60,
             what="各任务写下 pid")  # fmt: skip
    found = {}
    for rank, f in enumerate(files):
        pid, node = f.read_text().split()
        found[rank] = (int(pid), node)
    return found


# 每个任务写下自己的 pid 与节点 id，然后一直睡
SLEEPER = "srun bash -c 'echo $$ $CONDUCTOR_NODE_ID > pid-$SLURM_PROCID; exec sleep 300'\n"


def test_srun_spreads_ranks_over_both_nodes_and_records_steps(
    service: Service, names: dict[str, str], tmp_path: Path
) -> None:
    job = _gang(
        service,
        'echo "nodelist=$SLURM_JOB_NODELIST nnodes=$SLURM_NNODES tpn=$SLURM_TASKS_PER_NODE"\n'
        "srun bash -c 'echo rank $SLURM_PROCID $CONDUCTOR_NODE_ID $SLURM_NODEID'\n"
        "srun -l bash -c 'echo lab $CONDUCTOR_NODE_ID'\n"
        "srun -l bash -c 'exit $SLURM_PROCID'\n"
        "echo rc=$?\n",
        tmp_path,
    )
    service.wait_state(job, "COMPLETED", "FAILED", timeout=90)
    out = (tmp_path / "out.txt").read_text().splitlines()
    err = (tmp_path / "err.txt").read_text()
    assert service.state(job) == "COMPLETED", (out, err)
    ranks = sorted(line.split()[1:] for line in out if line.startswith("rank "))
    assert [r[0] for r in ranks] == ["0", "1", "2", "3"], (out, err)
    node_ids = {r[1] for r in ranks}
    assert len(node_ids) == 2 and node_ids <= set(names.values())
    # block 分布：rank 0、1 在第一个节点（SLURM_NODEID 0），2、3 在第二个
    assert [r[2] for r in ranks] == ["0", "0", "1", "1"]
    by_id = {nid: name for name, nid in names.items()}
    allocated = sorted(by_id[n] for n in node_ids)
    header = next(line for line in out if line.startswith("nodelist="))
    assert expand(header.split()[0].removeprefix("nodelist=")) == allocated, header
    assert "nnodes=2 tpn=2(x2)" in header
    # -l：每行前加任务序号 “N: ”，各任务的行来自它所在的节点
    labelled = sorted(line for line in out if ": lab " in line)
    assert labelled == [f"{r}: lab {ranks[r][1]}" for r in range(4)], (out, err)
    # 最大的退出码（任务 3）成为 srun 的退出码；Slurm 的报告点名节点与任务
    assert "rc=3" in out
    assert f"srun: error: {by_id[ranks[3][1]]}: task 3: Exited with exit code 3" in err
    steps = {s["step_id"]: s for s in service.query(job)["steps"]}
    assert set(steps) == {f"{job}.batch", f"{job}.0", f"{job}.1", f"{job}.2"}
    assert steps[f"{job}.0"]["state"] == "COMPLETED"
    assert steps[f"{job}.2"]["state"] == "FAILED"
    assert steps[f"{job}.2"]["exit_code"] == "3:0"


def test_a_gang_waits_holding_nothing_while_short_jobs_backfill(
    service: Service, names: dict[str, str], ray_cluster: Cluster, tmp_path: Path
) -> None:
    head = _head_name(names, ray_cluster)
    wait_file = "while [ ! -e {0} ]; do sleep 0.1; done\n"
    busy_head = service.submit(
        wait_file.format(tmp_path / "free-head"), ntasks_per_node=4, required_nodes=[head]
    )
    busy_gw1 = service.submit(
        wait_file.format(tmp_path / "free-gw1"), ntasks_per_node=2, required_nodes=["gw1"]
    )
    service.wait_state(busy_head, "RUNNING")
    service.wait_state(busy_gw1, "RUNNING")
    gang = _gang(service, "srun hostname\n", tmp_path, time_limit="5")
    # 一个节点空着也不占：gang 整体等待，分配里什么也没占
    short = service.submit("sleep 1", ntasks_per_node=2, time_limit="1")
    long = service.submit("sleep 1", ntasks_per_node=2, time_limit="30")
    service.wait_state(short, "COMPLETED", timeout=60)
    # 调度器写下长作业的等待原因，说明它已被考虑过（而不只是还没轮到）
    wait_for(
        lambda: service.query(long)["state_reason"] in ("Resources", "Priority"),
        30,
        what="长作业被调度轮考虑",
    )
    assert service.state(gang) == "PENDING"
    # 会推迟 gang 预留开始时刻的长作业不能占那个空闲节点
    assert service.state(long) == "PENDING"
    assert gang not in {row[0] for row in service.held()}
    (tmp_path / "free-gw1").touch()
    body = service.wait_state(gang, "COMPLETED", timeout=60)
    assert body["detail"]["node_list"] == "gw[1-2]"
    (tmp_path / "free-head").touch()
    service.wait_state(long, "COMPLETED", timeout=60)


@pytest.mark.parametrize("ending", ["cancel", "timeout"])
def test_cancel_and_timeout_kill_the_steps_on_every_node(
    service: Service, workers: dict[str, object], tmp_path: Path, ending: str
) -> None:
    limit = {"time_limit": "0:08"} if ending == "timeout" else {}
    job = _gang(service, SLEEPER, tmp_path, **limit)
    pids = _pids(tmp_path, 4)
    assert len({node for _, node in pids.values()}) == 2
    if ending == "cancel":
        assert service.client.post(f"/jobs/cancel/{job}").status_code == 200
        service.wait_state(job, "CANCELLED")
    else:
        service.wait_state(job, "TIMEOUT", timeout=60)
    for pid, _ in pids.values():
        wait_for(lambda p=pid: not pid_alive(p), 30, what=f"任务进程 {pid} 已被杀")
    wait_for(lambda: service.held_cpus() == 0, 30, what="分配的资源全部归还")


def test_scheduler_crash_leaves_a_multi_node_job_running(
    service: Service, workers: dict[str, object], tmp_path: Path
) -> None:
    job = _gang(
        service,
        f"srun bash -c 'while [ ! -e {tmp_path}/go ]; do sleep 0.1; done; echo done $SLURM_PROCID'\n",
        tmp_path,
    )
    service.wait_state(job, "RUNNING")
    wait_for(
        lambda: any(s["step_id"] == f"{job}.0" for s in service.query(job).get("steps", [])),
        60,
        what="作业步 0 已开始",
    )
    epoch = service.kill_scheduler()
    service.wait_scheduler_restarted(epoch)
    assert service.state(job) == "RUNNING"
    (tmp_path / "go").touch()
    service.wait_state(job, "COMPLETED", timeout=60)
    lines = sorted((tmp_path / "out.txt").read_text().split("\n"))
    assert [x for x in lines if x] == ["done 0", "done 1", "done 2", "done 3"]


def test_mpi_style_script_on_one_node_works_unchanged(service: Service, tmp_path: Path) -> None:
    """与真实 MPI/torch 作业相同的写法：srun python 读 SLURM_PROCID/SLURM_NTASKS。"""
    job = service.submit(
        'srun python3 -c \'import os; print(os.environ["SLURM_PROCID"], '
        'os.environ["SLURM_NTASKS"], os.environ["SLURM_LOCALID"])\'\n',
        tasks=2,
        current_working_directory=str(tmp_path),
    )
    service.wait_state(job, "COMPLETED")
    assert sorted((tmp_path / "out.txt").read_text().splitlines()) == ["0 2 0", "1 2 1"]


def test_removing_a_node_fails_the_job_and_cleans_the_other_node(
    service: Service, workers: dict[str, object], ray_cluster: Cluster, tmp_path: Path
) -> None:
    extra = _add(service, ray_cluster, "zz-extra")
    job = _gang(service, SLEEPER, tmp_path, required_nodes=["gw1", "zz-extra"])
    pids = _pids(tmp_path, 4)
    token = _token(service, job)
    try:
        ray_cluster.remove_node(extra)
        service.wait_state(job, "NODE_FAIL", timeout=60)
        survivors = [pid for pid, node in pids.values() if node != extra.node_id]  # type: ignore[attr-defined]
        assert len(survivors) == 2
        for pid in survivors:
            wait_for(lambda p=pid: not pid_alive(p), 30, what=f"存活节点上的任务 {pid} 已被杀")
        assert "zz-extra" in (service.row(job)["error_msg"] or "")
        wait_for(lambda: service.held_cpus() == 0, 30, what="分配的资源只释放一次且全部归还")
    finally:
        # 被移除的“节点”与测试进程同在一台机器上：它的任务进程（真实故障里随机器而去）由这里清理
        kill_job_tree(token, grace=0)


def _token(service: Service, job_id: int) -> str:
    with service.engine.connect() as conn:
        return conn.execute(
            text("SELECT token FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()


def test_more_nodes_than_any_partition_has_is_422_naming_nodes(service: Service) -> None:
    count = text("SELECT count(*) FROM jobs")
    with service.engine.connect() as conn:
        before = conn.execute(count).scalar_one()
    resp = service.client.post("/jobs/submit", json=job_payload("true", nodes=9))
    assert resp.status_code == 422, resp.text
    assert "nodes" in resp.json()["detail"]
    with service.engine.connect() as conn:
        assert conn.execute(count).scalar_one() == before  # 什么都没写下
