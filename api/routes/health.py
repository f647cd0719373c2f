"""健康检查：GET /health——PostgreSQL、Ray、调度器与各节点代理的结局上报。不需要令牌。"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep
from conductor.db import ping

router = APIRouter()


@router.get("/health")
def health(rt: RuntimeDep) -> JSONResponse:
    """检查 PostgreSQL、Ray 与调度器；任何一项不可用（调度器能应答但报告不健康也算）即 503 并指明哪一项。"""
    components: dict[str, dict] = {}
    checks = {
        "postgres": lambda: ping(rt.engine),
        "ray": lambda: {"alive_nodes": sum(1 for n in rt.cluster.nodes() if n.alive)},
        "scheduler": lambda: rt.cluster.scheduler_status(),
    }
    for name, check in checks.items():
        try:
            info = check()
            components[name] = {"status": "up", **(info or {})}
        except Exception as exc:  # noqa: BLE001 - 健康检查要报告任何故障
            components[name] = {"status": "down", "error": str(exc) or type(exc).__name__}
    scheduler = components["scheduler"]
    if scheduler["status"] == "up" and scheduler.get("healthy") is False:
        # 调度器能应答却不在干活（主循环已退出、停滞、节点列表读不到）：同样算不可用
        scheduler["status"] = "down"
        scheduler["error"] = "；".join(scheduler.get("problems") or ["调度器报告不健康"])
    agents = _agents_component(components["scheduler"].pop("agents_health", None))
    if agents is not None:
        components["agents"] = agents
    down = [name for name, c in components.items() if c["status"] != "up"]
    body = {
        "status": "healthy" if not down else "unhealthy",
        "components": components,
        "dashboard_url": rt.cluster.dashboard_url(),
    }
    if down:
        body["detail"] = "不可用的组件：" + "、".join(down)
    return JSONResponse(status_code=503 if down else 200, content=body)


def _agents_component(health: dict | None) -> dict | None:
    """各节点代理的结局上报器：有结局写不进数据库即 down（那些作业会一直 RUNNING、占着 CPU）。

    代理暂时无响应只报告、不算 down（新节点的代理可能正在启动）。调度器不可用时无从得知，省略。
    /health 不需认证：只给错误的类名，不给消息（可能含数据库地址与用户名），细节见 conductor doctor。"""
    if health is None:
        return None
    nodes: dict[str, dict] = {}
    failing = []
    for node_id, h in health.items():
        reporter = h.get("reporter") if h.get("reachable", True) else None
        if reporter is None:
            nodes[node_id] = {"reachable": False}
            continue
        keys = ("ok", "pending", "failures", "error_kind", "since")
        nodes[node_id] = {k: reporter.get(k) for k in keys}
        if reporter.get("ok") is False:
            failing.append(
                f"节点 {node_id[:8]} 的代理有 {reporter.get('pending')} 个作业结局写不进数据库"
                f"（{reporter.get('error_kind')}）"
            )
    component: dict = {"status": "down" if failing else "up", "nodes": nodes}
    if failing:
        component["error"] = "；".join(failing)
    return component
