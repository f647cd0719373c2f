"""查询与列表里的请求/分配资源串：独占作业分到节点的全部 CPU。"""

from __future__ import annotations

from api.routes.jobs import job_resources
from conductor.models import Job
from conductor.resources import Resources

GIB = 2**30
NODE = Resources.of(cpu=8, memory=16 * GIB, gpu=2)


def _job(**fields: object) -> Job:
    base: dict[str, object] = {"cpus": 2, "memory_bytes": GIB, "gpus": 0, "gres": {}}
    return Job(**(base | fields))


def test_pending_job_has_no_allocation() -> None:
    got = job_resources(_job(), {})
    assert (got["tres_req_str"], got["tres_alloc_str"]) == ("cpu=2,mem=1G,node=1", "")


def test_running_job_gets_what_it_asked_for() -> None:
    got = job_resources(_job(node_id="n1", gpus=1), {"n1": NODE})
    assert got["tres_alloc_str"] == "cpu=2,mem=1G,node=1,gres/gpu=1"


def test_exclusive_gets_every_cpu_of_the_node() -> None:
    job = _job(node_id="n1", exclusive=True)
    got = job_resources(job, {"n1": NODE})
    assert got["tres_req_str"] == "cpu=2,mem=1G,node=1"
    assert got["tres_alloc_str"] == "cpu=8,mem=1G,node=1"
    # 节点已不在：只能给出所请求的
    assert job_resources(job, {})["tres_alloc_str"] == "cpu=2,mem=1G,node=1"
