"""作业的命令：query（一个作业的详情）、cancel（取消，可多个）、queue 与 history（列表）。"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from conductor.client import DEFAULT_URL, ClientError
from conductor.client.options import JsonOption, UrlOption, connect
from conductor.client.output import STATE_STYLES, err, exit_code, lit, out
from conductor.client.rows import history_rows, step_rows

JobIdArgument = Annotated[
    str, typer.Argument(help="作业 ID；数组任务写作 12_3，数组主作业号指整个数组")
]
AccountFilter = Annotated[str | None, typer.Option("--account", "-A", help="只看该账户")]
PartitionFilter = Annotated[str | None, typer.Option("--partition", "-p", help="只看该分区")]
LimitOption = Annotated[int, typer.Option("--limit", help="最多显示多少行")]


def query(job_id: JobIdArgument, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """查询作业状态、时间、退出码与日志。"""
    with connect(url) as client:
        body = client.query(job_id)
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table(show_header=False)
    detail, times = body["detail"], body["time"]
    rows = [
        ("作业", f"{body['job_id']}（{detail['job_name']}）"),
        ("状态", body["state"]),
        ("原因", body.get("error_msg") or ""),
        ("账户/分区", f"{detail['account']} / {detail['partition']}"),
        (
            "CPU/节点",
            f"{detail['allocated_cpus']} / {detail.get('allocated_nodes', 1)}"
            f"（{detail['node_list']}）",
        ),
        ("退出码", detail.get("exit_code") or ""),
        ("提交/开始/结束", f"{times['submit_time']} / {times['start_time']} / {times['end_time']}"),
        ("已用/上限", f"{times['elapsed_time']} / {times['limit_time']}"),
    ]
    for key, value in rows:
        table.add_row(key, lit(value))
    out.print(table)
    if body.get("steps"):  # 旧服务端没有这个字段
        steps = Table("作业步", "名称", "状态", "退出码", "任务数", "节点", "开始", "结束")
        for row in step_rows(body["steps"]):
            steps.add_row(*row)
        out.print(steps)
    for stream in ("stdout", "stderr"):
        if body["job_log"][stream]:
            out.rule(stream)
            out.print(body["job_log"][stream], markup=False, highlight=False)


def cancel(
    job_ids: Annotated[list[str], typer.Argument(help="作业 ID，可给多个；数组任务写作 12_3")],
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """取消作业（幂等，可一次取消多个）：逐个报告结果，任何一个失败则以非零码退出。"""
    results: list[dict[str, Any]] = []
    worst = 0
    with connect(url) as client:
        for job_id in job_ids:
            try:
                ok, message = True, client.cancel(job_id).get("msg")
            except ClientError as exc:
                ok, message = False, exc.message
                worst = max(worst, exit_code(exc))
            results.append({"job_id": str(job_id), "ok": ok, "msg": message})
            if not as_json:
                (out if ok else err).print(
                    lit(f"{job_id}：{message}") if ok else lit(f"{job_id}：错误：{message}", "red"),
                    highlight=False,
                )
    if as_json:
        out.print_json(json.dumps(results))
    if worst:
        raise typer.Exit(worst)


def queue(
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-t", help="状态，可重复；默认 PENDING 与 RUNNING"),
    ] = None,
    account: AccountFilter = None,
    partition: PartitionFilter = None,
    limit: LimitOption = 100,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """列出作业（类似 squeue）：最新在前。"""
    with connect(url) as client:
        body = client.jobs(
            states=state or ["PENDING", "RUNNING"],
            account=account,
            partition=partition,
            limit=limit,
        )
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table("作业", "名称", "账户", "分区", "状态", "已用", "CPU", "节点数", "节点/原因")
    for j in body["jobs"]:
        style = STATE_STYLES.get(j["state"], "")
        table.add_row(
            *map(lit, (j["job_id"], j["name"], j["account"], j["partition"])),
            lit(j["state"], style),
            *map(lit, (j["elapsed_time"], j["allocated_cpus"], j.get("nodes", 1))),
            lit(j["node_list"] or j.get("state_reason") or ""),  # 排队时显示原因（若服务端提供）
        )
    out.print(table)


def history(
    state: Annotated[
        list[str] | None, typer.Option("--state", "-s", help="状态，可重复；默认全部")
    ] = None,
    account: AccountFilter = None,
    partition: PartitionFilter = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="只看该作业名")] = None,
    limit: LimitOption = 100,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """作业历史（类似 sacct）：已用时间、退出码、状态、开始与结束时间，最新在前；
    每个作业之下列出它的作业步（12.batch、12.0…）。"""
    with connect(url) as client:
        body = client.jobs(
            states=state or [], account=account, partition=partition, name=name, limit=limit
        )
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table("作业", "名称", "账户", "分区", "状态", "已用", "退出码", "开始", "结束")
    for row in history_rows(body["jobs"]):
        table.add_row(*row)
    out.print(table)
