"""REST 契约端到端：真实 PostgreSQL、真实 Ray 集群（4 CPU）。"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from harness.waiting import pid_alive, wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service, job_payload

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_submit_runs_and_query_matches_contract(service: Service, tmp_path: Path) -> None:
    job_id = service.submit(
        'echo "Hello World"; echo "to-stderr" >&2',
        current_working_directory=str(tmp_path / "run"),
        standard_output="logs/hello.out",
        standard_error=str(tmp_path / "abs.err"),
        name="hello_world",
        account="my_project",
        time_limit="2:00:00",
        cpus_per_task=2,
    )
    body = service.wait_state(job_id, "COMPLETED")
    assert body["job_id"] == str(job_id)
    assert body["error_msg"] is None
    assert body["job_log"] == {"stdout": "Hello World\n", "stderr": "to-stderr\n"}
    assert (tmp_path / "run" / "logs" / "hello.out").read_text() == "Hello World\n"
    t = body["time"]
    for key in ("submit_time", "start_time", "end_time", "eligible_time"):
        assert ISO_Z.match(t[key]), (key, t[key])
    assert re.match(r"^\d+-\d\d:\d\d:\d\d$", t["elapsed_time"])
    assert t["limit_time"] == "2:00:00"
    d = body["detail"]
    assert d["job_name"] == "hello_world"
    assert d["account"] == d["user"] == "my_project"
    assert d["partition"] == "default"
    assert d["allocated_cpus"] == 2
    assert d["allocated_nodes"] == 1
    assert d["exit_code"] == "0:0"
    assert d["work_dir"] == str(tmp_path / "run")
    assert d["data_source"] == "API"
    assert d["node_list"]


def test_exit_codes_and_error_messages(service: Service, tmp_path: Path) -> None:
    wd = str(tmp_path)
    failed = service.submit("exit 3", current_working_directory=wd)
    killed = service.submit("kill -9 $$", current_working_directory=wd)
    body = service.wait_state(failed, "FAILED")
    assert body["detail"]["exit_code"] == "3:0"
    assert "3" in body["error_msg"]
    body = service.wait_state(killed, "FAILED")
    assert body["detail"]["exit_code"] == "0:9"
    assert "SIGKILL" in body["error_msg"]


def test_job_environment(service: Service, tmp_path: Path) -> None:
    os.environ["CONDUCTOR_DATABASE_URL"] = service.settings.database_url or ""
    try:
        job_id = service.submit(
            "env | sort",
            current_working_directory=str(tmp_path),
            environment={"MY_VAR": "hello world", "OMP_NUM_THREADS": "8"},
            name="envjob",
            ntasks_per_node=2,
            cpus_per_task=1,
        )
        body = service.wait_state(job_id, "COMPLETED")
    finally:
        del os.environ["CONDUCTOR_DATABASE_URL"]
    env = dict(line.split("=", 1) for line in body["job_log"]["stdout"].splitlines() if "=" in line)
    assert env["SLURM_JOB_ID"] == str(job_id)
    assert env["CONDUCTOR_JOB_ID"] == str(job_id)
    assert env["SLURM_JOB_NAME"] == "envjob"
    assert env["SLURM_NTASKS"] == "2"
    assert env["SLURM_CPUS_PER_TASK"] == "1"
    assert env["SLURM_MEM_PER_NODE"] == "100"
    assert env["SLURM_SUBMIT_DIR"] == str(tmp_path)
    assert env["SLURM_JOB_NODELIST"] == body["detail"]["node_list"]
    assert env["MY_VAR"] == "hello world"
    assert env["OMP_NUM_THREADS"] == "8"
    assert "PATH" in env and "HOME" in env
    assert not any("DATABASE" in k for k in env)
    assert service.settings.database_url not in body["job_log"]["stdout"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"time_limit": "abc"}, "job.time_limit"),
        ({"time_limit": "1:99"}, "job.time_limit"),
        ({"memory_per_node": "12X"}, "job.memory_per_node"),
        ({"memory_per_node": "-1G"}, "job.memory_per_node"),
        ({"cpus_per_task": 0}, "job.cpus_per_task"),
        ({"ntasks_per_node": "two"}, "job.ntasks_per_node"),
        ({"account": ""}, "job.account"),
        ({"name": "x" * 256}, "job.name"),
        ({"current_working_directory": "relative/dir"}, "job.current_working_directory"),
        ({"environment": {"1BAD": "x"}}, "job.environment"),
        ({"partition": "gpu-nonexistent"}, "job.partition"),
        ({"cpus_per_task": 64}, "job.cpus_per_task"),
        ({"memory_per_node": "100T"}, "job.memory_per_node"),
    ],
)
def test_submit_rejects_bad_input_naming_the_field(
    service: Service, change: dict, field: str
) -> None:
    before = service.client.get("/dashboard").json()["job_stats"]["total"]
    resp = service.client.post("/jobs/submit", json=job_payload("echo hi", **change))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert field in body["detail"] or any(e["field"] == field for e in body["errors"]), body
    assert service.client.get("/dashboard").json()["job_stats"]["total"] == before


def test_submit_rejects_blank_script_and_missing_fields(service: Service) -> None:
    resp = service.client.post("/jobs/submit", json=job_payload("  \n\t"))
    assert resp.status_code == 422
    assert "script" in resp.json()["detail"]
    payload = job_payload("echo hi")
    del payload["job"]["account"]
    del payload["job"]["name"]
    resp = service.client.post("/jobs/submit", json=payload)
    assert resp.status_code == 422
    fields = {e["field"] for e in resp.json()["errors"]}
    assert {"job.name", "job.account"} <= fields
    assert "缺少必填字段" in resp.json()["detail"]


def test_unknown_job_is_404(service: Service) -> None:
    for resp in (
        service.client.get("/jobs/query/999999"),
        service.client.post("/jobs/cancel/999999"),
    ):
        assert resp.status_code == 404
        assert "999999" in resp.json()["detail"]


def _intervals(tmp_path: Path, ids: list[int]) -> dict[int, tuple[float, float]]:
    out = {}
    for job_id in ids:
        start, end = (tmp_path / f"{job_id}.times").read_text().split()
        out[job_id] = (float(start), float(end))
    return out


def _max_overlap(intervals: list[tuple[float, float, int]]) -> int:
    """同时运行的最大 CPU 数（区间按开始/结束事件扫描）。"""
    events = sorted(
        [(s, cpus) for s, _, cpus in intervals] + [(e, -cpus) for _, e, cpus in intervals]
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


TIMED = 'date +%s.%N > "$SLURM_JOB_ID.times"; sleep {secs}; date +%s.%N >> "$SLURM_JOB_ID.times"'


def test_twenty_jobs_never_exceed_cluster_cpus_and_start_in_order(
    service: Service, tmp_path: Path
) -> None:
    ids = [
        service.submit(TIMED.format(secs=1), current_working_directory=str(tmp_path))
        for _ in range(20)
    ]
    for job_id in ids:
        service.wait_state(job_id, "COMPLETED", timeout=120)
    spans = _intervals(tmp_path, ids)
    assert _max_overlap([(s, e, 1) for s, e in spans.values()]) <= CLUSTER_CPUS
    # 调度决定严格按提交顺序；同一批同时派发的作业在操作系统层面的启动先后不可控，
    # 但任何作业都不会越过比它早一整批（集群 CPU 数）提交的作业
    starts = [service.query(j)["time"]["start_time"] for j in ids]
    assert starts == sorted(starts)
    recorded = [spans[j][0] for j in ids]
    for i in range(len(ids)):
        for j in range(i + CLUSTER_CPUS, len(ids)):
            assert recorded[i] <= recorded[j], (ids[i], ids[j])


def test_four_cpu_job_waits_for_four_free_cpus(service: Service, tmp_path: Path) -> None:
    wd = str(tmp_path)
    small = [service.submit(TIMED.format(secs=1.5), current_working_directory=wd) for _ in range(2)]
    big = service.submit(TIMED.format(secs=1), current_working_directory=wd, cpus_per_task=4)
    # 后来的作业时限比小作业长：按 EASY 回填它们必然推迟大作业，所以不能插到它前面。
    # 时限相同时它们与同一轮放下的小作业预计同时结束，回填是合法的（不推迟大作业），测试因此时好时坏
    after = [
        service.submit(TIMED.format(secs=0.5), current_working_directory=wd, time_limit="20")
        for _ in range(2)
    ]
    for job_id in small + [big] + after:
        service.wait_state(job_id, "COMPLETED", timeout=120)
    spans = _intervals(tmp_path, small + [big] + after)
    big_start, big_end = spans[big]
    assert all(spans[j][1] <= big_start + 0.05 for j in small), spans
    assert all(spans[j][0] >= big_end - 0.05 for j in after), spans
    cpus = {j: 1 for j in small + after} | {big: 4}
    assert _max_overlap([(s, e, cpus[j]) for j, (s, e) in spans.items()]) <= CLUSTER_CPUS


def test_time_limit_ends_timeout_and_kills_background_children(
    service: Service, tmp_path: Path
) -> None:
    script = "sleep 300 & echo $! > bg.pid\nsetsid sleep 301 & echo $! > bg2.pid\nsleep 300\n"
    job_id = service.submit(script, current_working_directory=str(tmp_path), time_limit="0:02")
    body = service.wait_state(job_id, "TIMEOUT", timeout=30)
    assert body["time"]["limit_time"] == "0:00:02"
    assert "时间限制" in body["error_msg"]
    assert body["detail"]["exit_code"] in ("0:15", "0:9")
    for name in ("bg.pid", "bg2.pid"):
        pid = int((tmp_path / name).read_text())
        wait_for(lambda p=pid: not pid_alive(p), 5, what=f"后台进程 {pid} 已被清理")


def _fill_cluster(service: Service, wd: str) -> list[int]:
    ids = [service.submit("sleep 300", current_working_directory=wd) for _ in range(CLUSTER_CPUS)]
    for job_id in ids:
        service.wait_state(job_id, "RUNNING")
    return ids


def test_cancel_pending_running_finished_and_twice(service: Service, tmp_path: Path) -> None:
    wd = str(tmp_path)
    blockers = _fill_cluster(service, wd)
    pending = service.submit("touch started", current_working_directory=wd)
    assert service.state(pending) == "PENDING"
    resp = service.client.post(f"/jobs/cancel/{pending}")
    assert resp.status_code == 200 and resp.json()["msg"]
    assert service.state(pending) == "CANCELLED"

    script = "sleep 300 & echo $! > child.pid\nsetsid sleep 301 & echo $! > gchild.pid\nsleep 300\n"
    running_dir = tmp_path / "running"
    for job_id in blockers:
        service.client.post(f"/jobs/cancel/{job_id}")
    running = service.submit(script, current_working_directory=str(running_dir))
    service.wait_state(running, "RUNNING")
    wait_for(lambda: (running_dir / "gchild.pid").exists(), 10)
    pids = [int((running_dir / n).read_text()) for n in ("child.pid", "gchild.pid")]
    cancelled_at = time.monotonic()
    assert service.client.post(f"/jobs/cancel/{running}").status_code == 200
    assert service.state(running) == "CANCELLED"
    grace = service.settings.kill_wait
    for pid in pids:
        wait_for(
            lambda p=pid: not pid_alive(p), grace + 1, what=f"进程 {pid} 在宽限期加 1 秒内消失"
        )
    assert time.monotonic() - cancelled_at <= grace + 1.5
    wait_for(lambda: service.held_cpus() == 0, 10, what=lambda: f"取消后资源归还：{service.held()}")

    # 再次取消、取消已结束的作业：200 且什么也不改变
    again = service.client.post(f"/jobs/cancel/{running}")
    assert again.status_code == 200 and "CANCELLED" in again.json()["msg"]
    assert service.state(running) == "CANCELLED"
    done = service.submit("true", current_working_directory=wd)
    before = service.wait_state(done, "COMPLETED")
    assert service.client.post(f"/jobs/cancel/{done}").status_code == 200
    assert service.query(done)["state"] == "COMPLETED"
    assert service.query(done)["time"]["end_time"] == before["time"]["end_time"]
    # 排队时被取消的作业从未启动
    assert service.query(pending)["time"]["start_time"] is None
    assert not (tmp_path / "started").exists()


def test_cancel_racing_completion_has_one_outcome(service: Service, tmp_path: Path) -> None:
    ids = [
        service.submit("sleep 0.$((RANDOM % 3))", current_working_directory=str(tmp_path))
        for _ in range(12)
    ]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: service.client.post(f"/jobs/cancel/{j}"), ids))
        # 并发的第二次取消：只有一个生效
        list(pool.map(lambda j: service.client.post(f"/jobs/cancel/{j}"), ids))
    finals = {}
    for job_id in ids:
        finals[job_id] = service.wait_state(job_id, "CANCELLED", "COMPLETED")["state"]
    wait_for(lambda: service.held_cpus() == 0, 30, what="竞争结束后资源全部归还")
    time.sleep(0.5)  # 给迟到的完成上报一个覆盖的机会：它必须失败
    for job_id, state in finals.items():
        assert service.state(job_id) == state


def test_dashboard_and_health_show_real_figures(service: Service, tmp_path: Path) -> None:
    job_id = service.submit("sleep 300", current_working_directory=str(tmp_path), cpus_per_task=2)
    service.wait_state(job_id, "RUNNING")
    dash = service.client.get("/dashboard").json()
    res = dash["resource_stats"]
    assert res["total_cpus"] == CLUSTER_CPUS
    assert res["allocated_cpus"] == 2
    assert res["available_cpus"] == CLUSTER_CPUS - 2
    assert res["utilization_rate"] == pytest.approx(0.5)
    assert dash["job_stats"]["running"] == 1
    assert dash["job_stats"]["total"] >= 1
    node = dash["node_info"][0]
    assert node["available"] and node["total_cpus"] == CLUSTER_CPUS and node["allocated_cpus"] == 2
    # 新增字段（议题 16）：没有 GPU 的集群上是 0 与空，旧字段不变
    assert (res["total_gpus"], res["allocated_gpus"], res["available_gpus"], res["gres"]) == (
        0,
        0,
        0,
        {},
    )
    assert (node["total_gpus"], node["gres"], node["features"]) == (0, {}, [])
    assert [j["job_id"] for j in dash["running_jobs"]] == [job_id]
    assert ISO_Z.match(dash["running_jobs"][0]["start_time"])
    health = service.client.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert {"postgres", "ray", "scheduler"} <= set(health.json()["components"])
    service.client.post(f"/jobs/cancel/{job_id}")
    datetime.fromisoformat(dash["running_jobs"][0]["submit_time"].replace("Z", "+00:00"))


def test_batch_submit_is_all_or_nothing(service: Service, tmp_path: Path) -> None:
    wd = str(tmp_path)
    good = [
        job_payload(f"echo {i}", current_working_directory=wd, standard_output=f"{i}.out")
        for i in range(3)
    ]
    resp = service.client.post("/jobs/submit/batch", json={"jobs": good})
    assert resp.status_code == 201, resp.text
    ids = resp.json()["job_ids"]
    assert len(ids) == 3 and ids == sorted(ids, key=int)
    for i, job_id in enumerate(ids):
        assert service.wait_state(int(job_id), "COMPLETED")["job_log"]["stdout"] == f"{i}\n"

    before = service.client.get("/dashboard").json()["job_stats"]["total"]
    bad = [good[0], job_payload("echo x", time_limit="soon")]
    resp = service.client.post("/jobs/submit/batch", json={"jobs": bad})
    assert resp.status_code == 422
    assert any(e["field"] == "jobs.1.job.time_limit" for e in resp.json()["errors"])
    too_big = [good[0], job_payload("echo x", cpus_per_task=64)]
    resp = service.client.post("/jobs/submit/batch", json={"jobs": too_big})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "jobs.1.job.cpus_per_task"
    assert service.client.get("/dashboard").json()["job_stats"]["total"] == before


def test_list_jobs_filters_newest_first_and_pages(service: Service, tmp_path: Path) -> None:
    wd = str(tmp_path)
    ids = [
        service.submit("true", current_working_directory=wd, account="lister", name=f"n{i}")
        for i in range(5)
    ]
    for job_id in ids:
        service.wait_state(job_id, "COMPLETED")
    failed = service.submit("exit 1", current_working_directory=wd, account="lister", name="bad")
    service.wait_state(failed, "FAILED")

    resp = service.client.get("/jobs", params={"account": "lister", "limit": 4})
    assert resp.status_code == 200
    page = resp.json()
    assert [j["job_id"] for j in page["jobs"]] == [failed, *reversed(ids)][:4]  # 最新在前
    rest = service.client.get(
        "/jobs", params={"account": "lister", "limit": 4, "cursor": page["next_cursor"]}
    ).json()
    assert [j["job_id"] for j in rest["jobs"]] == ids[:2][::-1]
    assert rest["next_cursor"] is None

    only_failed = service.client.get(
        "/jobs", params={"account": "lister", "state": "FAILED"}
    ).json()
    assert [j["job_id"] for j in only_failed["jobs"]] == [failed]
    row = only_failed["jobs"][0]
    assert row["exit_code"] == "1:0" and row["partition"] == "default" and row["node_list"]
    by_name = service.client.get("/jobs", params={"name": "n3", "account": "lister"}).json()
    assert [j["job_id"] for j in by_name["jobs"]] == [ids[3]]
    bad = service.client.get("/jobs", params={"state": "SLEEPING"})
    assert bad.status_code == 422 and "state" in bad.json()["detail"]
