"""重新排队、--open-mode、--signal、scancel --signal 与作业凭据（真实 Ray、真实 PostgreSQL、真实进程）。"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from sqlalchemy import text

from conductor.proctree import kill_job_tree
from harness.waiting import pid_alive, wait_for
from tests.cluster.conftest import Service

NAME_LABEL = "conductor.node-name"


def _job(service: Service, script: str, wd: Path, **job: object) -> int:
    fields: dict[str, object] = {
        "current_working_directory": str(wd),
        "standard_output": "out.txt",
        "standard_error": "err.txt",
    }
    return service.submit(script, **(fields | job))


def _wait_file(path: Path, text_: str, timeout: float = 60) -> None:
    wait_for(
        lambda: path.exists() and text_ in path.read_text(),
        timeout,
        what=lambda: (
            f"{path} 含有 {text_!r}：{path.read_text() if path.exists() else '（不存在）'}"
        ),
    )


def _restarts(service: Service, job_id: int) -> int:
    with service.engine.connect() as conn:
        return conn.execute(
            text("SELECT restart_count FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()


# 第一次运行写下 pid 后一直睡；重新排队后的运行检查旧执行已不在（绝不同时有两次执行）
RERUN = (
    'echo "run $SLURM_RESTART_COUNT"\n'
    "echo $$ > pid-$SLURM_RESTART_COUNT\n"
    'if [ "$SLURM_RESTART_COUNT" = 0 ]; then sleep 300; exit 0; fi\n'
    'kill -0 "$(cat pid-0)" 2>/dev/null && echo OVERLAP\n'
    "true\n"
)


def test_requeue_running_job_kills_old_run_and_appends(service: Service, tmp_path: Path) -> None:
    job = _job(service, RERUN, tmp_path, open_mode="append")
    _wait_file(tmp_path / "out.txt", "run 0")
    _wait_file(tmp_path / "pid-0", "\n")
    first = int((tmp_path / "pid-0").read_text())
    resp = service.client.post(f"/jobs/{job}/requeue")
    assert resp.status_code == 200, resp.text
    assert "RUNNING" in resp.json()["msg"]
    service.wait_state(job, "COMPLETED", timeout=90)
    assert not pid_alive(first)
    # --open-mode=append：第二次运行接在第一次的输出后面；旧执行在新执行开始前已结束
    assert (tmp_path / "out.txt").read_text() == "run 0\nrun 1\n"
    detail = service.query(job)["detail"]
    assert (detail["restarts"], detail["open_mode"]) == (1, "append")
    item = service.client.get("/jobs", params={"job_id": str(job)}).json()["jobs"]
    assert [(j["job_id"], j["restarts"]) for j in item] == [(job, 1)]
    assert service.held_cpus() == 0


def test_requeue_finished_job_reruns_and_truncates_by_default(
    service: Service, tmp_path: Path
) -> None:
    job = _job(service, 'echo "run $SLURM_RESTART_COUNT"\n', tmp_path)
    service.wait_state(job, "COMPLETED")
    assert (tmp_path / "out.txt").read_text() == "run 0\n"
    resp = service.client.post(f"/jobs/{job}/requeue")
    assert resp.status_code == 200, resp.text
    wait_for(lambda: _restarts(service, job) == 1 and service.state(job) == "COMPLETED", 60,
             what="已结束的作业重新运行一次")  # fmt: skip
    # 默认同 Slurm（JobFileAppend=0）：每次运行都截断
    assert (tmp_path / "out.txt").read_text() == "run 1\n"
    # 排队中的作业不能重新排队：409，带 Slurm 的原文
    held = _job(service, "true\n", tmp_path, hold=True)
    resp = service.client.post(f"/jobs/{held}/requeue")
    assert resp.status_code == 409
    assert "Job is pending execution" in resp.json()["detail"]
    assert service.client.post("/jobs/999999999/requeue").status_code == 404
    service.client.post(f"/jobs/cancel/{held}")


def test_signal_batch_reaches_batch_shell_trap_before_limit(
    service: Service, tmp_path: Path
) -> None:
    """--signal=B:USR1@58、时限 1 分钟：约 2 秒后批处理 shell 的 trap 收到，后台子进程收不到。"""
    script = (
        "trap 'echo batch got USR1; kill $child; exit 0' USR1\n"
        "bash -c 'trap \"echo child got USR1\" USR1; while true; do sleep 0.1; done' &\n"
        "child=$!\n"
        "while true; do sleep 0.1; done\n"
    )
    job = _job(service, script, tmp_path, signal="B:USR1@58", time_limit="1")
    service.wait_state(job, "COMPLETED", timeout=60)
    out = (tmp_path / "out.txt").read_text()
    assert "batch got USR1" in out and "child got USR1" not in out, out
    assert service.query(job)["detail"]["signal"] == "B:USR1@58"


def test_signal_steps_reaches_srun_tasks_not_batch_nor_srun(
    service: Service, tmp_path: Path
) -> None:
    """--signal=USR1@58：发给作业步的任务（其 trap 收到），不发给批处理 shell，也不发给 srun（srun 正常返回）。"""
    script = (
        "trap 'echo batch got USR1' USR1\n"
        'srun -n 2 bash -c \'trap "echo task $SLURM_PROCID got USR1; exit 0" USR1; '
        "while true; do sleep 0.1; done'\n"
        "echo srun rc=$?\n"
    )
    job = _job(service, script, tmp_path, signal="USR1@58", time_limit="1", ntasks_per_node=2)
    service.wait_state(job, "COMPLETED", timeout=60)
    out = (tmp_path / "out.txt").read_text()
    assert "task 0 got USR1" in out and "task 1 got USR1" in out, out
    assert "srun rc=0" in out and "batch got USR1" not in out, out


def test_post_signal_steps_batch_and_not_running(service: Service, tmp_path: Path) -> None:
    script = (
        "trap 'echo batch got USR1; exit 0' USR1\n"
        'srun bash -c \'trap "echo task got USR2; exit 0" USR2; echo ready; '
        "while true; do sleep 0.1; done'\n"
        "echo step done\n"
        "while true; do sleep 0.1; done\n"
    )
    job = _job(service, script, tmp_path)
    _wait_file(tmp_path / "out.txt", "ready")
    resp = service.client.post(f"/jobs/{job}/signal", json={"signal": "SIGUSR2"})
    assert resp.status_code == 200, resp.text
    _wait_file(tmp_path / "out.txt", "step done")
    assert "task got USR2" in (tmp_path / "out.txt").read_text()
    assert service.state(job) == "RUNNING"  # 发信号不取消作业
    resp = service.client.post(f"/jobs/{job}/signal", json={"signal": 10, "batch": True})
    assert resp.status_code == 200, resp.text
    service.wait_state(job, "COMPLETED")
    assert "batch got USR1" in (tmp_path / "out.txt").read_text()
    # 不在运行：409（Slurm 的原文）；信号写错：422
    resp = service.client.post(f"/jobs/{job}/signal", json={"signal": "USR1"})
    assert resp.status_code == 409 and "already completing or completed" in resp.json()["detail"]
    assert service.client.post(f"/jobs/{job}/signal", json={"signal": "NOPE"}).status_code == 422


def test_list_by_job_ids_and_users_with_slurm_fields(service: Service, tmp_path: Path) -> None:
    """GET /jobs?job_id=…&user=…（squeue -j / -u）：数组主作业号列出全部任务，12_3 只列那一个；
    每行带 Slurm 命令要的字段。"""
    master = _job(service, "true\n", tmp_path, array="0-2", hold=True, signal="B:USR1@30")
    single = _job(service, "true\n", tmp_path, hold=True, requeue=True, time_limit="1:30")
    me = getpass.getuser()

    def ids(**params: object) -> list[int]:
        resp = service.client.get("/jobs", params=params)
        assert resp.status_code == 200, resp.text
        return sorted(j["job_id"] for j in resp.json()["jobs"])

    assert ids(job_id=str(master)) == [master, master + 1, master + 2]
    assert ids(job_id=f"{master}_1") == [master + 1]
    assert ids(job_id=[f"{master}_2", str(single)]) == [master + 2, single]
    assert ids(job_id=str(single), user=me) == [single]
    assert ids(job_id=str(single), user="no-such-user") == []
    row = service.client.get("/jobs", params={"job_id": str(single)}).json()["jobs"][0]
    assert (row["user"], row["requeue"], row["held"], row["time_limit_seconds"]) == (
        me,
        True,
        True,
        90,
    )
    assert (row["restarts"], row["batch_host"], row["work_dir"]) == (0, None, str(tmp_path))
    assert row["stdout_path"] == str(tmp_path / "out.txt")
    task = service.client.get("/jobs", params={"job_id": f"{master}_0"}).json()["jobs"][0]
    assert task["signal"] == "B:USR1@30"
    assert service.query(single)["detail"]["unix_user"] == me
    for j in (master, single):
        service.client.post(f"/jobs/cancel/{j}")


def test_bad_submission_fields_are_422_naming_the_field(service: Service) -> None:
    for field, value in (("signal", "R:USR1@5"), ("open_mode", "overwrite"), ("signal", "USR1@x")):
        resp = service.client.post(
            "/jobs/submit",
            json={
                "job": {
                    "account": "a",
                    "current_working_directory": "/tmp",
                    "standard_output": "o",
                    "standard_error": "e",
                    "name": "n",
                    "partition": "default",
                    field: value,
                },
                "script": "true\n",
            },
        )
        assert resp.status_code == 422, resp.text
        assert f"job.{field}" in resp.text


@pytest.fixture
def extra_node(service: Service, ray_cluster: Cluster) -> Iterator[list[object]]:
    added: list[object] = []
    yield added
    for node in added:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)


def _add(service: Service, cluster: Cluster, name: str, added: list[object]) -> object:
    node = cluster.add_node(num_cpus=2, labels={NAME_LABEL: name})
    added.append(node)
    wait_for(lambda: node.node_id in service.scheduler_status()["agents"], 60,
             what=f"节点 {name} 的代理就绪")  # fmt: skip
    return node


def test_requeue_gang_job_is_requeued_when_its_node_fails(
    service: Service, ray_cluster: Cluster, extra_node: list[object], tmp_path: Path
) -> None:
    """--requeue 的多节点作业失去节点：不以 NODE_FAIL 结束，而是回到队列（重启次数 1、资源归还），
    同名节点回来后从头再运行一次，SLURM_RESTART_COUNT=1。"""
    node = _add(service, ray_cluster, "rq-extra", extra_node)
    script = (
        "echo run $SLURM_RESTART_COUNT >> runs.txt\n"
        'if [ "$SLURM_RESTART_COUNT" = 0 ]; then srun bash -c \'echo up > up-$SLURM_PROCID; '
        "exec sleep 300'; fi\n"
    )
    job = _job(service, script, tmp_path, nodes=2, required_nodes=["rq-extra"], requeue=True)
    wait_for(lambda: (tmp_path / "up-0").exists() and (tmp_path / "up-1").exists(), 60,
             what=lambda: f"两个节点上的任务都已启动：{service.row(job)} {list(tmp_path.iterdir())}")  # fmt: skip
    with service.engine.connect() as conn:
        token = conn.execute(
            text("SELECT token FROM jobs WHERE id = :id"), {"id": job}
        ).scalar_one()
    try:
        ray_cluster.remove_node(node)
        wait_for(lambda: _restarts(service, job) == 1, 60, what="作业自动重新排队")
        assert service.state(job) in ("PENDING", "RUNNING")
        assert service.state(job) != "NODE_FAIL"
        wait_for(lambda: service.held_cpus() == 0, 30, what="旧执行的资源归还")
        assert "重新排队" in (service.row(job)["error_msg"] or "")
    finally:
        kill_job_tree(token, grace=0)  # 被移除的“节点”与测试同机：它的任务进程由这里清理
    _add(service, ray_cluster, "rq-extra", extra_node)
    service.wait_state(job, "COMPLETED", timeout=90)
    assert (tmp_path / "runs.txt").read_text() == "run 0\nrun 1\n"
    assert service.query(job)["detail"]["restarts"] == 1
