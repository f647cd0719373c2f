"""actor 的名字：调度器、节点代理与各管理命令都从这里取，谁也不必为一个名字导入 actor 模块。"""

from __future__ import annotations

SCHEDULER_NAME = "conductor-scheduler"
AGENT_PREFIX = "conductor-agent-"


def agent_name(node_id: str) -> str:
    """节点代理的 actor 名：每个 Ray 节点一个。"""
    return AGENT_PREFIX + node_id
