"""命令行客户端：submit / query / cancel 通过 REST API 与服务交互（serve、doctor 在 api/cli.py 注册）。"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Conductor：Ray 集群上的 Slurm 风格批处理调度器", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

UrlOption = Annotated[str, typer.Option("--url", envvar="CONDUCTOR_URL", help="Conductor API 地址")]
JsonOption = Annotated[bool, typer.Option("--json", help="输出 JSON，便于脚本处理")]


def api_token() -> str | None:
    """API 令牌：环境变量 CONDUCTOR_TOKEN 优先，其次 ~/.config/conductor/token（首行）。"""
    token = os.environ.get("CONDUCTOR_TOKEN", "").strip()
    if token:
        return token
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    try:
        return (config / "conductor" / "token").read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _request(method: str, url: str, path: str, **kwargs: Any) -> dict:
    """发请求；失败时打印一行中文错误并以非零码退出。"""
    token = api_token()
    if token:
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    try:
        resp = httpx.request(method, url.rstrip("/") + path, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"[red]错误：无法连接 Conductor 服务 {url}：{exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text}
    if resp.status_code >= 400:
        err.print(f"[red]错误（HTTP {resp.status_code}）：{body.get('detail', body)}[/red]")
        raise typer.Exit(1)
    return body


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            err.print(f"[red]错误：--env 应为 KEY=VALUE：{pair!r}[/red]")
            raise typer.Exit(2)
        env[key] = value
    return env


@app.command()
def submit(
    script: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="bash 脚本文件")],
    account: Annotated[str, typer.Option("--account", "-A", help="记账账户")] = os.environ.get(
        "USER", "default"
    ),
    name: Annotated[
        str | None, typer.Option("--job-name", "-J", help="作业名，默认脚本文件名")
    ] = None,
    partition: Annotated[str, typer.Option("--partition", "-p", help="分区")] = "default",
    cpus_per_task: Annotated[int, typer.Option("--cpus-per-task", "-c", help="每任务 CPU 数")] = 1,
    ntasks_per_node: Annotated[int, typer.Option("--ntasks-per-node", help="每节点任务数")] = 1,
    mem: Annotated[str, typer.Option("--mem", help="每节点内存，如 4G")] = "1G",
    time: Annotated[
        str, typer.Option("--time", "-t", help="时间限制，如 30、1:00:00")
    ] = "UNLIMITED",
    output: Annotated[str | None, typer.Option("--output", "-o", help="标准输出文件")] = None,
    error: Annotated[str | None, typer.Option("--error", "-e", help="标准错误文件")] = None,
    chdir: Annotated[
        Path | None, typer.Option("--chdir", "-D", help="工作目录，默认当前目录")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="附加环境变量 KEY=VALUE，可重复")
    ] = None,
    exclusive: Annotated[bool, typer.Option("--exclusive", help="独占节点")] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """提交一个 bash 脚本作业。"""
    job_name = name or script.name
    payload = {
        "job": {
            "account": account,
            "environment": _parse_env(env or []),
            "current_working_directory": str((chdir or Path.cwd()).resolve()),
            "standard_output": output or f"{job_name}.out",
            "standard_error": error or f"{job_name}.err",
            "ntasks_per_node": ntasks_per_node,
            "cpus_per_task": cpus_per_task,
            "memory_per_node": mem,
            "name": job_name,
            "time_limit": time,
            "partition": partition,
            "exclusive": exclusive,
        },
        "script": script.read_text(),
    }
    body = _request("POST", url, "/jobs/submit", json=payload)
    if as_json:
        out.print_json(json.dumps(body))
    else:
        out.print(f"已提交作业 {body['job_id']}")


@app.command()
def query(
    job_id: Annotated[int, typer.Argument(help="作业 ID")],
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """查询作业状态、时间、退出码与日志。"""
    body = _request("GET", url, f"/jobs/query/{job_id}")
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
        ("CPU/节点", f"{detail['allocated_cpus']} / {detail['node_list']}"),
        ("退出码", detail.get("exit_code") or ""),
        ("提交/开始/结束", f"{times['submit_time']} / {times['start_time']} / {times['end_time']}"),
        ("已用/上限", f"{times['elapsed_time']} / {times['limit_time']}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)
    for stream in ("stdout", "stderr"):
        if body["job_log"][stream]:
            out.rule(stream)
            out.print(body["job_log"][stream], markup=False, highlight=False)


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(help="作业 ID")],
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """取消作业（幂等）。"""
    body = _request("POST", url, f"/jobs/cancel/{job_id}")
    if as_json:
        out.print_json(json.dumps(body))
    else:
        out.print(body["msg"])


STATE_STYLES = {"RUNNING": "green", "PENDING": "yellow", "COMPLETED": "blue", "FAILED": "red"}


@app.command()
def queue(
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-t", help="状态，可重复；默认 PENDING 与 RUNNING"),
    ] = None,
    account: Annotated[str | None, typer.Option("--account", "-A", help="只看该账户")] = None,
    partition: Annotated[str | None, typer.Option("--partition", "-p", help="只看该分区")] = None,
    limit: Annotated[int, typer.Option("--limit", help="最多显示多少行")] = 100,
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """列出作业（类似 squeue）：最新在前。"""
    params: dict[str, Any] = {"state": [s.upper() for s in (state or ["PENDING", "RUNNING"])]}
    params.update({k: v for k, v in (("account", account), ("partition", partition)) if v})
    params["limit"] = limit
    body = _request("GET", url, "/jobs", params=params)
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table("作业", "名称", "账户", "分区", "状态", "已用", "CPU", "节点")
    for j in body["jobs"]:
        style = STATE_STYLES.get(j["state"], "")
        table.add_row(
            str(j["job_id"]),
            j["name"],
            j["account"],
            j["partition"],
            f"[{style}]{j['state']}[/{style}]" if style else j["state"],
            j["elapsed_time"],
            str(j["allocated_cpus"]),
            j["node_list"],
        )
    out.print(table)
