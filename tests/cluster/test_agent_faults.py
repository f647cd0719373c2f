"""节点代理的故障（真实 Ray、真实 PostgreSQL、真实进程）：结局写不进数据库、启动前卡住、
代理死亡。每个场景都检查作业最终有结局、CPU 归还、不留进程，而不是悄悄卡在 RUNNING。"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from cluster.bootstrap import ensure_scheduler
from cluster.doctor import _check_jobs as doctor_check_jobs
from cluster.doctor import check_agents
from cluster.nodes import alive_nodes
from cluster.spool import spool_dir
from conductor.proctree import find_job_pids, kill_job_tree
from harness.waiting import pid_alive, wait_for
from tests.cluster.conftest import CLUSTER_CPUS, Service, make_settings

# 启动预算（秒）：派发之后这么久脚本还没启动，代理就放弃这次执行
LAUNCH_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def service(ray_cluster: Cluster, database_url: str) -> Iterator[Service]:
    svc = Service(make_settings(database_url, launch_timeout=LAUNCH_TIMEOUT))
    yield svc
    svc.close()


def _wait_file(path: Path, timeout: float = 30.0) -> None:
    wait_for(path.exists, timeout, what=f"文件 {path} 出现")


@contextmanager
def admin(service: Service) -> Iterator[Connection]:
    """本模块数据库上的一个自动提交连接（改数据库级设置、建触发器、看 pg_stat_activity）。"""
    engine = create_engine(service.settings.database_url or "", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def reconnect_everyone(conn: Connection) -> None:
    """断开本库的其他连接：各进程重连后才用上数据库级的新设置（如同故障切换到另一台服务器）。"""
    conn.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


def _db_name(service: Service) -> str:
    return str(make_url(service.settings.database_url or "").database)


def _blocked_by(conn: Connection, pid: int) -> int:
    return int(
        conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": pid},
        ).scalar_one()
    )


def _failing_reporter(service: Service) -> dict | None:
    """第一个报告失败的节点代理的上报器状况；都正常时为 None。"""
    for health in service.scheduler_status()["agents_health"].values():
        if health.get("reachable") and not health["reporter"]["ok"]:
            return health["reporter"]
    return None


def test_reporter_survives_statement_timeout(service: Service, tmp_path: Path) -> None:
    """结局的 UPDATE 等行锁超过 statement_timeout 被取消（不是连接错误，with_retry 不重试）：
    上报器不能就此停下，锁放开后结局照样写入，CPU 归还。"""
    job = service.submit(
        "touch started; while [ ! -e go ]; do sleep 0.05; done; echo done",
        current_working_directory=str(tmp_path),
    )
    _wait_file(tmp_path / "started")
    db = _db_name(service)
    with admin(service) as conn:
        conn.execute(text(f'ALTER DATABASE "{db}" SET statement_timeout = 500'))
        try:
            reconnect_everyone(conn)
            locker = service.engine.connect()
            tx = locker.begin()
            locker.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": job})
            pid = int(locker.execute(text("SELECT pg_backend_pid()")).scalar_one())
            (tmp_path / "go").touch()
            # 代理写结局时等在这把锁上，0.5 秒后语句被取消
            wait_for(lambda: _blocked_by(conn, pid) > 0, 30, what="代理的 UPDATE 等在行锁上")
            wait_for(lambda: _blocked_by(conn, pid) == 0, 30, what="代理的 UPDATE 因超时被取消")
            assert service.state(job) == "RUNNING"
            # 上报器还活着、留着这条结局重试，并如实报告自己的状况
            reporter = wait_for(lambda: _failing_reporter(service), 30, what="上报器报告失败")
            assert reporter["alive"] and reporter["pending"] == 1
            assert "statement timeout" in reporter["last_error"]
            health = service.client.get("/health")
            assert health.status_code == 503
            agents = health.json()["components"]["agents"]
            assert agents["status"] == "down" and "1 个作业结局写不进数据库" in agents["error"]
            tx.rollback()
            locker.close()
        finally:
            conn.execute(text(f'ALTER DATABASE "{db}" RESET statement_timeout'))
            reconnect_everyone(conn)
    body = service.wait_state(job, "COMPLETED", timeout=30)
    assert body["detail"]["exit_code"] == "0:0"
    assert body["job_log"]["stdout"] == "done\n"
    wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")
    wait_for(lambda: _failing_reporter(service) is None, 10, what="上报器恢复正常")
    assert service.client.get("/health").status_code == 200


def test_poisoned_outcome_does_not_block_others(service: Service, tmp_path: Path) -> None:
    """一个结局总是写不进（数据库触发器拒绝它）：别的作业的结局照常写入；
    障碍消除后它也以真实的退出码写入。"""
    wd = str(tmp_path)
    poisoned = service.submit(
        "touch started; while [ ! -e go ]; do sleep 0.05; done; exit 7",
        current_working_directory=wd,
    )
    _wait_file(tmp_path / "started")
    with admin(service) as conn:
        conn.execute(
            text(
                "CREATE FUNCTION reject_outcome() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION '测试：拒绝作业 % 的结局', NEW.id; END $$"
            )
        )
        try:
            conn.execute(
                text(
                    "CREATE TRIGGER reject_outcome BEFORE UPDATE ON jobs FOR EACH ROW "
                    f"WHEN (NEW.id = {poisoned} AND NEW.state NOT IN ('PENDING', 'RUNNING')) "
                    "EXECUTE FUNCTION reject_outcome()"
                )
            )
            (tmp_path / "go").touch()
            others = [
                service.submit(
                    f"echo {i}", current_working_directory=wd, standard_output=f"{i}.out"
                )
                for i in range(3)
            ]
            for job in others:
                service.wait_state(job, "COMPLETED", timeout=30)
            assert service.state(poisoned) == "RUNNING"
            reporter = wait_for(lambda: _failing_reporter(service), 30, what="上报器报告失败")
            assert (
                reporter["pending"] == 1 and f"拒绝作业 {poisoned} 的结局" in reporter["last_error"]
            )
            (finding,) = check_agents(service.settings, set(service.scheduler_status()["agents"]))
            assert not finding.ok and "1 个作业结局写不进数据库" in finding.message
        finally:
            conn.execute(text("DROP TRIGGER IF EXISTS reject_outcome ON jobs"))
            conn.execute(text("DROP FUNCTION IF EXISTS reject_outcome()"))
    body = service.wait_state(poisoned, "FAILED", timeout=30)
    assert body["detail"]["exit_code"] == "7:0"
    wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")


@ray.remote(num_cpus=0)
class CpuHolder:
    """别的 Ray 用户的 actor：占着节点的 CPU（共享的 Ray 集群上确有其事）。"""

    def ready(self) -> bool:
        return True


def _token(service: Service, job_id: int) -> str:
    with service.engine.connect() as conn:
        return str(
            conn.execute(text("SELECT token FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()
        )


def test_job_that_never_starts_ends_after_launch_budget(
    service: Service, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """Ray 里的 CPU 被别人占满：作业任务排着队，脚本永远不启动，时限也就永远不开始计时。
    启动预算用完，代理强制取消任务，作业以说明原因的 FAILED 结束，CPU 归还。"""
    head = ray_cluster.head_node.node_id
    assert service.scheduler_status()["nodes"] == [head]
    holder = CpuHolder.options(  # type: ignore[attr-defined]
        num_cpus=CLUSTER_CPUS, scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)
    ).remote()
    try:
        ray.get(holder.ready.remote(), timeout=60)
        job = service.submit("touch started", current_working_directory=str(tmp_path))
        body = service.wait_state(job, "FAILED", timeout=LAUNCH_TIMEOUT + 30)
        assert f"{LAUNCH_TIMEOUT:g} 秒内没有启动" in body["error_msg"]
        wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")
    finally:
        ray.kill(holder)
    after = service.submit("echo after", current_working_directory=str(tmp_path))
    service.wait_state(after, "COMPLETED")
    assert not (tmp_path / "started").exists()  # 被放弃的任务没有在资源空出后再运行


def test_watcher_error_still_records_an_outcome(service: Service, tmp_path: Path) -> None:
    """作业把自己的取消标记路径建成目录（以服务用户运行的作业能写临时目录）：代理清理标记时
    出错。监视者里出任何错都要得出结局，作业不能一直 RUNNING。"""
    marker = spool_dir() / "cancel-$CONDUCTOR_JOB_TOKEN"
    job = service.submit(f'mkdir "{marker}"; echo hi', current_working_directory=str(tmp_path))
    try:
        body = service.wait_state(job, "COMPLETED", timeout=30)
        assert body["detail"]["exit_code"] == "0:0"
        wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")
    finally:
        (spool_dir() / f"cancel-{_token(service, job)}").rmdir()


def test_output_path_that_is_a_fifo_fails_the_job_at_once(service: Service, tmp_path: Path) -> None:
    """标准输出指向一个 FIFO：以前执行器打开它时阻塞（没有读者就永远等），作业卡在启动前。
    现在作业立即失败，说明指明路径、它不是普通文件；没有进程启动，CPU 归还。"""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    job = service.submit(
        "touch started", current_working_directory=str(tmp_path), standard_output=str(fifo)
    )
    body = service.wait_state(job, "FAILED", timeout=30)
    assert f"输出文件 {fifo} 不是普通文件（FIFO）" in body["error_msg"]
    assert not (tmp_path / "started").exists()
    wait_for(lambda: service.held_cpus() == 0, 10, what="CPU 已归还")


def test_log_that_became_a_fifo_is_not_read_and_blocks_nothing(
    service: Service, tmp_path: Path
) -> None:
    """作业结束前把自己的日志换成 FIFO：以前读日志时 open 阻塞，每次查询都永久占住代理的一个
    线程，线程池耗尽后连结局都写不进数据库（写库与读日志共用默认线程池）。现在读日志立即
    答复“不是普通文件”，之后的作业照常记录。"""
    job = service.submit(
        "echo hi; rm -f out.txt; mkfifo out.txt", current_working_directory=str(tmp_path)
    )
    service.wait_state(job, "COMPLETED", timeout=30)
    fifo = tmp_path / "out.txt"
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            bodies = list(pool.map(lambda _: service.query(job), range(8)))
        after = service.submit(
            "echo after", current_working_directory=str(tmp_path), standard_output="after.txt"
        )
        service.wait_state(after, "COMPLETED", timeout=30)
        for body in bodies:
            assert f"日志文件 {fifo} 不是普通文件（FIFO）" in body["job_log"]["stdout"]
        logs = service.client.get(f"/jobs/{job}/logs")
        assert logs.status_code == 200 and "不是普通文件（FIFO）" in logs.text
    finally:
        # 修复之前：打开写端，放走所有卡在 open 里的读者（没有读者时打开失败，正是修复后的情形）
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _agent_pid(service: Service) -> int:
    (health,) = service.scheduler_status()["agents_health"].values()
    return int(health["pid"])


def test_new_agent_sweeps_orphans_of_jobs_settled_while_it_was_away(
    service: Service, tmp_path: Path
) -> None:
    """调度器不在时代理被 SIGKILL，作业由 conductor doctor --fix 记为 FAILED（doctor 不清理进程），
    setsid 的孙进程活了下来。调度器回来、为节点新建代理时已没有占用资源的作业可对账：
    新代理上任时自己清理前任留下的进程。"""
    job = service.submit(
        "setsid sleep 300 & echo $! > child.pid; touch started; sleep 300",
        current_working_directory=str(tmp_path),
    )
    _wait_file(tmp_path / "started")
    wait_for(lambda: (tmp_path / "child.pid").read_text().strip(), 10)
    child = int((tmp_path / "child.pid").read_text())
    token = _token(service, job)
    agent = _agent_pid(service)
    try:
        ray.kill(service.scheduler, no_restart=True)
        os.kill(agent, signal.SIGKILL)
        wait_for(lambda: not pid_alive(agent), 30, what="代理进程已死")
        alive = {n.node_id for n in alive_nodes()}
        findings = doctor_check_jobs(service.engine, service.settings, alive, fix=True)
        assert any("旧代理丢失——已修复" in f.message for f in findings), findings
        assert service.state(job) == "FAILED"
        assert pid_alive(child)  # 孤儿：没有谁清理它
        service.scheduler = ensure_scheduler(service.settings)
        wait_for(lambda: not pid_alive(child), 30, what="新代理清理了孤儿进程")
        wait_for(lambda: find_job_pids(token) == [], 30, what="作业的进程全部被清理")
    finally:
        kill_job_tree(token, grace=0)
    after = service.submit("echo after", current_working_directory=str(tmp_path))
    service.wait_state(after, "COMPLETED")


def test_agent_killed_keeps_real_outcomes_and_leaves_nothing(
    service: Service, tmp_path: Path
) -> None:
    """代理被 SIGKILL（如 OOM）时：一个作业刚结束、结局还没写进数据库（它的 UPDATE 正等着行锁），
    另一个仍在运行并有 setsid 的孙进程。前者以真实的退出码记录，而不是“代理已退出”的 FAILED；
    后者记 FAILED 并写明原因；CPU 全部归还且能再用，不留任何进程。"""
    wd = str(tmp_path)
    finished = service.submit(
        "touch started-a; while [ ! -e go ]; do sleep 0.05; done; echo real",
        current_working_directory=wd,
        standard_output="a.out",
    )
    running = service.submit(
        "setsid sleep 300 & echo $! > child.pid; touch started-b; sleep 300",
        current_working_directory=wd,
        standard_output="b.out",
    )
    _wait_file(tmp_path / "started-a")
    _wait_file(tmp_path / "started-b")
    wait_for(lambda: (tmp_path / "child.pid").read_text().strip(), 10)
    child = int((tmp_path / "child.pid").read_text())
    tokens = [_token(service, finished), _token(service, running)]
    agent = _agent_pid(service)
    try:
        with admin(service) as conn, service.engine.connect() as locker:
            tx = locker.begin()
            locker.execute(text("SELECT 1 FROM jobs WHERE id = :id FOR UPDATE"), {"id": finished})
            pid = int(locker.execute(text("SELECT pg_backend_pid()")).scalar_one())
            (tmp_path / "go").touch()
            wait_for(lambda: _blocked_by(conn, pid) > 0, 30, what="代理写结局时等在行锁上")
            os.kill(agent, signal.SIGKILL)
            wait_for(lambda: not pid_alive(agent), 30, what="代理进程已死")
            tx.rollback()
        body = service.wait_state(finished, "COMPLETED", "FAILED", timeout=60)
        assert (body["state"], body["detail"]["exit_code"]) == ("COMPLETED", "0:0"), body
        assert body["job_log"]["stdout"] == "real\n"
        body = service.wait_state(running, "FAILED", timeout=60)
        assert "节点代理已退出" in body["error_msg"]
        wait_for(lambda: not pid_alive(child), 30, what="孙进程已被清理")
        for token in tokens:
            wait_for(lambda t=token: find_job_pids(t) == [], 30, what="作业的进程全部被清理")
        wait_for(lambda: service.held_cpus() == 0, 30, what="CPU 已归还")
    finally:
        for token in tokens:
            kill_job_tree(token, grace=0)
    again = service.submit("true", current_working_directory=wd, cpus_per_task=CLUSTER_CPUS)
    service.wait_state(again, "COMPLETED")
