"""真实的 Slurm 替身命令（子进程，PATH 里是本 venv 的 bin）对真实的 HTTP 服务、Ray 与 PostgreSQL：
sbatch、squeue、scancel、sacct、sinfo、scontrol，以及议题里的 shell 流水线原样运行。"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.routes.jobs import service_user
from cluster import service_url
from harness.waiting import wait_for
from tests.cluster.conftest import Service
from tests.cluster.live_api import LiveApi

BIN = str(Path(sys.executable).parent)

# 测试里的账户都没有映射到 Unix 用户：作业以服务自身的用户运行，squeue 的 USER 即它
OWNER = service_user()


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[LiveApi]:
    live = LiveApi(service)
    # 作业里的命令经 CONDUCTOR_URL 找到服务（serve 启动时登记；这里的 API 在测试进程里）
    service_url.publish(live.url, service.settings.namespace)
    yield live
    live.close()


@pytest.fixture
def user() -> str:
    """每个测试一个用户名（即默认账户）：squeue --me、sacct 的默认用户只看到本测试的作业。"""
    return f"u{uuid.uuid4().hex[:8]}"


def run(
    api: LiveApi,
    user: str,
    *argv: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env |= {"PATH": f"{BIN}:{env.get('PATH', '')}", "CONDUCTOR_URL": api.url, "USER": user}
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        input=stdin,
    )


def submitted(proc: subprocess.CompletedProcess[str]) -> int:
    assert proc.returncode == 0, proc.stderr
    match = re.fullmatch(r"Submitted batch job (\d+)\n", proc.stdout)
    assert match, proc.stdout
    return int(match[1])


def parsable(proc: subprocess.CompletedProcess[str]) -> int:
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"\d+\n", proc.stdout), proc.stdout
    return int(proc.stdout)


def test_sbatch_file_stdin_and_wrap(
    service: Service, api: LiveApi, user: str, tmp_path: Path
) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/bash\n#SBATCH --mem=100M\necho hello from $SLURM_JOB_NAME\n")
    from_file = submitted(run(api, user, "sbatch", str(script), cwd=tmp_path))
    from_stdin = parsable(
        run(
            api,
            user,
            "sbatch",
            "--parsable",
            "--mem=100M",
            cwd=tmp_path,
            stdin="#!/bin/sh\necho in\n",
        )
    )
    wrapped = parsable(
        run(
            api,
            user,
            "sbatch",
            "--parsable",
            "--mem",
            "100M",
            "--wrap",
            "echo wrapped",
            cwd=tmp_path,
        )
    )
    # 脚本之后的参数传给脚本（含空格的保持一个参数）
    args = tmp_path / "args.sh"
    args.write_text('#!/bin/bash\necho "$#|$1|$2"\n')
    with_args = parsable(
        run(api, user, "sbatch", "--parsable", "--mem=100M", str(args), "a b", "-J", cwd=tmp_path)
    )
    for job in (from_file, from_stdin, wrapped, with_args):
        service.wait_state(job, "COMPLETED")
    assert (tmp_path / f"slurm-{with_args}.out").read_text() == "2|a b|-J\n"
    # 默认输出 slurm-%j.out 在提交时的当前目录；默认作业名：文件名、sbatch、wrap（同 Slurm）
    assert (tmp_path / f"slurm-{from_file}.out").read_text() == "hello from hello.sh\n"
    assert (tmp_path / f"slurm-{from_stdin}.out").read_text() == "in\n"
    assert (tmp_path / f"slurm-{wrapped}.out").read_text() == "wrapped\n"
    names = run(api, user, "sacct", "-X", "-n", "-P", "-o", "JobID,JobName")
    assert names.stdout == (
        f"{from_file}|hello.sh\n{from_stdin}|sbatch\n{wrapped}|wrap\n{with_args}|args.sh\n"
    )


def test_sbatch_errors_are_slurm_shaped_and_submit_nothing(
    api: LiveApi, user: str, tmp_path: Path
) -> None:
    bad = run(api, user, "sbatch", cwd=tmp_path, stdin="echo no shebang\n")
    assert bad.returncode == 1
    assert bad.stderr.startswith("sbatch: error: This does not look like a batch script.")
    missing = run(api, user, "sbatch", "nope.sh", cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (
        1,
        "sbatch: error: Unable to open file nope.sh\n",
    )
    unknown = run(api, user, "sbatch", "--frobnicate", "--wrap", "true")
    assert unknown.returncode == 1 and unknown.stderr.startswith("sbatch: error: 不认识的选项")
    test_only = run(api, user, "sbatch", "--test-only", "-c", "2", "--wrap", "true")
    assert test_only.returncode == 0, test_only.stderr
    assert re.match(
        r"sbatch: Job 0 to start at \S+ using 2 processors on nodes \(null\) in partition default\n",
        test_only.stderr,
    )
    assert run(api, user, "sacct", "-n", "-X").stdout == ""  # 什么也没有提交


def test_sbatch_wait_exits_with_the_jobs_exit_code(api: LiveApi, user: str, tmp_path: Path) -> None:
    proc = run(api, user, "sbatch", "-W", "--mem=100M", "--wrap", "exit 3", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    job = submitted(subprocess.CompletedProcess([], 0, proc.stdout, ""))
    ok = run(
        api, user, "sbatch", "--parsable", "--wait", "--mem=100M", "--wrap", "true", cwd=tmp_path
    )
    assert ok.returncode == 0
    sacct = run(api, user, "sacct", "-j", str(job), "-o", "JobID,State,ExitCode", "-P")
    assert sacct.stdout == f"JobID|State|ExitCode\n{job}|FAILED|3:0\n{job}.batch|FAILED|3:0\n"


def test_hold_update_show_release_squeue_and_cancel(
    service: Service, api: LiveApi, user: str, tmp_path: Path
) -> None:
    job = parsable(
        run(
            api,
            user,
            "sbatch",
            "--parsable",
            "-H",
            "-J",
            "held",
            "--mem=100M",
            "--wrap",
            "sleep 300",
            cwd=tmp_path,
        )
    )
    row = run(api, user, "squeue", "-h", "-j", str(job), "-o", "%i %j %t %r %u")
    # USER 是运行作业的 Unix 用户：账户没有映射时即服务自身的用户
    assert row.stdout == f"{job} held PD JobHeldUser {OWNER}\n"
    upd = run(api, user, "scontrol", "update", f"JobId={job}", "TimeLimit=5", "Priority=7")
    assert upd.returncode == 0, upd.stderr
    show = run(api, user, "scontrol", "show", "job", str(job))
    assert show.returncode == 0, show.stderr
    assert show.stdout.startswith(f"JobId={job} JobName=held\n   UserId={OWNER}(")
    assert "\n   JobState=PENDING Reason=JobHeldUser Dependency=(null)\n" in show.stdout
    assert (
        "TimeLimit=00:05:00" in show.stdout and f"Priority=7 Nice=0 Account={user} " in show.stdout
    )
    assert f"\n   WorkDir={tmp_path}\n" in show.stdout and show.stdout.endswith("\n\n")
    every = run(api, user, "scontrol", "-o", "show", "job")
    assert any(ln.startswith(f"JobId={job} JobName=held ") for ln in every.stdout.splitlines())
    released = run(api, user, "scontrol", "release", str(job))
    assert released.returncode == 0, released.stderr
    service.wait_state(job, "RUNNING")
    running = run(api, user, "squeue", "--me", "-t", "R")
    header, line = running.stdout.splitlines()
    assert (
        header
        == "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)"
    )
    assert line.split()[:5] == [str(job), "default", "held", OWNER[:8], "R"]
    # 通过 conductor 子命令转交，参数照 Slurm 的语法
    via = run(api, user, "conductor", "squeue", "-h", "-j", str(job), "-O", "jobid:10,state:.8")
    assert via.stdout == f"{job:<10} RUNNING\n"
    assert run(api, user, "scancel", str(job)).returncode == 0
    service.wait_state(job, "CANCELLED")
    # sacct 同 Slurm 写明取消者的 uid（未映射的账户即服务自身的用户）
    state = run(api, user, "sacct", "-j", str(job), "-X", "-n", "-P", "-o", "State")
    assert state.stdout == f"CANCELLED by {os.getuid()}\n", state
    # 结束的作业不再出现在默认的 squeue 里
    assert run(api, user, "squeue", "-h", "--me").stdout == ""


def test_scancel_array_tasks_and_unknown_ids(
    service: Service, api: LiveApi, user: str, tmp_path: Path
) -> None:
    array = parsable(
        run(
            api,
            user,
            "sbatch",
            "--parsable",
            "-a",
            "0-2",
            "-H",
            "--mem=10M",
            "--wrap",
            "sleep 300",
            cwd=tmp_path,
        )
    )
    wrapped = parsable(
        run(
            api,
            user,
            "sbatch",
            "--parsable",
            "-a",
            "1-2",
            "--mem=10M",
            "--wrap",
            "echo $SLURM_ARRAY_TASK_ID",
            cwd=tmp_path,
        )
    )
    for task in (1, 2):
        # 作业数组的默认输出同 sbatch：slurm-%A_%a.out
        out = tmp_path / f"slurm-{wrapped}_{task}.out"
        wait_for(
            lambda out=out, task=task: out.exists() and out.read_text() == f"{task}\n",
            60,
            what="数组任务输出",
        )
    cancel = run(api, user, "scancel", f"{array}_[0-1]")
    assert cancel.returncode == 0, cancel.stderr
    states = run(api, user, "squeue", "-h", "-t", "all", "-o", "%i %T", "--me")
    assert sorted(ln for ln in states.stdout.splitlines() if ln.startswith(f"{array}_")) == [
        f"{array}_0 CANCELLED",
        f"{array}_1 CANCELLED",
        f"{array}_2 PENDING",
    ]
    unknown = run(api, user, "scancel", "999999", f"{array}_1")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "scancel: error: Kill job error on job id 999999: Invalid job id specified\n"
        f"scancel: error: Kill job error on job id {array}_1: Invalid job id specified\n"
    )
    assert run(api, user, "scancel", "--me").returncode == 0
    wait_for(lambda: run(api, user, "squeue", "-h", "--me").stdout == "", 30, what="数组取消完")
    missing = run(api, user, "scontrol", "show", "job", "999999")
    assert (missing.returncode, missing.stderr) == (
        1,
        "slurm_load_jobs error: Invalid job id specified\n",
    )
    gone = run(api, user, "squeue", "-j", "999999")
    assert (gone.returncode, gone.stderr) == (
        1,
        "slurm_load_jobs error: Invalid job id specified\n",
    )


def test_scancel_signal_reaches_the_scripts_trap(
    service: Service, api: LiveApi, user: str, tmp_path: Path
) -> None:
    script = tmp_path / "trap.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH --mem=100M\n"
        "trap 'echo got USR1; exit 0' USR1\necho ready\n"
        "for i in $(seq 600); do sleep 0.1; done\n"
    )
    job = parsable(run(api, user, "sbatch", "--parsable", str(script), cwd=tmp_path))
    out = tmp_path / f"slurm-{job}.out"
    wait_for(lambda: out.exists() and "ready" in out.read_text(), 60, what="脚本装好 trap")
    sent = run(api, user, "scancel", "--signal=USR1", "--batch", str(job))
    assert sent.returncode == 0, sent.stderr
    service.wait_state(job, "COMPLETED")
    assert out.read_text() == "ready\ngot USR1\n"


def test_sinfo_and_scontrol_show_node_partition(api: LiveApi, user: str) -> None:
    sinfo = run(api, user, "sinfo")
    assert sinfo.returncode == 0, sinfo.stderr
    lines = sinfo.stdout.splitlines()
    assert lines[0] == "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST"
    assert all(
        re.match(r"default\*\s+up\s+infinite\s+\d+\s+(idle|mix|alloc|down\*) \S+", ln)
        for ln in lines[1:]
    )
    nodes = run(api, user, "sinfo", "-h", "-N", "-o", "%N")
    name = nodes.stdout.split()[0]
    show = run(api, user, "scontrol", "show", "node", name)
    assert (
        show.stdout.startswith(f"NodeName={name} ") and "\n   Partitions=default \n" in show.stdout
    )
    part = run(api, user, "scontrol", "show", "partition")
    assert part.stdout.startswith("PartitionName=default\n") and "Default=YES" in part.stdout


def test_scontrol_requeue(service: Service, api: LiveApi, user: str, tmp_path: Path) -> None:
    job = parsable(
        run(api, user, "sbatch", "--parsable", "--mem=10M", "--wrap", "sleep 300", cwd=tmp_path)
    )
    service.wait_state(job, "RUNNING")
    proc = run(api, user, "scontrol", "requeue", str(job))
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: (
            run(api, user, "sacct", "-X", "-n", "-P", "-o", "Restarts", "-j", str(job)).stdout
            == "1\n"
        ),
        60,
        what="重新排队",
    )
    run(api, user, "scancel", str(job))


PIPELINE = """\
jid=$(sbatch --parsable a.sh)
sbatch --dependency=afterok:$jid b.sh
squeue --me
sacct -j $jid -o JobID,State,ExitCode,MaxRSS -P
"""


def test_issue_pipeline_runs_unchanged(
    service: Service, api: LiveApi, user: str, tmp_path: Path
) -> None:
    (tmp_path / "a.sh").write_text("#!/bin/bash\n#SBATCH --mem=100M\nsleep 2\necho a\n")
    (tmp_path / "b.sh").write_text("#!/bin/bash\n#SBATCH --mem=100M\necho b\n")
    proc = run(api, user, "bash", "-e", "-c", PIPELINE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    second = submitted(subprocess.CompletedProcess([], 0, lines[0] + "\n", ""))
    assert lines[1] == (
        "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)"
    )
    header = lines.index("JobID|State|ExitCode|MaxRSS")
    queued = {ln.split()[0]: ln.split() for ln in lines[2:header]}
    rows = [ln.split("|") for ln in lines[header + 1 :]]
    first = int(rows[0][0])
    assert [r[0] for r in rows[1:]] in ([], [f"{first}.batch"])  # 已开始运行时有批处理步
    assert set(queued) == {str(first), str(second)}
    assert queued[str(first)][2:4] == ["a.sh", OWNER[:8]]
    assert queued[str(second)][2:5] == ["b.sh", OWNER[:8], "PD"]
    assert queued[str(second)][-1] == "(Dependency)"
    service.wait_state(first, "COMPLETED")
    service.wait_state(second, "COMPLETED")
    assert (tmp_path / f"slurm-{second}.out").read_text() == "b\n"
    done = run(
        api,
        user,
        "sacct",
        "-j",
        f"{first},{second}",
        "-X",
        "-o",
        "JobID,State,ExitCode",
        "-P",
        "-n",
    )
    assert done.stdout == f"{first}|COMPLETED|0:0\n{second}|COMPLETED|0:0\n"
    # submitit 用的写法
    submitit = run(
        api, user, "sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", f"{first},{second}"
    )
    rows = submitit.stdout.splitlines()
    assert rows[0] == "JobID|State|NodeList"
    assert [r.split("|")[:2] for r in rows[1:]] == [
        [str(first), "COMPLETED"],
        [f"{first}.batch", "COMPLETED"],
        [str(second), "COMPLETED"],
        [f"{second}.batch", "COMPLETED"],
    ]
    assert all(r.split("|")[2] not in ("", "None assigned") for r in rows[1:])


def test_commands_work_inside_a_job_with_no_extra_step(
    service: Service, api: LiveApi, user: str, tmp_path: Path
) -> None:
    """作业里不用任何准备就能用 Slurm 的命令：它们在作业 PATH 的最前面（--export=NONE 也在），
    经作业自己的 CONDUCTOR_URL/CONDUCTOR_TOKEN 连服务。流水线在作业里查自己、提交下一步。"""
    (tmp_path / "parent.sh").write_text(
        "#!/bin/bash\n#SBATCH --mem=100M --export=NONE\n"
        "command -v sbatch squeue\n"
        'squeue -h -j "$SLURM_JOB_ID" -o "%i %t"\n'
        "sbatch --parsable --mem=100M --wrap 'echo child'\n"
    )
    job = parsable(run(api, user, "sbatch", "--parsable", "parent.sh", cwd=tmp_path))
    service.wait_state(job, "COMPLETED", "FAILED")
    out = (tmp_path / f"slurm-{job}.out").read_text().splitlines()
    assert service.state(job) == "COMPLETED", out
    assert all(line.endswith(("/sbatch", "/squeue")) for line in out[:2]), out
    assert out[2] == f"{job} R"
    child = int(out[3])
    service.wait_state(child, "COMPLETED")
    assert (tmp_path / f"slurm-{child}.out").read_text() == "child\n"
