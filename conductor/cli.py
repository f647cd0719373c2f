"""命令行客户端：submit / query / cancel / queue / history / logs / info 通过 REST API 与服务交互（serve、doctor 在 api/cli.py 注册）。"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from conductor import sbatch
from conductor.tokenfile import read_token, token_path

# 退出码：脚本可据此区分“请求被拒绝”与“服务连不上”
EXIT_OK = 0
EXIT_REJECTED = 1  # 服务拒绝了请求：作业不存在、参数无效（HTTP 4xx），或部分作业取消失败
EXIT_USAGE = 2  # 用法错误：选项或 #SBATCH 指令无效、脚本读不了（typer 的用法错误也是 2）
EXIT_UNAVAILABLE = 3  # 连不上服务，或服务暂时不可用（HTTP 5xx）

EPILOG = (
    "退出码：0 成功；1 请求被拒绝（作业不存在、参数无效）或部分作业失败；"
    "2 用法错误（选项或 #SBATCH 指令无效）；3 无法连接服务或服务不可用；"
    "130 按 Ctrl-C 中断（logs -f 只停止跟随，作业照常运行）。"
    "服务地址取 --url 或环境变量 CONDUCTOR_URL。"
)

app = typer.Typer(
    help="Conductor：Ray 集群上的 Slurm 风格批处理调度器",
    epilog=EPILOG,
    no_args_is_help=True,
)
out = Console()
# 错误只占一行：不按终端宽度折行
err = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[str, typer.Option("--url", envvar="CONDUCTOR_URL", help="Conductor API 地址")]
JsonOption = Annotated[bool, typer.Option("--json", help="输出 JSON，便于脚本处理")]


def lit(value: object, style: str = "") -> Text:
    """原样显示的文字：作业名、账户、服务的消息里都可能有 [ ]，不能当作 Rich 标记解释。"""
    return Text("" if value is None else str(value), style=style)


def api_token() -> str | None:
    """API 令牌：环境变量 CONDUCTOR_TOKEN 优先，其次 ~/.config/conductor/token（首行；
    `conductor serve` 第一次启动时为本机用户写入）。"""
    token = os.environ.get("CONDUCTOR_TOKEN", "").strip()
    if token:
        return token
    return read_token(token_path())


def _auth(kwargs: dict[str, Any]) -> dict[str, Any]:
    """有令牌时加上 Authorization 头。"""
    token = api_token()
    if token:
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    return kwargs


def _try_request(method: str, url: str, path: str, **kwargs: Any) -> tuple[int, dict]:
    """发请求，返回 (退出码, 响应体)；不打印、不退出。"""
    kwargs = _auth(kwargs)
    try:
        resp = httpx.request(method, url.rstrip("/") + path, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        return EXIT_UNAVAILABLE, {"detail": f"无法连接 Conductor 服务 {url}：{exc}"}
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text}
    if not isinstance(body, dict):
        body = {"detail": body}
    if resp.status_code >= 500:
        return EXIT_UNAVAILABLE, {
            "detail": f"服务不可用（HTTP {resp.status_code}）：{body.get('detail', body)}"
        }
    if resp.status_code >= 400:
        return EXIT_REJECTED, {"detail": f"（HTTP {resp.status_code}）{body.get('detail', body)}"}
    return EXIT_OK, body


def _request(method: str, url: str, path: str, **kwargs: Any) -> dict:
    """发请求；失败时打印一行中文错误并按约定的退出码退出。"""
    code, body = _try_request(method, url, path, **kwargs)
    if code:
        _fail(str(body.get("detail", body)), code)
    return body


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _fail(f"--env 应为 KEY=VALUE：{pair!r}", EXIT_USAGE)
        env[key] = value
    return env


def _fail(message: str, code: int) -> NoReturn:
    """一行中文错误，按约定的退出码退出。"""
    err.print(lit(f"错误：{message}", "red"), highlight=False)
    raise typer.Exit(code)


@app.command()
def submit(
    script: Annotated[Path, typer.Argument(help="作业脚本（bash；可含 #SBATCH 指令）")],
    name: Annotated[
        str | None, typer.Option("--job-name", "-J", help="作业名，默认脚本文件名")
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", "-A", help="记账账户，默认 $USER")
    ] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", "-p", help="分区，默认 default")
    ] = None,
    cpus_per_task: Annotated[
        int | None, typer.Option("--cpus-per-task", "-c", help="每任务 CPU 数")
    ] = None,
    ntasks_per_node: Annotated[
        int | None, typer.Option("--ntasks-per-node", help="每节点任务数")
    ] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="每节点内存，如 4G，默认 1G")] = None,
    time: Annotated[
        str | None, typer.Option("--time", "-t", help="时间限制，如 30、1:00:00，默认不限")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="标准输出文件，默认 slurm-%j.out")
    ] = None,
    error: Annotated[
        str | None, typer.Option("--error", "-e", help="标准错误文件，默认同标准输出")
    ] = None,
    chdir: Annotated[
        str | None, typer.Option("--chdir", "-D", help="工作目录，默认当前目录")
    ] = None,
    export: Annotated[
        str | None, typer.Option("--export", help="传给作业的环境变量：NAME 或 NAME=值，逗号分隔")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="附加环境变量 KEY=VALUE，可重复")
    ] = None,
    exclusive: Annotated[
        bool | None, typer.Option("--exclusive", help="独占节点", show_default=False)
    ] = None,
    array: Annotated[str | None, typer.Option("--array", "-a", help="作业数组，如 0-99%10")] = None,
    dependency: Annotated[
        str | None, typer.Option("--dependency", "-d", help="依赖，如 afterok:12:13")
    ] = None,
    priority: Annotated[int | None, typer.Option("--priority", help="优先级（整数）")] = None,
    hold: Annotated[
        bool | None, typer.Option("--hold", "-H", help="提交后先挂起", show_default=False)
    ] = None,
    parsable: Annotated[bool, typer.Option("--parsable", help="只输出作业 ID")] = False,
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """提交作业脚本（同 sbatch）：读取脚本开头的 #SBATCH 指令，命令行选项覆盖同名指令。"""
    try:
        text = script.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"无法读取脚本 {script}：{exc}", EXIT_USAGE)
    cli_opts = sbatch.SbatchOptions(
        job_name=name,
        account=account,
        partition=partition,
        cpus_per_task=cpus_per_task,
        ntasks_per_node=ntasks_per_node,
        mem=mem,
        time=time,
        output=output,
        error=error,
        chdir=chdir,
        export=export,
        exclusive=exclusive,
        array=array,
        dependency=dependency,
        priority=priority,
        hold=hold,
    )
    try:
        opts = cli_opts.merged_over(sbatch.parse_directives(text))
        payload = sbatch.build_payload(
            opts,
            text,
            script.name,
            Path.cwd(),
            os.environ.get("USER", "default"),
            os.environ,
            _parse_env(env or []),
        )
    except sbatch.SbatchError as exc:
        _fail(exc.message, EXIT_USAGE)
    if opts.ignored and not parsable:
        err.print(lit(f"提示：已忽略 Conductor 不支持的选项：{' '.join(opts.ignored)}", "yellow"))
    body = _request("POST", url, "/jobs/submit", json=payload)
    if parsable:
        print(body["job_id"])
    elif as_json:
        out.print_json(json.dumps(body))
    else:
        out.print(lit(f"已提交作业 {body['job_id']}"))


@app.command()
def query(
    job_id: Annotated[
        str, typer.Argument(help="作业 ID；数组任务写作 12_3，数组主作业号指整个数组")
    ],
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
        table.add_row(key, lit(value))
    out.print(table)
    for stream in ("stdout", "stderr"):
        if body["job_log"][stream]:
            out.rule(stream)
            out.print(body["job_log"][stream], markup=False, highlight=False)


@app.command()
def cancel(
    job_ids: Annotated[list[str], typer.Argument(help="作业 ID，可给多个；数组任务写作 12_3")],
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """取消作业（幂等，可一次取消多个）：逐个报告结果，任何一个失败则以非零码退出。"""
    results: list[dict[str, Any]] = []
    worst = 0
    for job_id in job_ids:
        code, body = _try_request("POST", url, f"/jobs/cancel/{job_id}")
        ok = code == 0
        message = body.get("msg") if ok else body.get("detail", str(body))
        results.append({"job_id": str(job_id), "ok": ok, "msg": message})
        worst = max(worst, code)
        if not as_json:
            (out if ok else err).print(
                lit(f"{job_id}：{message}") if ok else lit(f"{job_id}：错误：{message}", "red"),
                highlight=False,
            )
    if as_json:
        out.print_json(json.dumps(results))
    if worst:
        raise typer.Exit(worst)


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
    table = Table("作业", "名称", "账户", "分区", "状态", "已用", "CPU", "节点/原因")
    for j in body["jobs"]:
        style = STATE_STYLES.get(j["state"], "")
        table.add_row(
            *map(lit, (j["job_id"], j["name"], j["account"], j["partition"])),
            lit(j["state"], style),
            *map(lit, (j["elapsed_time"], j["allocated_cpus"])),
            lit(j["node_list"] or j.get("state_reason") or ""),  # 排队时显示原因（若服务端提供）
        )
    out.print(table)


@app.command()
def history(
    state: Annotated[
        list[str] | None, typer.Option("--state", "-s", help="状态，可重复；默认全部")
    ] = None,
    account: Annotated[str | None, typer.Option("--account", "-A", help="只看该账户")] = None,
    partition: Annotated[str | None, typer.Option("--partition", "-p", help="只看该分区")] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="只看该作业名")] = None,
    limit: Annotated[int, typer.Option("--limit", help="最多显示多少行")] = 100,
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """作业历史（类似 sacct）：已用时间、退出码、状态、开始与结束时间，最新在前。"""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = [s.upper() for s in state]
    params.update(
        {k: v for k, v in (("account", account), ("partition", partition), ("name", name)) if v}
    )
    body = _request("GET", url, "/jobs", params=params)
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table("作业", "名称", "账户", "分区", "状态", "已用", "退出码", "开始", "结束")
    for j in body["jobs"]:
        style = STATE_STYLES.get(j["state"], "")
        table.add_row(
            *map(lit, (j["job_id"], j["name"], j["account"], j["partition"])),
            lit(j["state"], style),
            *map(lit, (j["elapsed_time"], j["exit_code"], j["start_time"], j["end_time"])),
        )
    out.print(table)


def _stream_url(url: str, job_id: str) -> str:
    return url.rstrip("/") + f"/jobs/{job_id}/logs"


def _check(resp: httpx.Response, url: str) -> None:
    if resp.status_code < 400:
        return
    resp.read()
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    code = EXIT_UNAVAILABLE if resp.status_code >= 500 else EXIT_REJECTED
    _fail(f"（HTTP {resp.status_code}）{detail}", code)


@app.command()
def logs(
    job_id: Annotated[
        str, typer.Argument(help="作业 ID；数组任务写作 12_3，数组主作业号指整个数组")
    ],
    stderr: Annotated[bool, typer.Option("--stderr", help="看标准错误（默认标准输出）")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="跟随输出，直到作业结束且日志读完")
    ] = False,
    url: UrlOption = "http://127.0.0.1:8000",
) -> None:
    """输出作业日志；-f 时边运行边输出，作业结束后退出。排队中会显示等待进度。"""
    params = {"stream": "stderr" if stderr else "stdout"}
    if not follow:
        try:
            resp = httpx.get(_stream_url(url, job_id), **_auth({"params": params, "timeout": 30}))
        except httpx.HTTPError as exc:
            _fail(f"无法连接 Conductor 服务 {url}：{exc}", EXIT_UNAVAILABLE)
        _check(resp, url)
        sys.stdout.buffer.write(resp.content)
        sys.stdout.flush()
        if not resp.content and resp.headers.get("X-Job-State") == "PENDING":
            err.print(lit(f"作业 {job_id} 仍在排队，还没有日志；用 -f 等待并跟随输出"))
        return
    params["follow"] = "true"
    try:
        with httpx.stream(
            "GET",
            _stream_url(url, job_id),
            # 作业可能很久不输出：读不设超时
            **_auth({"params": params, "timeout": httpx.Timeout(30, read=None)}),
        ) as resp:
            _check(resp, url)
            waiting = None
            if resp.headers.get("X-Job-State") == "PENDING":
                waiting = err.status(lit(f"作业 {job_id} 排队中，等待开始运行…"))
                waiting.start()
            try:
                for chunk in resp.iter_bytes():
                    if waiting is not None:
                        waiting.stop()
                        waiting = None
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
            finally:
                if waiting is not None:
                    waiting.stop()
    except httpx.HTTPError as exc:
        _fail(f"与 Conductor 服务的连接中断 {url}：{exc}", EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # Ctrl-C 只停止跟随，作业照常运行
    final = _request("GET", url, f"/jobs/query/{job_id}")
    err.print(
        lit(f"作业 {job_id} 已结束：{final['state']}（退出码 {final['detail']['exit_code']}）")
    )


@app.command()
def info(
    url: UrlOption = "http://127.0.0.1:8000",
    as_json: JsonOption = False,
) -> None:
    """集群信息（类似 sinfo）：各节点与分区的 CPU 空闲/总数，以及 Ray 仪表盘地址。"""
    dash = _request("GET", url, "/dashboard")
    # /health 在某个组件不可用时返回 503，但正文仍有仪表盘地址与故障组件
    code, health = _try_request("GET", url, "/health")
    if code == EXIT_UNAVAILABLE and "components" not in health:
        try:
            health = httpx.get(url.rstrip("/") + "/health", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            health = {}
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
        if not n["available"]:
            node_state = lit("down", "red")
        elif n["allocated_cpus"] == 0:
            node_state = lit("idle")
        elif n["available_cpus"] == 0:
            node_state = lit("alloc")
        else:
            node_state = lit("mix")
        table.add_row(
            *map(lit, (n["partition"], n["node_name"])),
            node_state,
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
