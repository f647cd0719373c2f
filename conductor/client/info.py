"""`conductor info`（类似 sinfo）：各节点与分区的 CPU、GPU 与通用资源，Ray 仪表盘地址，服务不健康时的说明。

GPU、通用资源与特性的列只在集群里有它们时才显示：纯 CPU 的集群输出不变，不多几列全是 0 的噪音；
--json 总是给出全部字段。"""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from conductor.client import DEFAULT_URL, ClientError
from conductor.client.options import JsonOption, UrlOption, connect
from conductor.client.output import err, lit, out


def _busy(node: dict[str, Any]) -> bool:
    """节点上有没有任何资源被作业占着（CPU、GPU、通用资源一视同仁）。"""
    held = [node["allocated_cpus"], node.get("allocated_gpus", 0)]
    return any(held) or any(g["allocated"] for g in node.get("gres", {}).values())


def _node_state(node: dict[str, Any]) -> Any:
    # 同 sinfo：CPU 全部分配为 alloc，部分为 mix；排空中还有作业为 drng，没有了为 drain
    if not node["available"]:
        return lit("down", "red")
    if node.get("state") in ("draining", "drained"):
        return lit("drng" if node["state"] == "draining" else "drain", "yellow")
    if not _busy(node):
        return lit("idle")
    if node["available_cpus"] == 0:
        return lit("alloc")
    return lit("mix")


def _amount(value: float) -> str:
    return f"{value:g}"


def _gres(gres: dict[str, dict[str, float]]) -> str:
    """通用资源的空闲/总数：nvme 1/2 fpga 0/1。"""
    return " ".join(
        f"{name} {_amount(g['available'])}/{_amount(g['total'])}"
        for name, g in sorted(gres.items())
    )


def info(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """集群信息（类似 sinfo）：各节点与分区的 CPU、GPU 与通用资源的空闲/总数，以及 Ray 仪表盘地址。"""
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
    nodes = dash["node_info"]
    r = dash["resource_stats"]
    gpus = any(n.get("total_gpus") for n in nodes)
    gres = any(n.get("gres") for n in nodes)
    features = any(n.get("features") for n in nodes)
    optional = (("GPU 空闲/总数", gpus), ("通用资源 空闲/总数", gres), ("特性", features))
    table = Table(
        "分区", "节点", "状态", "CPU 已用", "CPU 空闲", "CPU 总数", *(c for c, on in optional if on)
    )
    for n in nodes:
        row = [
            *map(lit, (n["partition"], n["node_name"])),
            _node_state(n),
            *map(lit, (n["allocated_cpus"], n["available_cpus"], n["total_cpus"])),
        ]
        if gpus:
            row.append(lit(f"{n.get('available_gpus', 0)}/{n.get('total_gpus', 0)}"))
        if gres:
            row.append(lit(_gres(n.get("gres", {}))))
        if features:
            row.append(lit(",".join(n.get("features", []))))
        table.add_row(*row)
    out.print(table)
    out.print(
        f"CPU 空闲/总数：{r['available_cpus']}/{r['total_cpus']}"
        f"（已用 {r['allocated_cpus']}，使用率 {r['utilization_rate']:.0%}）",
        highlight=False,
    )
    if r.get("total_gpus"):
        out.print(
            f"GPU 空闲/总数：{r['available_gpus']}/{r['total_gpus']}（已用 {r['allocated_gpus']}）",
            highlight=False,
        )
    if r.get("gres"):
        out.print(lit(f"通用资源 空闲/总数：{_gres(r['gres'])}"), highlight=False)
    out.print(lit(f"Ray 仪表盘：{dashboard_url or '未启用'}"), highlight=False, soft_wrap=True)
    for n in nodes:
        if n.get("drain_reason"):
            out.print(
                lit(f"节点 {n['node_name']} 排空中：{n['drain_reason']}（{n.get('drained_by')}）"),
                highlight=False,
            )
    if health.get("status") not in (None, "healthy"):
        err.print(lit(f"服务状态：{health.get('detail', health.get('status'))}", "yellow"))
