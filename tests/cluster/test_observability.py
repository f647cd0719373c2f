"""观测：Prometheus /metrics（抓取时从数据库与调度器现算）与调度器导出的 Ray 指标。"""

from __future__ import annotations

from pathlib import Path

import httpx
import ray
from prometheus_client.parser import text_string_to_metric_families

from harness.waiting import wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service


def _scrape(service: Service) -> dict[tuple[str, tuple], float]:
    resp = service.client.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def test_prometheus_metrics(service: Service, tmp_path: Path) -> None:
    cwd = str(tmp_path)
    done = [service.submit("true", current_working_directory=cwd) for _ in range(2)]
    failed = service.submit("exit 1", current_working_directory=cwd)
    for job_id in done:
        service.wait_state(job_id, "COMPLETED")
    service.wait_state(failed, "FAILED")
    running = service.submit("sleep 300", cpus_per_task=2, current_working_directory=cwd)
    service.wait_state(running, "RUNNING")

    m = _scrape(service)
    assert m[("conductor_jobs", (("state", "COMPLETED"),))] == 2
    assert m[("conductor_jobs", (("state", "FAILED"),))] == 1
    assert m[("conductor_jobs", (("state", "RUNNING"),))] == 1
    assert m[("conductor_jobs", (("state", "CANCELLED"),))] == 0
    assert m[("conductor_queue_depth", ())] == 0
    assert m[("conductor_submit_to_start_seconds_count", ())] == 4
    assert m[("conductor_submit_to_start_seconds_bucket", (("le", "+Inf"),))] == 4
    assert m[("conductor_submit_to_start_seconds_sum", ())] > 0
    assert m[("conductor_cpus_allocated", ())] == 2
    assert m[("conductor_cpus_total", ())] >= CLUSTER_CPUS
    # GPU 与 CPU 同一种算法：没有 GPU 的集群上照样导出，为 0（有 GPU 的见 test_multinode）
    assert (m[("conductor_gpus_total", ())], m[("conductor_gpus_allocated", ())]) == (0, 0)
    assert m[("conductor_scheduler_up", ())] == 1
    assert m[("conductor_scheduler_restarts_total", ())] == 0
    assert m[("conductor_scheduler_passes_total", ())] > 0
    wait_for(
        lambda: _scrape(service)[("conductor_reconciliations_total", ())] > 0, 30, what="对账计数"
    )

    # 调度器被杀、由 Ray 重启：重启次数加一（来自数据库里的纪元记录，API 重启也不丢）
    old = service.kill_scheduler()
    service.wait_scheduler_restarted(old)
    m = _scrape(service)
    assert m[("conductor_scheduler_restarts_total", ())] == 1
    assert m[("conductor_scheduler_epoch", ())] > old
    service.client.post(f"/jobs/cancel/{running}")


def test_scheduler_exports_ray_metrics_and_job_tasks_are_named(
    service: Service, tmp_path: Path
) -> None:
    """调度器的 ray.util.metrics 出现在 Ray 节点的指标端口上（与 Ray 自己的指标在一起）；
    作业的 Ray 任务名为 job-<id>:<作业名>，在 Ray 的任务指标与仪表盘里认得出是哪个作业。"""
    job_id = service.submit("true", name="probe", current_working_directory=str(tmp_path))
    service.wait_state(job_id, "COMPLETED")
    ports = {n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]}
    namespace = f'namespace="{service.settings.namespace}"'

    def exported() -> str | None:
        for port in ports:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            passes = [ln for ln in body.splitlines() if "conductor_scheduler_passes" in ln]
            if any(namespace in ln for ln in passes) and f'Name="job-{job_id}:probe"' in body:
                return body
        return None

    body = wait_for(exported, 60, interval=1, what="Ray 指标端口导出调度器指标与作业任务名")
    assert "conductor_cpus_total" in body and "conductor_reconciliations" in body
    assert "conductor_gpus_total" in body and "conductor_gpus_allocated" in body


def test_health_has_dashboard_url(service: Service) -> None:
    body = service.client.get("/health").json()
    assert "dashboard_url" in body
