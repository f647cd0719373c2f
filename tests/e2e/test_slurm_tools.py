"""验收：原样运行 registry 上真实的 Slurm 客户端工具——submitit 的 SlurmExecutor 与
dask-jobqueue 的 SLURMCluster——对着真实的 `conductor serve`（内嵌 PostgreSQL + 本地 Ray）。

工具不做任何修改、不打补丁：它们在 PATH 上找到的 `sbatch sacct scancel scontrol srun`
就是本虚拟环境 bin 目录里 Conductor 的替身命令。服务地址取 CONDUCTOR_URL，令牌取
`~/.config/conductor/token`（HOME 指向 serve 第一次启动时写入令牌的那个目录），和本机用户一样。
各工具依赖的命令、选项与输出格式见 docs/slurm-tools-findings.md。
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import submitit
from dask_jobqueue import SLURMCluster
from distributed import Client

from harness.serve import ServeProcess
from harness.waiting import wait_for
from tests.e2e import slurm_tools_jobs as jobs

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """本模块共用一个 `conductor serve`；测试进程（及工具启动的命令）的环境像本机用户的一样。"""
    tmp = tmp_path_factory.mktemp("slurm-tools")
    server = ServeProcess(tmp, tmp / "data", "--num-cpus", "4")
    try:
        server.wait_healthy()
        with pytest.MonkeyPatch.context() as mp:
            for name in [k for k in os.environ if k.startswith("CONDUCTOR_")]:
                mp.delenv(name)
            mp.setenv("HOME", str(server.home))  # 令牌文件：~/.config/conductor/token
            mp.setenv("CONDUCTOR_URL", server.url)
            mp.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
            # 提交者环境里的普通变量（不以 SLURM_ 开头：那些是 sbatch 的输入选项）：默认 --export=ALL，作业里应看得到它
            mp.setenv("SUBMIT_SIDE_MARK", "from-submitter")
            yield server
        assert server.stop() == 0, server.log_tail()
    finally:
        server.cleanup()


def _require(*commands: str) -> None:
    """工具按名字在 PATH 上找命令：必须找到的是本环境里 Conductor 的替身，而不是别的。"""
    for name in commands:
        found = shutil.which(name)
        assert found == str(BIN / name), f"PATH 上的 {name} 应为 {BIN / name}，实际为 {found}"


def _rest_state(serve: ServeProcess, job_id: str) -> str:
    try:
        return str(serve.query(job_id).get("state", ""))
    except httpx.HTTPError:
        return ""


def _sacct_state(job: submitit.Job) -> str:
    """强制 submitit 立刻调用一次 sacct，返回它解析出的 State。"""
    return str(job.get_info(mode="force").get("State", ""))


def _wait_ended(serve: ServeProcess, job: submitit.Job, state: str = "COMPLETED") -> None:
    """结果文件在任务退出前就写好了（Slurm 上也一样）：等 sacct 与 REST 都报告终态再断言。"""
    wait_for(
        lambda: _sacct_state(job) == state,
        120,
        interval=1,
        what=lambda: f"sacct 报告作业 {job.job_id} 为 {state}（当前 {job.state!r}）",
    )
    assert _rest_state(serve, job.job_id) == state


def _wait_done(job: submitit.Job, timeout: float) -> None:
    """等 submitit 认为作业结束（结果文件出现，或 sacct 报告终态）。"""
    wait_for(
        job.done,
        timeout,
        interval=1,
        what=lambda: (
            f"submitit 作业 {job.job_id} 结束（sacct 状态 {job.state}）\n"
            f"stdout:\n{job.stdout()}\nstderr:\n{job.stderr()}"
        ),
    )


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _executor(folder: Path, **params: object) -> submitit.SlurmExecutor:
    _require("srun", "sbatch", "sacct", "scancel", "scontrol")
    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**params)
    return executor


@pytest.mark.timeout(600)
def test_submitit_submit_returns_results(
    serve: ServeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # 像用户一样在项目目录里提交（作业的工作目录即此）
    executor = _executor(tmp_path / "submitit", time=5, cpus_per_task=1, mem="1GB")
    job = executor.submit(jobs.add, 2, 3)
    who = executor.submit(jobs.job_identity)
    for j in (job, who):
        _wait_done(j, 300)
    assert job.result() == 5
    identity = who.result()
    assert {k: v for k, v in identity.items() if k != "mark"} == {
        "job_id": who.job_id,
        "global_rank": 0,
        "num_tasks": 1,
        "executor": "slurm",
    }
    for j in (job, who):
        _wait_ended(serve, j)  # 真是 Conductor 的作业
    body = serve.query(job.job_id)
    assert body["detail"]["job_name"] == "submitit"
    assert body["detail"]["allocated_cpus"] == 1
    # 作业的日志写在 submitit 指定的 --output（%j_0_log.out）里，且里面有 submitit 的启动日志
    assert "Starting with JobEnvironment" in (job.stdout() or "")
    # sbatch 默认 --export=ALL：提交者环境里的变量在作业里可见（submitit 自己也靠它，
    # 例如 SUBMITIT_PREEMPT_SIGNAL 须在提交端与作业里一致）
    assert identity["mark"] == "from-submitter"


@pytest.mark.timeout(600)
def test_submitit_map_array(
    serve: ServeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # 像用户一样在项目目录里提交（作业的工作目录即此）
    executor = _executor(tmp_path / "submitit", time=5, cpus_per_task=1, array_parallelism=2)
    array = executor.map_array(jobs.square_with_index, [1, 2, 3])
    assert len({j.job_id.split("_")[0] for j in array}) == 1  # 一次 sbatch --array=0-2%2
    assert [j.job_id.split("_")[1] for j in array] == ["0", "1", "2"]
    for j in array:
        _wait_done(j, 300)
    assert [j.result() for j in array] == [(1, "0"), (4, "1"), (9, "2")]
    for j in array:
        _wait_ended(serve, j)


@pytest.mark.timeout(600)
def test_submitit_cancel_reports_cancelled(
    serve: ServeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # 像用户一样在项目目录里提交（作业的工作目录即此）
    executor = _executor(tmp_path / "submitit", time=10, cpus_per_task=1)
    marker = tmp_path / "started"
    job = executor.submit(jobs.mark_and_sleep, str(marker), 600)
    wait_for(
        marker.exists,
        300,
        interval=0.5,
        what=lambda: f"作业 {job.job_id} 开始运行（sacct 状态 {job.state}）\n{job.stderr()}",
    )
    assert marker.read_text() == job.job_id
    assert _sacct_state(job) == "RUNNING"
    job.cancel()  # scancel <id>，退出码须为 0
    wait_for(
        lambda: _sacct_state(job).startswith("CANCELLED"),
        120,
        interval=1,
        what=lambda: f"sacct 报告作业 {job.job_id} 已取消（当前 {job.state!r}）",
    )
    assert job.state.split()[0] == "CANCELLED"  # Slurm 为 “CANCELLED by <uid>”
    assert job.done()
    wait_for(lambda: _rest_state(serve, job.job_id) == "CANCELLED", 60, what="REST 报告已取消")


@pytest.mark.timeout(900)
def test_submitit_checkpointable_is_requeued_on_signal(
    serve: ServeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """限时 1 分钟、--signal=USR2@40：第一次运行约 20 秒后收到 USR2，submitit 做检查点并
    `scontrol requeue` 自己；重新排队后第二次运行完成，result() 得到第二次运行的返回值。"""
    monkeypatch.chdir(ROOT)  # 像用户一样在项目目录里提交（作业的工作目录即此）
    executor = _executor(tmp_path / "submitit", time=1, cpus_per_task=1, signal_delay_s=40)
    runs = tmp_path / "runs.txt"
    job = executor.submit(jobs.ResumableCount(), str(runs))
    _wait_done(job, 600)
    assert job.result() == 2, runs.read_text() if runs.exists() else "没有运行记录"
    lines = [line.split(" ") for line in runs.read_text().splitlines()]
    assert lines == [[job.job_id, "0"], [job.job_id, "1"]]  # 同一作业号，SLURM_RESTART_COUNT 0 → 1
    _wait_ended(serve, job)
    # --open-mode=append：重新排队后的运行接着写同一个日志，第一次运行的日志还在
    stdout = job.stdout() or ""
    assert stdout.count("Starting with JobEnvironment") == 2, stdout


@pytest.mark.timeout(600)
def test_dask_jobqueue_slurm_cluster(
    serve: ServeProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require("sbatch", "scancel")
    monkeypatch.chdir(ROOT)  # 像用户一样在项目目录里提交（作业的工作目录即此）
    cluster = SLURMCluster(
        cores=1,
        memory="1GB",
        processes=1,
        walltime="00:10:00",
        log_directory=str(tmp_path / "logs"),
        scheduler_options={"dashboard_address": ":0"},  # 与同机的其他测试会话不争 8787
    )
    job_ids: list[str] = []
    try:
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=300)
            job_ids = [str(job.job_id) for job in cluster.workers.values()]
            assert len(job_ids) == 2
            assert [_rest_state(serve, j) for j in job_ids] == ["RUNNING", "RUNNING"]
            assert client.submit(jobs.inc, 1).result(timeout=120) == 2
            assert client.gather(client.map(jobs.inc, range(10))) == list(range(1, 11))
            seen = client.run(os.getenv, "SLURM_JOB_ID")  # 每个 worker 在各自的作业里
            assert sorted(seen.values()) == sorted(job_ids)
            # -e <log_directory>/dask-worker-%J.err：批处理脚本的 %J 即作业号，worker 的日志写在那里
            for j in job_ids:
                err = tmp_path / "logs" / f"dask-worker-{j}.err"
                wait_for(
                    lambda e=err: e.exists() and "Start worker" in e.read_text(),
                    60,
                    what=lambda e=err: (
                        f"{e} 里有 worker 的启动日志；logs 目录：{_listing(tmp_path)}"
                    ),
                )
    finally:
        cluster.close()  # 对每个作业 scancel <id>
    wait_for(
        lambda: all(_rest_state(serve, j) in FINISHED for j in job_ids),
        120,
        what=lambda: f"dask 关闭后作业结束：{[(j, _rest_state(serve, j)) for j in job_ids]}",
    )
    assert [_rest_state(serve, j) for j in job_ids] == ["CANCELLED", "CANCELLED"]
    board = httpx.get(f"{serve.url}/dashboard", headers=serve.headers, timeout=30).json()
    active = {str(j["job_id"]) for j in board["running_jobs"] + board["pending_jobs"]}
    assert not active & set(job_ids), board
