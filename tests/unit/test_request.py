"""资源写法的解析与规范化（conductor/tres.py、conductor/request.py）、TRES 串、%N 两步展开、GPU 变量。"""

from __future__ import annotations

import pytest

from conductor.arrays import defer_node, expand_filename, expand_node, needs_node, short_node_name
from conductor.errors import InvalidJobRequest
from conductor.jobspec import JobSpec, gpu_vars, slurm_vars
from conductor.request import ResourceFields, normalize
from conductor.resources import Resources, format_tres, job_request
from conductor.tres import Tres, parse_nodes, parse_tres

GIB = 2**30


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gres/gpu:2", [Tres("gpu", None, 2)]),
        ("gpu", [Tres("gpu", None, 1)]),
        ("gres/gpu:A100:2", [Tres("gpu", "a100", 2)]),
        ("gpu:3g.20gb:1", [Tres("gpu", "3g.20gb", 1)]),
        ("gres/gpu:a100", [Tres("gpu", "a100", 1)]),
        ("GPU:1,gres/nvme:4", [Tres("gpu", None, 1), Tres("nvme", None, 4)]),
    ],
)
def test_parse_tres(value: str, expected: list[Tres]) -> None:
    assert parse_tres(value, "tres_per_node") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "不能为空"),
        ("gpu:1,gpu:2", "写了不止一次"),
        ("nvme:fast:1", "只有 gpu 可以指定类型"),
        ("gpu:a:b:1", "无效"),
        ("gpu:1(S:0)", "无效"),
        ("9gpu:1", "资源名"),
    ],
)
def test_parse_tres_refuses(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tres(value, "tres_per_node")


def test_parse_nodes_expands_hostlists() -> None:
    assert parse_nodes("node[01-03,07],gpu1", "x") == [
        "node01",
        "node02",
        "node03",
        "node07",
        "gpu1",
    ]
    assert parse_nodes(["a", "b[1-2]", "a"], "x") == ["a", "b1", "b2"]
    assert parse_nodes("r[1-2]-n[1-2]", "x") == ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]
    for bad, message in (
        ("n[3-1]", "结束须不小于开始"),
        ("n[a]", "数字范围"),
        ("bad name", "无效"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_nodes(bad, "x")
    with pytest.raises(ValueError, match="超过 10000"):
        parse_nodes("n[0-99999999]", "x")


def _req(**kw: object) -> ResourceFields:
    return ResourceFields(**kw, given=frozenset(kw))  # type: ignore[arg-type]


def test_normalize_single_node_rules() -> None:
    # 旧请求：与原来相同
    r = normalize(ResourceFields(ntasks_per_node=2, cpus_per_task=3))
    assert (r.ntasks, r.cpus, r.memory_bytes, r.gpus) == (2, 6, GIB, 0)
    r = normalize(_req(tasks=3, cpus_per_task=2, memory_per_cpu="1G"))
    assert (r.ntasks, r.ntasks_per_node, r.cpus, r.memory_bytes) == (3, 3, 6, 6 * GIB)
    r = normalize(_req(tres_per_task="gres/gpu:2", tasks=2, memory_per_tres="gres/gpu:8G"))
    assert (r.gpus, r.memory_bytes) == (4, 32 * GIB)
    assert r.slurm_request == {"gpus_per_task": "2", "mem_per_gpu": 8 * GIB}
    # 每 GPU 的 CPU 与任务数取大者
    r = normalize(_req(tres_per_job="gres/gpu:a100:2", cpus_per_tres="gres/gpu:4", tasks=16))
    assert (r.cpus, r.gpu_type, r.slurm_request["gpus_per_job"]) == (16, "a100", "a100:2")
    r = normalize(_req(memory_per_node=0))
    assert (r.whole_node_memory, r.memory_bytes) == (True, 0)
    r = normalize(_req(nodes="1", required_nodes="node-1"))
    assert r.required_nodes == ["node-1"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"nodes": "4-2"}, "job.nodes", "最大值 2 小于最小值 4"),
        ({"nodes": 0}, "job.nodes", "至少为 1"),
        ({"nodes": "x"}, "job.nodes", "格式无效"),
        ({"nodes": 2, "tasks": 1}, "job.tasks", "can't run 1 processes on 2 nodes"),
        ({"nodes": 2, "tasks": 5, "ntasks_per_node": 2}, "job.tasks", "大于 节点数 2"),
        ({"nodes": 2, "tres_per_job": "gres/gpu:3"}, "job.tres_per_job", "不能平均分到 2 个节点"),
        ({"nodes": "1-2", "required_nodes": "a,b,c"}, "job.required_nodes", "最多 2 个"),
        ({"memory_per_node": "1G", "memory_per_cpu": "1G"}, "job.memory_per_node", "memory_per_cpu"),
        ({"memory_per_cpu": "1G", "memory_per_tres": "gres/gpu:1G", "tres_per_node": "gpu:1"},
         "job.memory_per_cpu", "memory_per_tres"),
        ({"tres_per_node": "gpu:1", "tres_per_job": "gpu:1"}, "job.tres_per_node", "tres_per_job"),
        ({"cpus_per_tres": "gres/nvme:2", "tres_per_node": "gpu:1"}, "job.cpus_per_tres", "只支持 gpu"),
        ({"memory_per_tres": "gres/gpu:1G"}, "job.memory_per_tres", "需要同时申请 GPU"),
        ({"tres_per_node": "gpu:x:y:1"}, "job.tres_per_node", "无效"),
        ({"memory_per_cpu": 0}, "job.memory_per_cpu", "必须大于 0"),
    ],
)  # fmt: skip
def test_normalize_refuses_naming_fields(fields: dict, field: str, message: str) -> None:
    with pytest.raises(InvalidJobRequest, match=message) as info:
        normalize(_req(**fields))
    assert info.value.field == field
    assert field in str(info.value)


def test_normalize_multi_node_per_node_amounts() -> None:
    """-N：CPU、内存、GPU 都是每个节点的量，任务按 block 分布（前面的节点多一个）。"""
    # --nodes=2 --ntasks-per-node=2：共 4 个任务，每节点 2 个
    r = normalize(_req(nodes=2, ntasks_per_node=2, cpus_per_task=3, memory_per_node="2G"))
    assert (r.nodes, r.ntasks, r.ntasks_per_node, r.cpus, r.memory_bytes) == (2, 4, 2, 6, 2 * GIB)
    # -N 2 -n 5：每节点按最多的那个（3 个任务）算 CPU
    r = normalize(_req(nodes="2", tasks=5, cpus_per_task=2, memory_per_cpu="1G"))
    assert (r.nodes, r.ntasks, r.ntasks_per_node, r.cpus, r.memory_bytes) == (2, 5, 3, 6, 6 * GIB)
    # 只给 -N：每节点一个任务
    r = normalize(_req(nodes=3))
    assert (r.nodes, r.ntasks, r.cpus) == (3, 3, 1)
    # 范围 N-M 按 N 分配（同 sbatch）
    assert normalize(_req(nodes="2-4")).nodes == 2
    # -n 与 --ntasks-per-node 而没有 -N：节点数由它们推出
    r = normalize(_req(tasks=4, ntasks_per_node=2))
    assert (r.nodes, r.ntasks, r.cpus) == (2, 4, 2)
    # --gpus 是整个作业的：平均分到各节点；--gpus-per-task 乘以每节点任务数
    r = normalize(_req(nodes=2, tres_per_job="gres/gpu:a100:4", memory_per_tres="gres/gpu:1G"))
    assert (r.gpus, r.gpu_type, r.memory_bytes) == (2, "a100", 2 * GIB)
    assert r.slurm_request["gpus_per_job"] == "a100:4"
    r = normalize(_req(nodes=2, tasks=4, tres_per_task="gres/gpu:1", tres_per_node="gres/nvme:1"))
    assert (r.gpus, r.gres) == (2, {"nvme": 1.0})
    r = normalize(_req(nodes=2, tasks=2, tres_per_job="gres/gpu:4", cpus_per_tres="gres/gpu:3"))
    assert r.cpus == 6  # 每节点 2 块 GPU × 3
    # -w 列出的节点多于 -N：节点数提高到其个数（作业要用到每一个）
    r = normalize(_req(required_nodes="n[1-3]"))
    assert (r.nodes, r.ntasks, r.required_nodes) == (3, 3, ["n1", "n2", "n3"])
    r = normalize(_req(nodes="2-4", required_nodes="n[1-3]", tasks=6))
    assert (r.nodes, r.ntasks, r.cpus) == (3, 6, 2)


def test_format_tres_spelled_as_slurm() -> None:
    assert format_tres(4, 8 * GIB, 2) == "cpu=4,mem=8G,node=1,gres/gpu=2"
    assert format_tres(1, 4000 * 2**20) == "cpu=1,mem=4000M,node=1"
    assert format_tres(2, 1536 * 2**20, 1, "a100", {"nvme": 1}) == (
        "cpu=2,mem=1536M,node=1,gres/gpu=1,gres/gpu:a100=1,gres/nvme=1"
    )
    assert format_tres(8, 0) == "cpu=8,node=1"  # --mem=0：分配前不知道节点内存


def test_job_request_vector() -> None:
    assert job_request(4, GIB, 2, {"nvme": 1}) == Resources.of(4, GIB, 2, nvme=1)
    assert job_request(1, 0) == Resources.of(cpu=1)


def test_node_name_patterns() -> None:
    names = {"job_id": 12, "name": "a%Nb", "account": "u"}
    assert expand_filename("x-%n-%t-%N.out", **names) == "x-0-0-%N.out"
    assert expand_filename("%N-%j.out", **names, node_name="gpu1.cluster.org") == "gpu1-12.out"
    assert not needs_node("%%N-%x") and needs_node("%5j-%N")
    # 两步展开：作业名里的 %N 与 %%N 不会被当成节点名
    pattern = defer_node("/o/%x-%%N-%N-%j.out", **names)
    assert expand_node(pattern, "node-7.example") == "/o/a%Nb-%N-node-7-12.out"
    assert short_node_name("../x") == "_" and short_node_name("a/b") == "a_b"


def _spec(**kw: object) -> JobSpec:
    base = dict(
        job_id=1, name="n", account="a", partition="p", script="", environment={},
        work_dir="/w", stdout_path="/o", stderr_path="/e", ntasks_per_node=1, cpus_per_task=1,
        cpus=1, memory_bytes=GIB, time_limit_seconds=None, node_name="n1", token="t",
        kill_wait=1.0,
    )  # fmt: skip
    return JobSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_gpu_vars_from_the_ids_ray_assigns() -> None:
    assert gpu_vars([]) == {}
    assert gpu_vars(["2", "3"]) == {
        "CUDA_VISIBLE_DEVICES": "2,3",
        "GPU_DEVICE_ORDINAL": "2,3",
        "SLURM_JOB_GPUS": "2,3",
        "SLURM_GPUS_ON_NODE": "2",
    }


def test_slurm_vars_for_resources() -> None:
    env = slurm_vars(_spec(ntasks=4, cpus=4, memory_bytes=400 * 2**20,
                           slurm_request={"mem_per_cpu": 100 * 2**20}))  # fmt: skip
    assert (env["SLURM_NTASKS"], env["SLURM_NPROCS"], env["SLURM_MEM_PER_CPU"]) == ("4", "4", "100")
    assert "SLURM_MEM_PER_NODE" not in env
    env = slurm_vars(_spec(gpus=2, slurm_request={"gpus_per_job": "a100:2", "cpus_per_gpu": 4}))
    assert (env["SLURM_GPUS"], env["SLURM_CPUS_PER_GPU"]) == ("a100:2", "4")
    assert "SLURM_GPUS_PER_NODE" not in env
    whole = slurm_vars(_spec(memory_bytes=0, whole_node_memory=True, node_memory=8 * GIB))
    assert whole["SLURM_MEM_PER_NODE"] == "8192"
    assert "SLURM_MEM_PER_NODE" not in slurm_vars(_spec(memory_bytes=0, whole_node_memory=True))


def test_constraints_are_checked_by_the_policy_parser() -> None:
    """提交时的语法检查与调度时的求值是同一个解析器：能提交的表达式调度器一定读得懂。"""
    assert normalize(_req(constraints=" a100 | h100 ")).constraints == "a100|h100"
    assert normalize(_req(constraints="(a100|h100)&ib")).constraints == "(a100|h100)&ib"
    with pytest.raises(InvalidJobRequest, match="末尾") as info:
        normalize(_req(constraints="a100&"))
    assert info.value.field.endswith("constraints")
