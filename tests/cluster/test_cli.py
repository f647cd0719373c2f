"""真实的 `conductor` 命令（子进程）对真实的 HTTP 服务：submit（#SBATCH）、history、cancel、logs、info。"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from harness.serve import CONDUCTOR, cli, free_port
from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service
from tests.cluster.live_api import LiveApi


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[LiveApi]:
    live = LiveApi(service)
    yield live
    live.close()


def _job_count(service: Service) -> int:
    with service.engine.connect() as conn:
        return conn.execute(text("SELECT COUNT(*) FROM jobs")).scalar_one()


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("错误："), proc.stderr
    return lines[0]


SLURM_SCRIPT = """#!/bin/bash
#SBATCH --job-name=from_directive
#SBATCH -A slurm_acct
#SBATCH --cpus-per-task=2
#SBATCH -t 0:05:00
#SBATCH --mem=200M
#SBATCH -o out-%j.log
#SBATCH -e err-%x-%j.log
#SBATCH --export=GREETING=bonjour
#SBATCH --nodes=1
#SBATCH --mail-type=END

echo "job $SLURM_JOB_ID says $GREETING with $SLURM_CPUS_PER_TASK cpus"
echo "to stderr" >&2
"""


def test_existing_slurm_script_runs_unchanged_and_cli_overrides(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    script = tmp_path / "job.sh"
    script.write_text(SLURM_SCRIPT)
    work = tmp_path / "work"
    proc = cli(api.url, "submit", str(script), "-J", "from_cli", "-D", str(work), "--parsable")
    assert proc.returncode == 0, proc.stderr
    # --parsable：只输出作业 ID
    assert proc.stdout.strip().isdigit() and proc.stdout.count("\n") == 1, proc.stdout
    job_id = int(proc.stdout)
    body = service.wait_state(job_id, "COMPLETED")
    detail = body["detail"]
    assert detail["job_name"] == "from_cli"  # 命令行覆盖 #SBATCH
    assert detail["account"] == "slurm_acct"
    assert detail["allocated_cpus"] == 2
    assert body["time"]["limit_time"] == "0:05:00"
    assert detail["work_dir"] == str(work)
    # %j/%x 在服务端展开
    assert (work / f"out-{job_id}.log").read_text() == f"job {job_id} says bonjour with 2 cpus\n"
    assert (work / f"err-from_cli-{job_id}.log").read_text() == "to stderr\n"


def test_default_output_is_slurm_jobid_out(service: Service, api: LiveApi, tmp_path: Path) -> None:
    script = tmp_path / "plain.sh"
    script.write_text("#!/bin/bash\necho out\necho err >&2\n")
    proc = subprocess.run(
        [CONDUCTOR, "submit", str(script), "--url", api.url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = int(json.loads(proc.stdout)["job_id"])
    body = service.wait_state(job_id, "COMPLETED")
    assert body["detail"]["job_name"] == "plain.sh"
    # 同 sbatch：stdout 与 stderr 默认写同一个 slurm-<id>.out，在提交时的当前目录
    assert sorted((tmp_path / f"slurm-{job_id}.out").read_text().split()) == ["err", "out"]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("#!/bin/bash\n#SBATCH --cpus-per-task=many\necho\n", [], "--cpus-per-task 应为整数"),
        ("#!/bin/bash\n#SBATCH --frobnicate\necho\n", [], "不认识的选项"),
        ("#!/bin/bash\necho\n", ["--export", "NOT_SET_ANYWHERE_X"], "不存在"),
    ],
)
def test_bad_directive_is_one_line_usage_error_and_nothing_stored(
    service: Service, api: LiveApi, tmp_path: Path, script: str, args: list[str], message: str
) -> None:
    path = tmp_path / "bad.sh"
    path.write_text(script)
    before = _job_count(service)
    proc = cli(api.url, "submit", str(path), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in _one_line_error(proc)
    assert _job_count(service) == before


def test_rejected_by_server_exits_1_and_unreachable_exits_3(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    script = tmp_path / "big.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH -c {CLUSTER_CPUS * 100}\necho\n")
    proc = cli(api.url, "submit", str(script))
    assert proc.returncode == 1
    assert "中任何节点的容量" in _one_line_error(proc)
    proc = cli(api.url, "logs", "999999")
    assert proc.returncode == 1 and "不存在" in _one_line_error(proc)
    proc = cli(f"http://127.0.0.1:{free_port()}", "info")
    assert proc.returncode == 3 and "无法连接" in _one_line_error(proc)
    usage = subprocess.run([CONDUCTOR, "--help"], capture_output=True, text=True, timeout=60)
    assert "退出码" in usage.stdout  # 退出码的含义写在 --help 里


def test_cancel_several_reports_each_and_fails_if_any_failed(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    first = service.submit("sleep 300", current_working_directory=str(tmp_path))
    second = service.submit("sleep 300", current_working_directory=str(tmp_path))
    service.wait_state(first, "RUNNING")
    proc = cli(api.url, "cancel", str(first), str(second), "999999")
    assert proc.returncode == 1
    assert f"{first}：作业 {first} 已取消" in proc.stdout
    assert f"{second}：作业 {second} 已取消" in proc.stdout
    assert "999999：错误：" in proc.stderr and "不存在" in proc.stderr
    service.wait_state(first, "CANCELLED")
    assert service.state(second) == "CANCELLED"
    # 全部成功（含幂等的重复取消）时退出码 0，--json 给出逐个结果
    proc = cli(api.url, "cancel", str(first), str(second), "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["ok"] for r in json.loads(proc.stdout)] == [True, True]


def test_logs_follow_streams_until_the_job_ends(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job_id = service.submit(
        f"echo first; echo oops >&2; while [ ! -e {gate} ]; do sleep 0.05; done; echo last",
        current_working_directory=str(tmp_path),
        standard_output=f"follow-{tmp_path.name}.out",
    )
    follower = subprocess.Popen(
        [CONDUCTOR, "logs", str(job_id), "-f", "--url", api.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # 后台启动的测试（如 `setsid … &`）继承了被忽略的 SIGINT；像终端里那样恢复默认
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert follower.stdout is not None
        # 作业还在运行时就已输出了第一行
        assert follower.stdout.readline() == "first\n"
        assert follower.poll() is None
        gate.touch()
        rest, errors = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, errors
    assert rest == "last\n"
    assert f"作业 {job_id} 已结束：COMPLETED" in errors
    proc = cli(api.url, "logs", str(job_id), "--stderr")
    assert proc.returncode == 0 and proc.stdout == "oops\n"


def test_history_filters_and_shows_exit_codes(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    account = f"hist_{tmp_path.name[-6:]}"
    ok = service.submit("true", account=account, current_working_directory=str(tmp_path))
    bad = service.submit("exit 3", account=account, current_working_directory=str(tmp_path))
    service.wait_state(ok, "COMPLETED")
    service.wait_state(bad, "FAILED")
    proc = cli(api.url, "history", "-A", account, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {j["job_id"]: j for j in json.loads(proc.stdout)["jobs"]}
    assert set(rows) == {ok, bad}
    assert (rows[ok]["exit_code"], rows[bad]["exit_code"]) == ("0:0", "3:0")
    assert all(r["start_time"] and r["end_time"] for r in rows.values())
    proc = cli(api.url, "history", "-A", account, "--state", "failed", "--json")
    assert [j["job_id"] for j in json.loads(proc.stdout)["jobs"]] == [bad]
    table = cli(api.url, "history", "-A", account)
    assert table.returncode == 0 and "3:0" in table.stdout and "FAILED" in table.stdout


def test_info_shows_nodes_and_cpus(service: Service, api: LiveApi) -> None:
    proc = cli(api.url, "info", "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    alive = [n for n in body["nodes"] if n["available"]]
    assert sum(n["total_cpus"] for n in alive) == body["resources"]["total_cpus"] >= CLUSTER_CPUS
    assert "dashboard_url" in body
    table = cli(api.url, "info")
    assert table.returncode == 0
    assert "CPU 空闲/总数" in table.stdout and "Ray 仪表盘" in table.stdout
    assert alive[0]["node_name"] in table.stdout


def test_logs_api_offsets_and_follow(service: Service, api: LiveApi, tmp_path: Path) -> None:
    job_id = service.submit("printf 'abcdef'", current_working_directory=str(tmp_path))
    service.wait_state(job_id, "COMPLETED")
    resp = httpx.get(f"{api.url}/jobs/{job_id}/logs", params={"offset": 2})
    assert resp.status_code == 200 and resp.text == "cdef"
    assert resp.headers["X-Log-Offset"] == "6" and resp.headers["X-Job-State"] == "COMPLETED"
    resp = httpx.get(f"{api.url}/jobs/{job_id}/logs", params={"follow": "true", "offset": 4})
    assert resp.text == "ef"  # 终态且读完：流结束
    resp = httpx.get(f"{api.url}/jobs/{job_id}/logs", params={"stream": "bogus"})
    assert resp.status_code == 422 and "stream" in resp.json()["detail"]
    # 排队中被取消的作业：跟随立即结束，内容为空
    wait_for(lambda: service.held_cpus() == 0, 30)
    blocker = service.submit("sleep 300", cpus_per_task=CLUSTER_CPUS)
    queued = service.submit("echo never")
    service.wait_state(blocker, "RUNNING")
    service.client.post(f"/jobs/cancel/{queued}")
    resp = httpx.get(f"{api.url}/jobs/{queued}/logs", params={"follow": "true"}, timeout=30)
    assert resp.status_code == 200 and resp.text == ""
    service.client.post(f"/jobs/cancel/{blocker}")


def test_logs_follow_waits_while_pending(service: Service, api: LiveApi, tmp_path: Path) -> None:
    wait_for(lambda: service.held_cpus() == 0, 30)
    blocker = service.submit("sleep 300", cpus_per_task=CLUSTER_CPUS)
    service.wait_state(blocker, "RUNNING")
    queued = service.submit(
        "echo ran-after-wait", current_working_directory=str(tmp_path), standard_output="q.out"
    )
    proc = cli(api.url, "logs", str(queued))
    assert proc.returncode == 0 and proc.stdout == "" and "仍在排队" in proc.stderr
    follower = subprocess.Popen(
        [CONDUCTOR, "logs", str(queued), "-f", "--url", api.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert service.state(queued) == "PENDING"
        service.client.post(f"/jobs/cancel/{blocker}")
        out, errors = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, errors
    assert out == "ran-after-wait\n"
    assert f"作业 {queued} 已结束：COMPLETED" in errors


def test_ctrl_c_stops_following_but_not_the_job(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    job_id = service.submit(
        "echo started; sleep 300", current_working_directory=str(tmp_path), standard_output="c.out"
    )
    follower = subprocess.Popen(
        [CONDUCTOR, "logs", str(job_id), "-f", "--url", api.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # 后台启动的测试（如 `setsid … &`）继承了被忽略的 SIGINT；像终端里那样恢复默认
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "started\n"
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 130
    assert service.state(job_id) == "RUNNING"
    service.client.post(f"/jobs/cancel/{job_id}")


def test_array_dependency_priority_and_hold_directives(
    service: Service, api: LiveApi, tmp_path: Path
) -> None:
    """调度相关的 #SBATCH 指令经 CLI 一路生效；数组任务可用 12_3 引用。"""
    first = tmp_path / "array.sh"
    first.write_text(
        "#!/bin/bash\n#SBATCH --array=0-2%1\n#SBATCH -o arr-%A_%a.out\n"
        "echo task $SLURM_ARRAY_TASK_ID\n"
    )
    proc = cli(api.url, "submit", str(first), "-D", str(tmp_path), "--parsable")
    assert proc.returncode == 0, proc.stderr
    array_id = int(proc.stdout)
    second = tmp_path / "after.sh"
    second.write_text(
        f"#!/bin/bash\n#SBATCH --dependency=afterok:{array_id}\n#SBATCH --hold\n"
        "#SBATCH --priority=5\necho after\n"
    )
    proc = cli(api.url, "submit", str(second), "-D", str(tmp_path), "--parsable")
    assert proc.returncode == 0, proc.stderr
    after = int(proc.stdout)
    body = service.query(after)
    assert body["state_reason"] == "JobHeldUser"
    assert body["detail"]["dependency"] == f"afterok:{array_id}"
    assert body["detail"]["priority"] == 5
    for task in service.query(array_id)["array_tasks"]:
        service.wait_state(task["job_id"], "COMPLETED")
    for i in range(3):
        assert (tmp_path / f"arr-{array_id}_{i}.out").read_text() == f"task {i}\n"
    proc = cli(api.url, "query", f"{array_id}_1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["detail"]["array_task_id"] == 1
    assert service.client.post(f"/jobs/{after}/release").status_code == 200
    service.wait_state(after, "COMPLETED")


def test_names_are_shown_literally(service: Service, api: LiveApi, tmp_path: Path) -> None:
    """作业名、账户与错误消息里的用户输入原样显示：`[/x]` 原来让 conductor queue 因 Rich 标记崩溃。"""
    account = "[lit]"
    names = ["[/x]", "[bold]b"]
    ids = [
        service.submit(
            "true", account=account, name=n, hold=True, current_working_directory=str(tmp_path)
        )
        for n in names
    ]
    try:
        for args in (("queue", "-A", account), ("history", "-A", account)):
            proc = cli(api.url, *args)
            assert proc.returncode == 0, proc.stderr
            for text_ in (*names, account):
                assert text_ in proc.stdout, proc.stdout
        proc = cli(api.url, "query", str(ids[0]))
        assert proc.returncode == 0, proc.stderr
        assert "[/x]" in proc.stdout and account in proc.stdout
        # 服务的错误消息里带着用户写的东西（无效的作业号）：同样原样显示，仍是一行
        proc = cli(api.url, "query", "[bold]x")
        assert proc.returncode == 1, proc.stderr
        assert "[bold]x" in _one_line_error(proc)
        proc = cli(api.url, "cancel", "[bold]x")
        assert proc.returncode == 1 and "[bold]x" in proc.stderr, proc.stderr
    finally:
        for job_id in ids:
            service.client.post(f"/jobs/cancel/{job_id}")
