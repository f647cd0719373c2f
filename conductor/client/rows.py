"""作业列表与作业步的表格行（只依赖 rich，不引入 typer：单元测试可直接导入）。"""

from __future__ import annotations

from typing import Any

from rich.text import Text

STATE_STYLES = {"RUNNING": "green", "PENDING": "yellow", "COMPLETED": "blue", "FAILED": "red"}


def lit(value: object, style: str = "") -> Text:
    """原样显示的文字：作业名、账户、服务的消息里都可能有 [ ]，不能当作 Rich 标记解释。"""
    return Text("" if value is None else str(value), style=style)


def step_rows(steps: list[dict[str, Any]]) -> list[tuple[Text, ...]]:
    """作业步的行（同 sacct 的 12.batch、12.0…）：作业步 ID、名称、状态、退出码、任务数、节点、开始、结束。"""
    return [
        (
            lit(s["step_id"]),
            lit(s.get("name") or ""),
            lit(s["state"], STATE_STYLES.get(s["state"], "")),
            *map(lit, (s.get("exit_code"), s.get("ntasks"), s.get("node_list"))),
            *map(lit, (s.get("start_time"), s.get("end_time"))),
        )
        for s in steps
    ]


def history_rows(jobs: list[dict[str, Any]]) -> list[tuple[Text, ...]]:
    """history 的行：每个作业一行，其后是它的作业步（同 sacct：作业步的账户、分区、已用留空）。"""
    rows: list[tuple[Text, ...]] = []
    for j in jobs:
        rows.append(
            (
                *map(lit, (j["job_id"], j["name"], j["account"], j["partition"])),
                lit(j["state"], STATE_STYLES.get(j["state"], "")),
                *map(lit, (j["elapsed_time"], j["exit_code"], j["start_time"], j["end_time"])),
            )
        )
        for s in j.get("steps") or []:  # 旧服务端没有这个字段
            rows.append(
                (
                    lit(s["step_id"]),
                    lit(s.get("name") or ""),
                    lit(""),
                    lit(""),
                    lit(s["state"], STATE_STYLES.get(s["state"], "")),
                    lit(""),
                    *map(lit, (s.get("exit_code"), s.get("start_time"), s.get("end_time"))),
                )
            )
    return rows
