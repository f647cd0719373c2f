"""作业步的纯函数：srun 参数、布局、任务环境、GPU 划分、文件名模式、退出码。"""

from __future__ import annotations

import dataclasses
import json

import pytest

from conductor.steps import (
    AllocNode,
    HelpRequested,
    StepError,
    StepRequest,
    TaskSlot,
    exit_status,
    expand_step_pattern,
    export_env,
    file_scope,
    label_width,
    layout,
    parse_srun_args,
    split_gpus,
    task_env,
    task_exit_messages,
)

TRY = 'Try "srun --help" for more information'

# ---------------------------------------------------------------- 解析


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "4", "-N", "2", "--ntasks-per-node", "2", "-c", "3", "--gpus-per-task", "1"],
        ["-n4", "-N2", "--ntasks-per-node=2", "-c3", "--gpus-per-task=a100:1"],
        ["--ntasks=4", "--nodes=2-5", "--ntasks-per-node", "2", "--cpus-per-task", "3"]
        + ["--gpus-per-task", "1"],
        ["--ntasks", "4", "--nodes", "2", "--ntasks-per-n=2", "--cpus-per-task=3"]
        + ["--gpus-per-task=1"],
    ],
)
def test_numeric_options_in_every_spelling(argv: list[str]) -> None:
    req = parse_srun_args([*argv, "hostname"])
    assert (req.ntasks, req.nodes, req.ntasks_per_node, req.cpus_per_task, req.gpus_per_task) == (
        4,
        2,
        2,
        3,
        1,
    )
    assert req.command == ("hostname",)
    assert req.warnings == ()


def test_flags_and_strings() -> None:
    req = parse_srun_args(
        ["-l", "-u", "-K", "-o", "out.%t", "--error=err", "-D", "/tmp", "--export=ALL,A=1"]
        + ["-J", "step", "python", "-c", "print(1)"]
    )
    assert req.label and req.unbuffered and req.kill_on_bad_exit
    assert (req.output, req.error, req.chdir, req.export, req.job_name) == (
        "out.%t",
        "err",
        "/tmp",
        "ALL,A=1",
        "step",
    )
    # 命令之后的 -c 属于命令
    assert req.command == ("python", "-c", "print(1)")


def test_long_spellings_and_bundled_short_flags() -> None:
    req = parse_srun_args(
        ["-lu", "--label", "--output", "o", "--chdir=/d", "--job-name", "j", "--unbuffered", "x"]
    )
    assert req.label and req.unbuffered
    assert (req.output, req.chdir, req.job_name) == ("o", "/d", "j")
    assert parse_srun_args(["-Dwork", "-Jname", "x"]).chdir == "work"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-K", "x"], True),
        (["-K1", "x"], True),
        (["-K0", "x"], False),
        (["--kill-on-bad-exit=0", "x"], False),
        (["--kill-on-bad-exit", "x"], True),
        (["x"], False),
    ],
)
def test_kill_on_bad_exit_optional_value(argv: list[str], expected: bool) -> None:
    req = parse_srun_args(argv)
    assert req.kill_on_bad_exit is expected
    assert req.command == ("x",)


def test_options_stop_at_command_and_double_dash() -> None:
    assert parse_srun_args(["-n", "2", "echo", "-n", "3"]).command == ("echo", "-n", "3")
    req = parse_srun_args(["-l", "--", "-weird-cmd", "-l"])
    assert req.label and req.command == ("-weird-cmd", "-l")


@pytest.mark.parametrize(
    ("argv", "warning"),
    [
        (["--mpi=pmix"], "srun: 警告：--mpi=pmix 不支持，已忽略"),
        (["--mpi", "pmix"], "srun: 警告：--mpi=pmix 不支持，已忽略"),
        (["--cpu-bind=cores"], "srun: 警告：--cpu-bind=cores 不支持，已忽略"),
        (["--cpu_bind=cores"], "srun: 警告：--cpu_bind=cores 不支持，已忽略"),
        (["-m", "cyclic"], "srun: 警告：--distribution=cyclic 不支持，已忽略"),
        (["--overlap"], "srun: 警告：--overlap 不支持，已忽略"),
        (["--exclusive"], "srun: 警告：--exclusive 不支持，已忽略"),
        (["--exact"], "srun: 警告：--exact 不支持，已忽略"),
        (["--mem=4G"], "srun: 警告：--mem=4G 不支持，已忽略"),
        (["--gres", "gpu:2"], "srun: 警告：--gres=gpu:2 不支持，已忽略"),
        (["-X"], "srun: 警告：--disable-status 不支持，已忽略"),
        (["-W", "30"], "srun: 警告：--wait=30 不支持，已忽略"),
        (["-t10"], "srun: 警告：--time=10 不支持，已忽略"),
        (["-p", "gpu"], "srun: 警告：--partition=gpu 不支持，已忽略"),
        (["-A", "acct"], "srun: 警告：--account=acct 不支持，已忽略"),
        (["--propagate"], "srun: 警告：--propagate 不支持，已忽略"),
        (["--hint=nomultithread"], "srun: 警告：--hint=nomultithread 不支持，已忽略"),
    ],
)
def test_unsupported_options_warn_and_are_ignored(argv: list[str], warning: str) -> None:
    req = parse_srun_args([*argv, "-n", "2", "hostname"])
    assert req.warnings == (warning,)
    assert req.ntasks == 2 and req.command == ("hostname",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--foo", "x"], f"srun: unrecognized option '--foo'\n{TRY}"),
        (["-Z", "x"], f"srun: invalid option -- 'Z'\n{TRY}"),
        (["-n"], f"srun: option requires an argument -- 'n'\n{TRY}"),
        (["--ntasks"], f"srun: option '--ntasks' requires an argument\n{TRY}"),
        (["--label=1", "x"], f"srun: option '--label' doesn't allow an argument\n{TRY}"),
        (["--nt=2", "x"], "srun: option '--nt' is ambiguous; possibilities: "),
        (["-n", "x", "cmd"], 'srun: error: Invalid numeric value "x" for --ntasks.'),
        (["-n0", "cmd"], 'srun: error: Invalid numeric value "0" for --ntasks.'),
        (["-c", "-1", "cmd"], 'srun: error: Invalid numeric value "-1" for --cpus-per-task.'),
        (
            ["--ntasks-per-node=a", "c"],
            'srun: error: Invalid numeric value "a" for --ntasks-per-node.',
        ),
        (
            ["--gpus-per-task=a100:x", "c"],
            'srun: error: Invalid numeric value "x" for --gpus-per-task.',
        ),
        (["-N", "two", "cmd"], 'srun: error: "two" is not a valid node count'),
        (
            ["-N", "3-2", "cmd"],
            "srun: error: Maximum node count 2 is less than minimum node count 3",
        ),
        (["-Kx", "cmd"], 'srun: error: Invalid numeric value "x" for --kill-on-bad-exit.'),
        (["-n", "2"], "srun: fatal: No command given to execute."),
        ([], "srun: fatal: No command given to execute."),
    ],
)
def test_errors_carry_slurm_text(argv: list[str], message: str) -> None:
    with pytest.raises(StepError) as info:
        parse_srun_args(argv)
    assert info.value.message.startswith(message)
    assert info.value.exit_code == 1


def test_help() -> None:
    with pytest.raises(HelpRequested):
        parse_srun_args(["--help"])
    with pytest.raises(HelpRequested):
        parse_srun_args(["-h", "x"])


def test_output_special_values_and_pad_limit() -> None:
    assert parse_srun_args(["-o", "all", "x"]).output is None
    assert parse_srun_args(["-o", "-", "x"]).output is None
    assert parse_srun_args(["-o", "none", "x"]).output == "none"
    with pytest.raises(StepError, match="--output"):
        parse_srun_args(["-o", "f.%99t", "x"])


def test_request_round_trips_through_json() -> None:
    req = parse_srun_args(["-n2", "--mpi=pmix", "-l", "echo", "a b"])
    data = json.loads(json.dumps(dataclasses.asdict(req)))
    assert StepRequest.from_dict(data) == req
    assert req.to_dict() == dataclasses.asdict(req)


def test_export_env() -> None:
    environ = {"PATH": "/bin", "HOME": "/h", "SLURM_JOB_ID": "3", "CONDUCTOR_JOB_ID": "3"}
    assert export_env(None, environ) == environ
    assert export_env("ALL", environ) == environ
    assert export_env("NONE", environ) == {"SLURM_JOB_ID": "3", "CONDUCTOR_JOB_ID": "3"}
    assert export_env("PATH,X=1", environ) == {
        "SLURM_JOB_ID": "3",
        "CONDUCTOR_JOB_ID": "3",
        "PATH": "/bin",
        "X": "1",
    }
    assert export_env("ALL,X=1", environ) == environ | {"X": "1"}


# ---------------------------------------------------------------- 布局

TWO = [AllocNode("n1", 4), AllocNode("n2", 4)]


def _req(argv: list[str]) -> StepRequest:
    return parse_srun_args([*argv, "cmd"])


def _counts(lay_argv: list[str], alloc: list[AllocNode] = TWO, job_ntasks: int = 8) -> list[int]:
    lay = layout(_req(lay_argv), alloc, 12, job_ntasks, 1)
    return [len(lay.tasks_on(i)) for i in lay.node_indices]


def test_defaults_take_the_job_tasks() -> None:
    lay = layout(_req([]), TWO, 12, 8, 1)
    assert lay.node_indices == (0, 1)
    assert [len(lay.tasks_on(i)) for i in (0, 1)] == [4, 4]
    assert lay.cpus_per_task == 1 and lay.gpus_per_task == 0
    assert lay.tasks_per_node_str() == "4(x2)"


def test_block_distribution_follows_slurm() -> None:
    assert _counts(["-n", "4", "-N", "2"]) == [2, 2]
    assert _counts(["-n", "3", "-N", "2"]) == [2, 1]
    lay = layout(_req(["-n", "3", "-N", "2"]), TWO, 12, 8, 1)
    # 编号按节点连续（block）：节点 0 上 0、1，节点 1 上 2
    assert lay.tasks == (TaskSlot(0, 0, 0), TaskSlot(1, 0, 1), TaskSlot(2, 1, 0))
    # 异构节点：按轮次分配，容量小的节点先满
    assert _counts(["-n", "4"], [AllocNode("a", 1), AllocNode("b", 4)]) == [1, 3]


def test_only_nodes_gives_one_task_per_node() -> None:
    assert _counts(["-N", "2"]) == [1, 1]
    assert _counts(["-N", "1"]) == [1]
    assert _counts(["-N", "2", "--ntasks-per-node=3"]) == [3, 3]
    assert _counts(["--ntasks-per-node=2"]) == [2, 2]


def test_ntasks_without_nodes_uses_as_many_nodes_as_tasks_up_to_the_allocation() -> None:
    assert _counts(["-n", "1"]) == [1]
    assert _counts(["-n", "2"]) == [1, 1]
    assert _counts(["-n", "6"]) == [3, 3]
    assert _counts(["-n", "4", "--ntasks-per-node=4"]) == [4]


def test_adjustment_warnings_are_slurms() -> None:
    lay = layout(_req(["-n", "1", "-N", "2"]), TWO, 12, 8, 1)
    assert lay.warnings == ("srun: warning: can't run 1 processes on 2 nodes, setting nnodes to 1",)
    assert len(lay.node_indices) == 1
    lay = layout(_req(["-n", "6", "-N", "2", "--ntasks-per-node=2"]), TWO, 12, 8, 1)
    assert lay.warnings == (
        "srun: warning: can't honor --ntasks-per-node set to 2 which doesn't match the requested "
        "tasks 6 with the maximum number of requested nodes 2. Ignoring --ntasks-per-node.",
    )
    assert [len(lay.tasks_on(i)) for i in (0, 1)] == [3, 3]


def test_cpus_per_task_defaults_to_the_job() -> None:
    lay = layout(_req(["-n", "2"]), TWO, 12, 2, 4)
    assert lay.cpus_per_task == 4
    assert [lay.cpus_on(i) for i in lay.node_indices] == [4, 4]
    assert layout(_req(["-n", "2", "-c", "2", "-N", "1"]), TWO, 12, 2, 4).cpus_on(0) == 4


def test_too_many_nodes() -> None:
    with pytest.raises(StepError) as info:
        layout(_req(["-N", "3"]), TWO, 12, 8, 1)
    assert info.value.message == "srun: error: Only allocated 2 nodes asked for 3"


@pytest.mark.parametrize(
    "argv", [["-n", "9"], ["-n", "5", "-N", "1"], ["-c", "5"], ["-n", "3", "-c", "3"]]
)
def test_more_processors_than_the_allocation(argv: list[str]) -> None:
    with pytest.raises(StepError) as info:
        layout(_req(argv), TWO, 12, 1, 1)
    assert info.value.message == (
        "srun: error: Unable to create step for job 12: More processors requested than permitted"
    )


def test_gpus() -> None:
    alloc = [AllocNode("g1", 8, 2), AllocNode("g2", 8, 2)]
    lay = layout(_req(["-n", "4", "--gpus-per-task=1"]), alloc, 7, 1, 1)
    assert [lay.gpus_on(i) for i in lay.node_indices] == [2, 2]
    # GPU 限制每节点的任务数：CPU 够 3 个，GPU 只够 2 个
    lay = layout(_req(["-n", "3", "--gpus-per-task=1", "-N", "2"]), alloc, 7, 1, 1)
    assert [lay.gpus_on(i) for i in lay.node_indices] == [2, 1]
    for argv in (["-n", "5", "--gpus-per-task=1"], ["--gpus-per-task=3", "-n", "1"]):
        with pytest.raises(StepError) as info:
            layout(_req(argv), alloc, 7, 1, 1)
        assert info.value.message == (
            "srun: error: Unable to create step for job 7: "
            "Invalid generic resource (gres) specification"
        )


def test_gpu_step_skips_nodes_without_gpus() -> None:
    alloc = [AllocNode("c1", 8), AllocNode("g1", 8, 1)]
    lay = layout(_req(["-n", "1", "--gpus-per-task=1"]), alloc, 7, 1, 1)
    assert lay.node_indices == (1,)


# ---------------------------------------------------------------- 环境


def test_task_env_sets_step_variables_and_twins() -> None:
    alloc = [AllocNode("node01", 4), AllocNode("node02", 4), AllocNode("node03", 4)]
    lay = layout(_req(["-n", "3", "-N", "2"]), alloc, 12, 1, 1)
    base = {"PATH": "/bin", "SLURM_NNODES": "3", "CUDA_VISIBLE_DEVICES": "0,1"}
    slot = lay.tasks[2]
    env = task_env(
        base,
        job_id=12,
        step_id=3,
        layout=lay,
        slot=slot,
        node_names=[n.name for n in alloc],
        gpu_ids=[],
    )
    expected = {
        "SLURM_PROCID": "2",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
        "SLURM_STEP_ID": "3",
        "SLURM_STEPID": "3",
        "SLURM_STEP_NUM_TASKS": "3",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_STEP_NODELIST": "node[01-02]",
        "SLURM_STEP_TASKS_PER_NODE": "2,1",
        "SLURM_NTASKS": "3",
        "SLURM_NPROCS": "3",
        "SLURM_CPUS_PER_TASK": "1",
        "SLURMD_NODENAME": "node02",
    }
    for key, value in expected.items():
        assert env[key] == value, key
        if key.startswith("SLURM_"):
            assert env["CONDUCTOR_" + key.removeprefix("SLURM_")] == value, key
    assert env["PATH"] == "/bin" and env["SLURM_NNODES"] == "3"
    # 作业步没有申请 GPU：保留作业的
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "SLURM_STEP_GPUS" not in env


def test_task_env_gpus() -> None:
    alloc = [AllocNode("g1", 4, 4)]
    lay = layout(_req(["-n", "2", "--gpus-per-task=2"]), alloc, 5, 1, 1)
    shares = split_gpus([0, 1, 2, 3], 2, 2)
    env = task_env(
        {"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
        job_id=5,
        step_id=0,
        layout=lay,
        slot=lay.tasks[1],
        node_names=["g1"],
        gpu_ids=shares[1],
    )
    assert env["CUDA_VISIBLE_DEVICES"] == env["GPU_DEVICE_ORDINAL"] == "2,3"
    assert env["SLURM_STEP_GPUS"] == env["CONDUCTOR_STEP_GPUS"] == "2,3"


def test_split_gpus() -> None:
    assert split_gpus(["3", "5", "7", "9"], 2, 2) == [["3", "5"], ["7", "9"]]
    assert split_gpus([0, 1, 2], 3, 1) == [[0], [1], [2]]
    assert split_gpus([0, 1], 2, 0) == [[], []]
    with pytest.raises(ValueError):
        split_gpus([0], 2, 1)


# ---------------------------------------------------------------- 文件名


def _expand(pattern: str, **kw: object) -> str:
    args: dict[str, object] = {
        "job_id": 42,
        "step_id": 3,
        "rank": 7,
        "node_name": "gpu01.example.org",
        "node_index": 1,
        "array_job_id": None,
        "array_task_id": None,
    }
    args.update(kw)
    return expand_step_pattern(pattern, **args)  # type: ignore[arg-type]


def test_expand_step_pattern() -> None:
    assert _expand("out-%j-%J-%s-%t-%n-%N.log") == "out-42-42.3-3-7-1-gpu01.log"
    assert _expand("%3t_%5j_%2n") == "007_00042_01"
    assert _expand("100%%-%t") == "100%-7"
    assert _expand("%A_%a") == "42_4294967294"
    assert _expand("%A_%a", array_job_id=40, array_task_id=2) == "40_2"
    assert _expand("plain.txt") == "plain.txt"
    assert _expand("none") == "/dev/null"
    # 不知道的留着：rank 为 None 时 %t，没给作业名与用户时 %x %u
    assert _expand("%t-%x-%u", rank=None) == "%t-%x-%u"
    assert _expand("%x-%u", job_name="train", user="alice") == "train-alice"
    with pytest.raises(ValueError):
        _expand("%20t")


def test_file_scope() -> None:
    assert file_scope("out.%t") == "task"
    assert file_scope("out.%3t.%N") == "task"
    assert file_scope("out.%n") == "node"
    assert file_scope("out.%N") == "node"
    assert file_scope("out.%j") == "step"
    assert file_scope("out.%%t") == "step"


# ---------------------------------------------------------------- 退出码与消息


def test_exit_status() -> None:
    assert exit_status([0, 0], [None, None]) == 0
    assert exit_status([0, 3, 1], [None, None, None]) == 3
    assert exit_status([None, 1], [9, None]) == 137
    assert exit_status([None, None], [9, 15]) == 143
    # 同 Slurm：被信号杀死优先于退出码，哪怕退出码更大
    assert exit_status([200, None], [None, 2]) == 130
    assert exit_status([None, 0], [None, None]) == 0
    assert exit_status([], []) == 0


def test_task_exit_messages() -> None:
    lines = task_exit_messages(
        [0, 2, 2, None, 1], [None, None, None, 9, None], ["a", "a", "a", "b", "b"]
    )
    assert lines == [
        "srun: error: a: tasks 1-2: Exited with exit code 2",
        "srun: error: b: task 3: Killed",
        "srun: error: b: task 4: Exited with exit code 1",
    ]
    assert task_exit_messages([None], [15], ["a"], cancelled=True) == []


def test_label_width() -> None:
    assert [label_width(n) for n in (1, 10, 11, 100, 101)] == [1, 1, 2, 2, 3]
