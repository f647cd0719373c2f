"""#SBATCH 指令与 sbatch 选项的解析（纯函数）。"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.schemas import JobProperties
from conductor.arrays import expand_filename
from conductor.client.sbatch import (
    SbatchError,
    SbatchOptions,
    build_payload,
    parse_args,
    parse_directives,
    parse_export,
)
from conductor.errors import InvalidJobRequest
from conductor.request import JobRequest, ResourceFields, normalize

SLURM_SCRIPT = """#!/bin/bash
#SBATCH --job-name=sim_run
#SBATCH -A proj_alpha
#SBATCH -p default
#SBATCH --cpus-per-task=2 --ntasks-per-node 1   # 行尾注释
#SBATCH --mem=2G
#SBATCH -t 0-01:30:00
#SBATCH -o logs/%x-%j.out
#SBATCH -e logs/%x-%j.err
#SBATCH -D /data/run001
#SBATCH --export=ALL,OMP_NUM_THREADS=8
#SBATCH --exclusive
#SBATCH --nodes=1
#SBATCH --mail-type=END

module load foo
#SBATCH --job-name=too_late
srun ./sim
"""


def test_directives_of_a_typical_slurm_script() -> None:
    opts = parse_directives(SLURM_SCRIPT)
    assert opts == SbatchOptions(
        job_name="sim_run",
        account="proj_alpha",
        partition="default",
        cpus_per_task=2,
        ntasks_per_node=1,
        mem="2G",
        time="0-01:30:00",
        output="logs/%x-%j.out",
        error="logs/%x-%j.err",
        chdir="/data/run001",
        export="ALL,OMP_NUM_THREADS=8",
        exclusive=True,
        nodes="1",
    )
    # 认得但不支持的选项被忽略并报告；第一条命令之后的 #SBATCH 不生效（同 sbatch）
    assert opts.ignored == ("--mail-type=END",)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#SBATCH -J name", {"job_name": "name"}),
        ("#SBATCH -Jname", {"job_name": "name"}),
        ("#SBATCH --job-name name", {"job_name": "name"}),
        ('#SBATCH --job-name="two words"', {"job_name": "two words"}),
        ("#SBATCH -c4", {"cpus_per_task": 4}),
        ("#SBATCH -c 4 -t 30", {"cpus_per_task": 4, "time": "30"}),
        ("#SBATCH --array=0-99%10", {"array": "0-99%10"}),
        ("#SBATCH -a 1,3,5-7", {"array": "1,3,5-7"}),
        ("#SBATCH --dependency=afterok:12:13", {"dependency": "afterok:12:13"}),
        ("#SBATCH -d afterany:7,afterok:8", {"dependency": "afterany:7,afterok:8"}),
        ("#SBATCH --priority=100", {"priority": 100}),
        ("#SBATCH --priority 0", {"priority": 0}),
        ("#SBATCH --hold", {"hold": True}),
        ("#SBATCH -H", {"hold": True}),
        ("#SBATCH --exclusive=user", {"exclusive": True}),
        ("#SBATCH", {}),
        ("#SBATCH   # 只有注释", {}),
    ],
)
def test_directive_forms(line: str, expected: dict) -> None:
    assert parse_directives(f"#!/bin/bash\n{line}\necho hi\n") == SbatchOptions(**expected)


def test_lookalike_comments_are_not_directives() -> None:
    script = "#!/bin/bash\n# SBATCH -J no\n#SBATCHX -J no\n##SBATCH -J no\necho\n"
    assert parse_directives(script) == SbatchOptions()


def test_blank_lines_and_comments_do_not_end_the_directive_block() -> None:
    script = "#!/bin/bash\n\n# 说明\n#SBATCH -J a\n\n#SBATCH -p default\n"
    assert parse_directives(script) == SbatchOptions(job_name="a", partition="default")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("#SBATCH --cpus-per-task=two", "--cpus-per-task 应为整数"),
        ("#SBATCH -c 0", "-c 不能小于 1"),
        ("#SBATCH --priority=-1", "--priority 不能为负数"),
        ("#SBATCH --job-name", "--job-name 缺少取值"),
        ("#SBATCH --frobnicate=3", "不认识的选项：'--frobnicate=3'"),
        ("#SBATCH --array=0-x", "--array 格式无效"),
        ("#SBATCH --dependency=after", "--dependency 格式无效"),
        ("#SBATCH --hold=yes", "--hold 不带取值"),
        ('#SBATCH -J "unclosed', "第 2 行的 #SBATCH 指令无法解析"),
        ("#SBATCH --output=", "--output 的值不能为空"),
    ],
)
def test_bad_directives_name_the_problem(line: str, message: str) -> None:
    with pytest.raises(SbatchError, match="#SBATCH") as info:
        parse_directives(f"#!/bin/bash\n{line}\n")
    assert message in info.value.message


def test_command_line_overrides_directives() -> None:
    directives = parse_directives("#!/bin/bash\n#SBATCH -J a -c 2 --mem=4G --hold\n")
    cli = parse_args(["-J", "b", "--mem=1G"])
    merged = cli.merged_over(directives)
    assert (merged.job_name, merged.cpus_per_task, merged.mem, merged.hold) == ("b", 2, "1G", True)
    # 未在命令行给出的值（None）不覆盖
    assert SbatchOptions().merged_over(directives) == directives


def test_export() -> None:
    environ = {"HOME": "/home/u", "FOO": "bar"}
    # 同 sbatch：不写即 ALL，把提交者的环境带过去；NONE 什么也不带；只列名字时只带这些
    assert parse_export(None, environ) == environ
    assert parse_export("ALL", environ) == environ
    assert parse_export("NONE", environ) == {}
    assert parse_export("A=1,FOO", environ) == {"A": "1", "FOO": "bar"}
    assert parse_export("ALL,A=1", environ) == {**environ, "A": "1"}
    # 凭据、上一层作业的变量与改变 bash 启动方式的变量不随 ALL 过去
    noisy = {
        **environ,
        "CONDUCTOR_TOKEN": "cdj_1_x",
        "SLURM_JOB_ID": "7",
        "BASH_ENV": "/tmp/x",
        "BASH_FUNC_f%%": "() { :; }",
        "_": "/usr/bin/sbatch",
    }
    assert parse_export(None, noisy) == environ
    assert parse_export("B=x=y", environ) == {"B": "x=y"}
    with pytest.raises(SbatchError, match="MISSING 在当前环境中不存在"):
        parse_export("MISSING", environ)
    with pytest.raises(SbatchError, match="变量名无效"):
        parse_export("1BAD=2", environ)


def test_payload_defaults_follow_sbatch(tmp_path: Path) -> None:
    payload = build_payload(SbatchOptions(), "echo\n", "job.sh", tmp_path, "alice", {})
    job = payload["job"]
    assert job == {
        "account": "alice",
        "environment": {},
        "current_working_directory": str(tmp_path.resolve()),
        "standard_output": "slurm-%j.out",
        "standard_error": "slurm-%j.out",
        "ntasks_per_node": 1,
        "cpus_per_task": 1,
        "memory_per_node": "1G",
        "name": "job.sh",
        "time_limit": "UNLIMITED",
        "exclusive": False,
    }
    # 不带 -p 不发分区：服务端取它配置的默认分区（不一定叫 default）；调度相关的新字段只在指定时发送，现有 API 不受影响
    assert not {"array", "dependency", "priority", "hold"} & job.keys()
    assert payload["script"] == "echo\n"


def test_payload_from_options(tmp_path: Path) -> None:
    opts = parse_directives(SLURM_SCRIPT).merged_over(SbatchOptions())
    opts = parse_args(
        ["-D", "sub", "--array=0-3", "-d", "afterok:5", "--priority=7", "-H"]
    ).merged_over(opts)
    job = build_payload(opts, SLURM_SCRIPT, "x.sh", tmp_path, "alice", {}, {"EXTRA": "1"})["job"]
    assert job["current_working_directory"] == str((tmp_path / "sub").resolve())
    assert job["environment"] == {"OMP_NUM_THREADS": "8", "EXTRA": "1"}
    assert (job["standard_output"], job["standard_error"]) == ("logs/%x-%j.out", "logs/%x-%j.err")
    assert (job["cpus_per_task"], job["memory_per_node"], job["time_limit"]) == (
        2,
        "2G",
        "0-01:30:00",
    )
    assert (job["name"], job["account"], job["exclusive"]) == ("sim_run", "proj_alpha", True)
    assert (job["array"], job["dependency"], job["priority"], job["hold"]) == (
        "0-3",
        "afterok:5",
        7,
        True,
    )


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("slurm-%j.out", "slurm-42.out"),
        ("%x_%A.log", "sim_42.log"),
        ("/home/%u/%j/out", "/home/alice/42/out"),
        ("100%%-%j", "100%-42"),
        ("job-%5j.out", "job-00042.out"),
        ("%N.out", "%N.out"),  # 节点名提交时未知：原样保留
        ("plain.out", "plain.out"),
    ],
)
def test_expand_filename(pattern: str, expected: str) -> None:
    assert expand_filename(pattern, job_id=42, name="sim", account="alice") == expected


# ---------- 资源指令（议题 16）：真实脚本的样子 → REST 字段 → 规范化后的列 ----------


def _payload(script: str, tmp_path: Path, *args: str) -> dict:
    opts = parse_args(list(args)).merged_over(parse_directives(script))
    return build_payload(opts, script, "job.sh", tmp_path, "alice", {})


def _normalized(job: dict) -> JobRequest:
    props = JobProperties(**job)
    fields = {k: getattr(props, k) for k in ResourceFields.__dataclass_fields__ if k != "given"}
    return normalize(ResourceFields(**fields, given=frozenset(props.model_fields_set)))


GPU_TRAINING = """#!/bin/bash
#SBATCH --job-name=train
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=1:00:00
#SBATCH --mail-type=END
#SBATCH -o %x_%j.out
python train.py
"""


def test_gpu_training_job(tmp_path: Path) -> None:
    payload = _payload(GPU_TRAINING, tmp_path)
    job = payload["job"]
    assert job["tres_per_node"] == "gres/gpu:1"
    assert (job["cpus_per_task"], job["memory_per_node"], job["time_limit"]) == (
        8,
        "32G",
        "1:00:00",
    )
    assert job["standard_output"] == "%x_%j.out"
    r = _normalized(job)
    assert (r.cpus, r.memory_bytes, r.gpus, r.gpu_type, r.gres) == (8, 32 * 2**30, 1, None, {})
    assert r.slurm_request == {"gpus_per_node": "1"}
    # 只有 --mail-type 仍被忽略：它不影响作业拿到的资源
    assert parse_directives(GPU_TRAINING).ignored == ("--mail-type=END",)


def test_nodes_pass_through(tmp_path: Path) -> None:
    """-N 原样交给服务端：#SBATCH --nodes=2 --ntasks-per-node=2 即 2 个节点、4 个任务。"""
    script = "#!/bin/bash\n#SBATCH --nodes=2 --ntasks-per-node=2\n#SBATCH -c 2\nsrun ./a\n"
    job = _payload(script, tmp_path)["job"]
    assert (job["nodes"], job["ntasks_per_node"]) == ("2", 2)
    r = _normalized(job)
    assert (r.nodes, r.ntasks, r.ntasks_per_node, r.cpus) == (2, 4, 2, 4)
    # 命令行的 -N 覆盖脚本里的
    r = _normalized(_payload(script, tmp_path, "-N", "3")["job"])
    assert (r.nodes, r.ntasks) == (3, 6)
    r = _normalized(_payload("#!/bin/bash\n", tmp_path, "-N", "2-4", "-n", "5")["job"])
    assert (r.nodes, r.ntasks, r.cpus) == (2, 5, 3)
    r = _normalized(_payload("#!/bin/bash\n", tmp_path, "-w", "a,b")["job"])
    assert (r.nodes, r.required_nodes) == (2, ["a", "b"])


def test_ntasks_with_mem_per_cpu(tmp_path: Path) -> None:
    job = _payload("#!/bin/bash\n#SBATCH -n 4 --mem-per-cpu=100M\nsrun ./a\n", tmp_path)["job"]
    assert (job["tasks"], job["memory_per_cpu"]) == (4, "100M")
    assert "memory_per_node" not in job and "ntasks_per_node" not in job
    r = _normalized(job)
    assert (r.ntasks, r.cpus, r.memory_bytes) == (4, 4, 400 * 2**20)
    assert r.slurm_request == {"mem_per_cpu": 100 * 2**20}


def test_exclusive_whole_node_memory(tmp_path: Path) -> None:
    job = _payload("#!/bin/bash\n#SBATCH --exclusive --mem=0\n./a\n", tmp_path)["job"]
    assert (job["exclusive"], job["memory_per_node"]) == (True, "0")
    r = _normalized(job)
    assert (r.whole_node_memory, r.memory_bytes) == (True, 0)


def test_gpu_directive_forms(tmp_path: Path) -> None:
    job = _payload(
        "#!/bin/bash\n#SBATCH --gres=gpu:a100:2,nvme:1 -C 'a100|h100' -w node-01 -x node[02-03]\n",
        tmp_path,
        "--cpus-per-gpu=4",
        "--mem-per-gpu=16G",
    )["job"]
    assert job["tres_per_node"] == "gres/gpu:a100:2,gres/nvme:1"
    assert (job["cpus_per_tres"], job["memory_per_tres"]) == ("gres/gpu:4", "gres/gpu:16G")
    assert "cpus_per_task" not in job and "memory_per_node" not in job
    r = _normalized(job)
    assert (r.gpus, r.gpu_type, r.gres, r.cpus, r.memory_bytes) == (
        2,
        "a100",
        {"nvme": 1.0},
        8,
        32 * 2**30,
    )
    assert (r.constraints, r.required_nodes, r.excluded_nodes) == (
        "a100|h100",
        ["node-01"],
        ["node02", "node03"],
    )
    job = _payload("#!/bin/bash\n", tmp_path, "-G", "a100:2")["job"]
    assert job["tres_per_job"] == "gres/gpu:a100:2"
    job = _payload("#!/bin/bash\n", tmp_path, "-n", "3", "--gpus-per-task=1")["job"]
    assert (job["tres_per_task"], _normalized(job).gpus) == ("gres/gpu:1", 3)
    job = _payload("#!/bin/bash\n", tmp_path, "--gpus-per-node=2")["job"]
    assert _normalized(job).slurm_request == {"gpus_per_node": "2"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gres=gpu:1", "--gpus-per-node=2"], "不能同时指定"),
        (["--gpus=a100"], "--gpus 格式无效"),
        (["--gres=nvme:fast:1"], "只有 gpu 可以指定类型"),
        (["--gres=gpu:1(S:0)"], "--gres 中的"),
        (["--tmp=10G"], "不支持 --tmp"),
        (["--mincpus", "8"], "不支持 --mincpus"),
    ],
)
def test_bad_resource_options_name_the_option(
    args: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(SbatchError, match=re.escape(message)):
        _payload("#!/bin/bash\n", tmp_path, *args)


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        (["--mem=1G", "--mem-per-cpu=1G"], "job.memory_per_node", "job.memory_per_cpu"),
        (["-c", "2", "--gpus=1", "--cpus-per-gpu=2"], "job.cpus_per_task", "互斥"),
        (["--cpus-per-gpu=2"], "job.cpus_per_tres", "需要同时申请 GPU"),
        (["-N", "1-1", "-w", "a,b"], "job.required_nodes", "最多 1 个"),
        (["-N", "2", "-n", "1"], "job.tasks", "每个节点至少要有一个任务"),
        (["-N", "3-2"], "job.nodes", "最大值 2 小于最小值 3"),
        (["-w", "a", "-x", "a"], "job.required_nodes", "既被要求又被排除"),
        (["-N", "2", "-n", "5", "--ntasks-per-node=2"], "job.tasks", "大于 节点数 2"),
        (["-C", "a100*2"], "job.constraints", "暂不支持"),
        (["--mem-per-cpu=lots"], "job.memory_per_cpu", "格式无效"),
    ],
)
def test_conflicts_are_refused_naming_the_fields(
    args: list[str], field: str, message: str, tmp_path: Path
) -> None:
    job = _payload("#!/bin/bash\n", tmp_path, *args)["job"]
    with pytest.raises(InvalidJobRequest, match=re.escape(message)) as info:
        _normalized(job)
    assert info.value.field == field


def test_requeue_open_mode_and_signal_options() -> None:
    """--requeue/--no-requeue、--open-mode、--signal 作为指令与选项进入请求体（命令行覆盖脚本）。"""
    script = "#!/bin/bash\n#SBATCH --requeue\n#SBATCH --open-mode=append\n#SBATCH --signal=B:USR1@30\ntrue\n"
    opts = parse_directives(script)
    assert (opts.requeue, opts.open_mode, opts.signal) == (True, "append", "B:USR1@30")
    job = build_payload(opts, script, "s.sh", Path("/tmp"), "acct", {})["job"]
    assert (job["requeue"], job["open_mode"], job["signal"]) == (True, "append", "B:USR1@30")
    assert not opts.ignored
    merged = parse_args(["--no-requeue", "--open-mode", "truncate"]).merged_over(opts)
    job = build_payload(merged, script, "s.sh", Path("/tmp"), "acct", {})["job"]
    assert (job["requeue"], job["open_mode"]) == (False, "truncate")
    plain = build_payload(SbatchOptions(), "true\n", "s.sh", Path("/tmp"), "acct", {})["job"]
    assert not {"requeue", "open_mode", "signal"} & set(plain)
    # 服务端的校验也接受
    JobProperties.model_validate(job)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--open-mode=overwrite"], "append 或 truncate"),
        (["--signal=R:USR1"], "R:"),
        (["--signal=NOPE@5"], "不认识的信号"),
        (["--requeue=expedite"], "expedite"),
    ],
)
def test_requeue_family_refused(args: list[str], why: str) -> None:
    with pytest.raises(SbatchError, match=why):
        parse_args(args)


def test_rest_fields_validated() -> None:
    """REST 的 job.requeue / open_mode / signal：写错时 422 点名字段（由 pydantic 校验）。"""
    base = {
        "account": "a",
        "current_working_directory": "/tmp",
        "standard_output": "o",
        "standard_error": "e",
        "name": "n",
        "partition": "p",
    }
    from pydantic import ValidationError

    for field, value in (("open_mode", "x"), ("signal", "R:USR1"), ("requeue", "yes")):
        with pytest.raises(ValidationError) as info:
            JobProperties.model_validate({**base, field: value})
        assert info.value.errors()[0]["loc"] == (field,)
