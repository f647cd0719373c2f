"""jobspec.build_env 的单元测试：只继承白名单基础变量，机密不泄漏，调度变量不可被覆盖。"""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from conductor.jobspec import DEFAULT_BASE, JobSpec, Member, build_env, slurm_vars, spread_tasks
from conductor.proctree import TOKEN_VAR

MIB = 1024**2


def make_spec(**overrides: object) -> JobSpec:
    spec = JobSpec(
        job_id=42,
        name="train",
        account="physics",
        partition="normal",
        script="#!/bin/bash\necho hi\n",
        environment={"FOO": "bar"},
        work_dir="/home/alice/proj",
        stdout_path="/home/alice/proj/out.log",
        stderr_path="/home/alice/proj/err.log",
        ntasks_per_node=2,
        cpus_per_task=3,
        cpus=6,
        memory_bytes=1536 * MIB + 1,
        time_limit_seconds=600,
        node_name="node-7",
        token="tok-abc",
        kill_wait=2.0,
    )
    return replace(spec, **overrides)  # type: ignore[arg-type]


NODE_ENV = {
    "PATH": "/opt/bin:/usr/bin",
    "HOME": "/home/alice",
    "LANG": "zh_CN.UTF-8",
    "USER": "alice",
    "CONDUCTOR_DATABASE_URL": "postgresql://admin:secret@db/conductor",
    "AWS_SECRET": "s3cr3t",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t2",
    "RAY_ADDRESS": "10.0.0.1:6379",
    "PYTHONPATH": "/srv/conductor",
    "LD_PRELOAD": "/evil.so",
}

EXPECTED_SLURM = {
    "SLURM_JOB_ID": "42",
    "SLURM_JOBID": "42",
    "SLURM_JOB_NAME": "train",
    "SLURM_CPUS_PER_TASK": "3",
    "SLURM_NTASKS": "2",
    "SLURM_NPROCS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_CPUS_ON_NODE": "6",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_JOB_NODELIST": "node-7",
    "SLURM_NODELIST": "node-7",
    "SLURM_NNODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_TASKS_PER_NODE": "2",
    "SLURM_JOB_CPUS_PER_NODE": "6",
    "SLURMD_NODENAME": "node-7",
    "SLURM_SUBMIT_DIR": "/home/alice/proj",
    "SLURM_JOB_ACCOUNT": "physics",
    "SLURM_JOB_PARTITION": "normal",
    "SLURM_RESTART_COUNT": "0",
    # 1536 MiB 多 1 字节 → 向上取整为 1537
    "SLURM_MEM_PER_NODE": "1537",
}


def test_slurm_vars_exact() -> None:
    assert slurm_vars(make_spec()) == EXPECTED_SLURM


def test_multi_node_allocation_vars() -> None:
    """多节点分配：节点列表为 Slurm 的主机列表写法，任务按 block 分布，批处理脚本在第一个节点（NODEID 0）。"""
    alloc = tuple(Member(f"id{i}", f"node{i:02d}", 4, MIB) for i in (1, 2, 3))
    env = slurm_vars(make_spec(allocation=alloc, ntasks=5, ntasks_per_node=2, cpus_per_task=1))
    assert env["SLURM_JOB_NODELIST"] == env["SLURM_NODELIST"] == "node[01-03]"
    assert env["SLURM_NNODES"] == env["SLURM_JOB_NUM_NODES"] == "3"
    assert env["SLURM_TASKS_PER_NODE"] == "2(x2),1"
    assert env["SLURM_JOB_CPUS_PER_NODE"] == "4(x3)"
    assert env["SLURM_NODEID"] == "0" and env["SLURMD_NODENAME"] == "node01"
    assert env["SLURM_NTASKS"] == "5"


def test_spread_tasks_is_slurm_block() -> None:
    assert spread_tasks(5, 2) == [3, 2]
    assert spread_tasks(4, 3) == [2, 1, 1]
    assert spread_tasks(4, 2) == [2, 2]


def test_build_env_exact() -> None:
    """完整环境逐项核对：白名单基础变量 + 用户变量 + Slurm 变量 + CONDUCTOR_ 孪生 + 令牌。"""
    env = build_env(make_spec(), NODE_ENV)
    expected = {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/home/alice",
        "LANG": "zh_CN.UTF-8",
        "USER": "alice",
        "SHELL": "/bin/bash",
        "TMPDIR": "/tmp",
        "FOO": "bar",
        "CUDA_VISIBLE_DEVICES": "",  # 没分到 GPU：看不见节点上的 GPU
        **EXPECTED_SLURM,
        **{
            "CONDUCTOR_" + k.removeprefix("SLURM_"): v
            for k, v in EXPECTED_SLURM.items()
            if k.startswith("SLURM_")
        },
        TOKEN_VAR: "tok-abc",
        # 作业范围的凭据（这次执行的追踪令牌）；服务地址未知时不设 CONDUCTOR_URL
        "CONDUCTOR_TOKEN": "cdj_42_tok-abc",
    }
    assert env == expected


def test_node_secrets_do_not_leak() -> None:
    """节点上的服务配置与机密绝不进入作业环境。"""
    env = build_env(make_spec(environment={}), NODE_ENV)
    for key in (
        "CONDUCTOR_DATABASE_URL",
        "AWS_SECRET",
        "AWS_SECRET_ACCESS_KEY",
        "RAY_ADDRESS",
        "PYTHONPATH",
        "LD_PRELOAD",
    ):
        assert key not in env
    leaked = {v for k, v in NODE_ENV.items() if k not in ("PATH", "HOME", "LANG", "USER")}
    assert leaked.isdisjoint(env.values())


def test_twin_names() -> None:
    env = build_env(make_spec(), {})
    assert env["CONDUCTOR_JOB_ID"] == "42"
    assert env["CONDUCTOR_JOBID"] == "42"
    assert env["CONDUCTOR_NODELIST"] == "node-7"
    assert env["CONDUCTOR_MEM_PER_NODE"] == "1537"
    assert env["CONDUCTOR_JOB_TOKEN"] == "tok-abc"
    twins = {k for k in env if k.startswith("CONDUCTOR_")}
    slurm = [k for k in EXPECTED_SLURM if k.startswith("SLURM_")]
    # 孪生变量 + 追踪标记 + 作业凭据，没有别的（SLURMD_NODENAME 没有孪生）
    assert len(twins) == len(slurm) + 2


def test_user_environment_included_and_may_override_base() -> None:
    """用户变量进入环境，且可以覆盖基础变量（如 PATH、LANG）。"""
    spec = make_spec(environment={"OMP_NUM_THREADS": "6", "PATH": "/my/bin", "LANG": "C"})
    env = build_env(spec, NODE_ENV)
    assert env["OMP_NUM_THREADS"] == "6"
    assert env["PATH"] == "/my/bin"
    assert env["LANG"] == "C"


def test_user_cannot_override_scheduler_vars_or_token() -> None:
    spec = make_spec(
        environment={
            "SLURM_JOB_ID": "999",
            "SLURM_CPUS_ON_NODE": "128",
            "CONDUCTOR_JOB_ID": "999",
            TOKEN_VAR: "forged",
        }
    )
    env = build_env(spec, NODE_ENV)
    assert env["SLURM_JOB_ID"] == "42"
    assert env["SLURM_CPUS_ON_NODE"] == "6"
    assert env["CONDUCTOR_JOB_ID"] == "42"
    assert env[TOKEN_VAR] == "tok-abc"


def test_token_in_node_env_is_not_inherited() -> None:
    """节点进程自己的令牌变量（例如嵌套调度时）也不能取代本作业的令牌。"""
    env = build_env(make_spec(), {TOKEN_VAR: "outer"})
    assert env[TOKEN_VAR] == "tok-abc"


def test_defaults_when_node_env_empty() -> None:
    """节点环境没有 PATH 等变量时使用默认值。"""
    env = build_env(make_spec(environment={}), {})
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["SHELL"] == "/bin/bash"
    assert env["TMPDIR"] == "/tmp"
    assert "HOME" not in env
    base_keys = {k for k in env if not k.startswith(("SLURM_", "SLURMD_", "CONDUCTOR_"))}
    assert base_keys == set(DEFAULT_BASE) | {"CUDA_VISIBLE_DEVICES"}


def test_node_base_vars_override_defaults() -> None:
    env = build_env(make_spec(environment={}), {"SHELL": "/bin/zsh", "TMPDIR": "/scratch"})
    assert env["SHELL"] == "/bin/zsh"
    assert env["TMPDIR"] == "/scratch"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_build_env_does_not_mutate_inputs() -> None:
    spec = make_spec()
    node_env = dict(NODE_ENV)
    build_env(spec, node_env)
    assert node_env == NODE_ENV
    assert spec.environment == {"FOO": "bar"}
    assert DEFAULT_BASE == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SHELL": "/bin/bash",
        "TMPDIR": "/tmp",
    }


def test_from_row_defaults() -> None:
    """数据库行里 environment/node_name 为空时给出安全的默认值。"""
    row = {
        "id": 7,
        "name": "n",
        "account": "a",
        "partition": "p",
        "script": "s",
        "environment": None,
        "work_dir": "/w",
        "stdout_path": "/w/o",
        "stderr_path": "/w/e",
        "ntasks_per_node": 1,
        "cpus_per_task": 1,
        "cpus": 1,
        "memory_bytes": MIB,
        "time_limit_seconds": None,
        "node_name": None,
    }
    spec = JobSpec.from_row(row, token="t", kill_wait=1.5)
    assert spec.environment == {}
    assert spec.node_name == ""
    assert spec.script_args == ()
    assert (spec.job_id, spec.token, spec.kill_wait) == (7, "t", 1.5)


@pytest.mark.parametrize("environment", ["oops", ["A", "B"], {"A": 1}, {"A": None}])
def test_from_row_rejects_malformed_environment(environment: object) -> None:
    """库里的 environment 不是字符串到字符串的对象：ValueError 指明是哪一列，不构造出坏规格。"""
    row = {**asdict(make_spec()), "id": 42, "environment": environment}
    with pytest.raises(ValueError, match="environment"):
        JobSpec.from_row(row, token="t", kill_wait=1.0)


@pytest.mark.parametrize(("args", "ok"), [(["a b", "-x"], True), ("a", False), ([1], False)])
def test_from_row_script_args(args: object, ok: bool) -> None:
    """sbatch 脚本 参数...：库里的 script_args 是字符串数组，原样（含空格）成为 $1 $2 …"""
    row = {**asdict(make_spec()), "id": 42, "script_args": args}
    if ok:
        assert JobSpec.from_row(row, token="t", kill_wait=1.0).script_args == ("a b", "-x")
    else:
        with pytest.raises(ValueError, match="script_args"):
            JobSpec.from_row(row, token="t", kill_wait=1.0)


def test_exclusive_job_sees_whole_node_cpus() -> None:
    """独占作业的 SLURM_CPUS_ON_NODE 是整个节点的 CPU 数（Slurm 的行为），普通作业是所申请的。"""
    row = {
        **asdict(make_spec()),
        "id": 42,
        "node_name": "node-7",
        "exclusive": True,
    }
    exclusive = JobSpec.from_row(row, token="t", kill_wait=1.0, node_cpus=32)
    assert build_env(exclusive, NODE_ENV)["SLURM_CPUS_ON_NODE"] == "32"
    assert build_env(exclusive, NODE_ENV)["CONDUCTOR_CPUS_ON_NODE"] == "32"
    shared = JobSpec.from_row({**row, "exclusive": False}, token="t", kill_wait=1.0, node_cpus=32)
    assert build_env(shared, NODE_ENV)["SLURM_CPUS_ON_NODE"] == "6"


def test_restart_open_mode_and_service_vars() -> None:
    """重新排队过的作业：SLURM_RESTART_COUNT 为重启次数；--open-mode 给出 SLURM_OPEN_MODE（a/t）；
    API 地址已知时给 CONDUCTOR_URL，用户的同名变量改不掉凭据与地址。"""
    spec = make_spec(
        restart_count=2,
        open_mode="append",
        environment={"CONDUCTOR_TOKEN": "forged", "CONDUCTOR_URL": "http://evil"},
    )
    env = build_env(spec, {}, service_url="http://head:8000")
    assert env["SLURM_RESTART_COUNT"] == "2"
    assert env["SLURM_OPEN_MODE"] == "a"
    assert env["CONDUCTOR_TOKEN"] == "cdj_42_tok-abc"
    assert env["CONDUCTOR_URL"] == "http://head:8000"
    assert build_env(make_spec(open_mode="truncate"), {})["SLURM_OPEN_MODE"] == "t"
    assert "SLURM_OPEN_MODE" not in build_env(make_spec(), {})
    assert spec.appends_output and not make_spec(open_mode="truncate").appends_output
    assert not make_spec().appends_output  # 默认同 Slurm（JobFileAppend=0）：截断
