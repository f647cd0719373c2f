"""`conductor doctor`：一致性检查，可选地修复能安全修复的问题。供 cron 与监控使用。

检查：PostgreSQL 与 Ray 可达、调度器存活且健康（主循环在前进）、各节点代理能否把结局写入数据库、
RUNNING 作业是否有存活的执行、已结束的作业是否仍占着 CPU。修复只做确定安全的事：节点已失联的作业判 NODE_FAIL，
执行确已丢失的作业判 FAILED 或只释放资源；“代理存活但不认识”的 RUNNING 作业只报告，
由调度器的对账处理（它可能正在派发途中；认领超过 stranded_after 秒后周期对账将其重新排队）。
判定与修复用调度器的同一套：reconcile.decide 与 reconcile.apply。
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from sqlalchemy.engine import Engine

from cluster.bootstrap import connect_ray
from cluster.names import SCHEDULER_NAME, agent_name
from cluster.nodes import alive_nodes
from cluster.reconcile import AgentView, HeldJob, ReconcilePlan, apply, decide, load_held_jobs
from conductor.db import make_engine, ping
from conductor.settings import Settings


@dataclass
class Finding:
    """一条检查结果。ok=False 为问题；fixed 表示已修复。"""

    ok: bool
    message: str
    fixed: bool = False


LOST_REASON = "conductor doctor：作业的执行已随节点代理丢失（作业不会自动重试，请重新提交）"
RECHECK_DELAY = 1.0
# 节点上没有代理（或它已死）时的代理身份：与任何作业记下的 agent_id 都不同
NO_AGENT = ""


def run_checks(settings: Settings, fix: bool) -> list[Finding]:
    """执行全部检查；连接失败本身也是一条发现。"""
    findings: list[Finding] = []
    engine = make_engine(settings.database_url or "", pool_size=1)
    try:
        ping(engine)
        findings.append(Finding(True, "PostgreSQL 可达"))
    except Exception as exc:  # noqa: BLE001 - 把任何失败报告出来
        findings.append(Finding(False, f"PostgreSQL 不可达：{exc}"))
        return findings
    try:
        connect_ray(settings, timeout=15)
        nodes = alive_nodes()
        findings.append(Finding(True, f"Ray 集群可达，存活节点 {len(nodes)} 个"))
    except Exception as exc:  # noqa: BLE001
        findings.append(Finding(False, f"Ray 集群不可达：{exc}"))
        return findings
    try:
        findings.append(check_scheduler(settings))
        findings += check_agents(settings, {n.node_id for n in nodes})
        findings += _check_jobs(engine, settings, {n.node_id for n in nodes}, fix)
    finally:
        ray.shutdown()
        engine.dispose()
    return findings


def check_scheduler(settings: Settings) -> Finding:
    """调度器存活、完成了启动对账，并且报告自己健康（能应答不等于主循环还在干活）。"""
    try:
        handle = ray.get_actor(SCHEDULER_NAME, namespace=settings.namespace)
        status = ray.get(handle.status.remote(), timeout=10)
    except Exception as exc:  # noqa: BLE001
        return Finding(False, f"调度器不可用：{type(exc).__name__}: {exc}")
    if status.get("healthy") is False:
        return Finding(False, "调度器存活但不健康：" + "；".join(status.get("problems") or []))
    if not status["ready"]:
        return Finding(False, "调度器存活但尚未完成启动对账")
    return Finding(
        True, f"调度器存活（纪元 {status['epoch']}，已对账 {status['reconciliations']} 次）"
    )


def check_agents(settings: Settings, node_ids: set[str]) -> list[Finding]:
    """各节点代理的结局上报器：有结局写不进数据库、或代理不应答，都是问题（只报告，不修复）。"""
    problems, healthy = [], 0
    for node_id in sorted(node_ids):
        try:
            handle = ray.get_actor(agent_name(node_id), namespace=settings.namespace)
            health = ray.get(handle.health.remote(), timeout=10)
        except (ValueError, RayActorError):
            continue  # 还没有代理（或刚退出）：它手里的作业由下面的检查判定
        except GetTimeoutError:
            problems.append(Finding(False, f"节点 {node_id[:8]} 的代理 10 秒内无应答"))
            continue
        reporter = health["reporter"]
        if reporter["ok"]:
            healthy += 1
            continue
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reporter["since"]))
            if reporter["since"]
            else "未知时刻"
        )
        problems.append(
            Finding(
                False,
                f"节点 {node_id[:8]} 的代理有 {reporter['pending']} 个作业结局写不进数据库"
                f"（自 {since} 起连续失败 {reporter['failures']} 次，"
                f"上报循环{'在运行' if reporter['alive'] else '已停止'}）：{reporter['last_error']}",
            )
        )
    if problems:
        return problems
    return [Finding(True, f"各节点代理的结局上报正常（{healthy} 个代理）")]


def _agent_views(settings: Settings, node_ids: set[str]) -> dict[str, AgentView]:
    """节点 → 代理视图；代理不存在或已死时是一个不持有任何作业的陌生身份（其作业判丢失）；
    无响应的节点不在结果里（decide 不判定它们，免得冤枉慢节点）。"""
    views: dict[str, AgentView] = {}
    for node_id in node_ids:
        try:
            handle = ray.get_actor(agent_name(node_id), namespace=settings.namespace)
            agent_id, jobs = ray.get(handle.holding.remote(), timeout=10)
            views[node_id] = AgentView(agent_id, frozenset(jobs))
        except (ValueError, RayActorError):
            views[node_id] = AgentView(NO_AGENT, frozenset())
        except GetTimeoutError:
            continue
    return views


def _problems(
    engine: Engine, settings: Settings, alive: set[str]
) -> dict[int, tuple[HeldJob, str]]:
    """作业 id → (作业, 问题类别)，按作业在数据库中的顺序。判定与调度器的运行期对账相同（decide），
    只是不重新排队：doctor 不知道调度器是否正在派发。"""
    held = load_held_jobs(engine)
    views = _agent_views(settings, {j.node_id for j in held} & alive)
    plan = decide(held, alive, views, startup=False)
    kinds = {
        "node_dead": plan.node_fail,
        "finished_but_booked": plan.finished,
        "agent_lost": plan.agent_lost,
        "unknown_to_agent": plan.unknown,
    }
    found = {job.job_id: (job, kind) for kind, jobs in kinds.items() for job in jobs}
    return {j.job_id: found[j.job_id] for j in held if j.job_id in found}


def _check_jobs(engine: Engine, settings: Settings, alive: set[str], fix: bool) -> list[Finding]:
    first = _problems(engine, settings, alive)
    if first:
        # 派发、结束上报可能正在进行：隔一会儿再看，只报告两次都在的问题
        time.sleep(RECHECK_DELAY)
        second = _problems(engine, settings, alive)
        first = {k: v for k, v in second.items() if k in first and first[k][1] == v[1]}
    if not first:
        return [Finding(True, "所有占用资源的作业都有存活的执行")]
    if fix:
        by_kind: dict[str, list[HeldJob]] = {kind: [] for kind in MESSAGES}
        for job, kind in first.values():
            by_kind[kind].append(job)
        plan = ReconcilePlan(
            node_fail=by_kind["node_dead"],
            agent_lost=by_kind["agent_lost"],
            finished=by_kind["finished_but_booked"],
        )
        apply(engine, plan, LOST_REASON)
    return [_describe(job, kind, fix) for job, kind in first.values()]


MESSAGES = {
    "node_dead": "作业 {id}（{state}）占用资源，但节点 {node} 已失联",
    "finished_but_booked": "作业 {id} 已结束（{state}）却仍占用 CPU",
    "agent_lost": "作业 {id}（{state}）的执行已随节点 {node} 上的旧代理丢失",
    "unknown_to_agent": "作业 {id}（{state}）标为运行中，但节点 {node} 的代理没有它的执行",
}


def _describe(job: HeldJob, kind: str, fixed: bool) -> Finding:
    message = MESSAGES[kind].format(id=job.job_id, state=job.state, node=job.node_name)
    if kind == "unknown_to_agent":
        if fixed:
            message += "（不自动修复：可能正在派发，调度器的周期对账会处理）"
        return Finding(False, message)
    if not fixed:
        return Finding(False, message)
    return Finding(False, message + "——已修复", fixed=True)
