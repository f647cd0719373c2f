"""`conductor info`（类似 sinfo）：各节点与分区的 CPU，Ray 仪表盘地址，服务不健康时的说明。"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from conductor.client import DEFAULT_URL, ClientError
from conductor.client.options import JsonOption, UrlOption, connect
from conductor.client.output import err, lit, out


def _node_state(node: dict[str, Any]) -> Any:
    if not node["available"]:
        return lit("down", "red")
    if node["allocated_cpus"] == 0:
        return lit("idle")
    if node["available_cpus"] == 0:
        return lit("alloc")
    return lit("mix")


def info(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """集群信息（类似 sinfo）：各节点与分区的 CPU 空闲/总数，以及 Ray 仪表盘地址。"""
    with connect(url) as client:
        dash = client.dashboard()
        try:
            health = client.health()
        except ClientError:
            health = {}  # 总览已经拿到：健康检查失败只少显示仪表盘地址与服务状态
    dashboard_url = health.get("dashboard_url")
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "nodes": dash["node_info"],
                    "resources": dash["resource_stats"],
                    "dashboard_url": dashboard_url,
                    "status": health.get("status"),
                }
            )
        )
        return
    table = Table("分区", "节点", "状态", "CPU 已用", "CPU 空闲", "CPU 总数")
    for n in dash["node_info"]:
        table.add_row(
            *map(lit, (n["partition"], n["node_name"])),
            _node_state(n),
            *map(lit, (n["allocated_cpus"], n["available_cpus"], n["total_cpus"])),
        )
    out.print(table)
    r = dash["resource_stats"]
    out.print(
        f"CPU 空闲/总数：{r['available_cpus']}/{r['total_cpus']}"
        f"（已用 {r['allocated_cpus']}，使用率 {r['utilization_rate']:.0%}）",
        highlight=False,
    )
    out.print(lit(f"Ray 仪表盘：{dashboard_url or '未启用'}"), highlight=False, soft_wrap=True)
    if health.get("status") not in (None, "healthy"):
        err.print(lit(f"服务状态：{health.get('detail', health.get('status'))}", "yellow"))
