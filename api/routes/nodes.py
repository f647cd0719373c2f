"""节点的排空与恢复（新增接口，仅管理员）：POST /nodes/{node_name}/drain 与 /resume。

排空只是不再往节点上放新作业：运行中的照常跑完，节点随后显示 drained（规则见 conductor/drains.py）。
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import PrincipalDep, RuntimeDep
from api.routes.jobs import service_user
from api.runtime import Runtime
from api.schemas import MessageResponse, NodeDrainRequest
from conductor.auth import Principal
from conductor.db import retry_conflicts, session_scope
from conductor.drains import reason_error
from conductor.errors import Forbidden, InvalidJobRequest, NodeNotDrained, NodeNotFound
from conductor.store import drains

router = APIRouter()

NodeName = Annotated[str, Path(description="节点名（sinfo -N、scontrol show node 里的名字）")]


def _admin(principal: Principal, action: str) -> None:
    if not principal.admin:
        raise Forbidden(f"只有管理员能{action}节点（{principal.label} 的令牌不行）")


def _known(rt: Runtime, node_name: str) -> None:
    """节点须是集群里的节点（存活或已失联），否则同 Slurm 报 Invalid node name specified。"""
    if node_name not in {n.node_name for n in rt.cluster.nodes()}:
        raise NodeNotFound(f"Invalid node name specified：集群里没有节点 {node_name}")


@router.post("/nodes/{node_name}/drain", response_model=MessageResponse)
def drain(
    node_name: NodeName, req: NodeDrainRequest, principal: PrincipalDep, rt: RuntimeDep
) -> MessageResponse:
    """排空节点（scontrol update NodeName=… State=DRAIN Reason=…）：不再往上放新作业，运行中的照常跑完。
    必须写明原因；节点须是集群里的节点（存活或已失联）。仅管理员。"""
    _admin(principal, "排空")
    problem = reason_error(req.reason)
    if problem is not None:
        raise InvalidJobRequest("reason", problem)
    _known(rt, node_name)

    def apply() -> None:
        with session_scope(rt.engine) as session:
            drains.drain(session, [node_name], req.reason.strip(), service_user())

    retry_conflicts(apply, what=f"排空节点 {node_name}")
    return MessageResponse(msg=f"节点 {node_name} 已排空：不再接新作业，运行中的作业照常跑完")


@router.post("/nodes/{node_name}/resume", response_model=MessageResponse)
def resume(node_name: NodeName, principal: PrincipalDep, rt: RuntimeDep) -> MessageResponse:
    """解除排空（scontrol update NodeName=… State=RESUME）：节点重新接作业。仅管理员。
    节点不在排空时 409（同 Slurm：Invalid node state specified）。"""
    _admin(principal, "恢复")

    def apply() -> list[str]:
        with session_scope(rt.engine) as session:
            return drains.resume(session, [node_name])

    if not retry_conflicts(apply, what=f"恢复节点 {node_name}"):
        _known(rt, node_name)
        raise NodeNotDrained(f"Invalid node state specified：节点 {node_name} 没有在排空")
    rt.cluster.wake()  # 节点空出来了，马上调度一轮
    return MessageResponse(msg=f"节点 {node_name} 已恢复，重新接作业")
