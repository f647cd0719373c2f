"""`conductor submit`：读脚本的 #SBATCH 指令，与命令行选项合并（命令行优先），提交一个作业。"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from conductor.client import DEFAULT_URL, sbatch
from conductor.client.options import JsonOption, UrlOption, connect
from conductor.client.output import EXIT_USAGE, err, fail, lit, out


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            fail(f"--env 应为 KEY=VALUE：{pair!r}", EXIT_USAGE)
        env[key] = value
    return env


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
    ntasks: Annotated[
        int | None,
        typer.Option("--ntasks", "-n", min=1, help="任务数（整个作业，按 block 分布摊到各节点）"),
    ] = None,
    nodes: Annotated[
        str | None, typer.Option("--nodes", "-N", help="节点数，N 或 N-M（按 N 分配）")
    ] = None,
    gres: Annotated[
        str | None, typer.Option("--gres", help="通用资源，如 gpu:1、gpu:a100:2、nvme:1")
    ] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", "-G", help="GPU 数，如 2、a100:2")] = None,
    gpus_per_node: Annotated[str | None, typer.Option("--gpus-per-node", help="每节点 GPU")] = None,
    gpus_per_task: Annotated[str | None, typer.Option("--gpus-per-task", help="每任务 GPU")] = None,
    cpus_per_gpu: Annotated[
        int | None, typer.Option("--cpus-per-gpu", min=1, help="每 GPU 的 CPU 数")
    ] = None,
    mem_per_gpu: Annotated[str | None, typer.Option("--mem-per-gpu", help="每 GPU 内存")] = None,
    mem_per_cpu: Annotated[str | None, typer.Option("--mem-per-cpu", help="每 CPU 内存")] = None,
    constraint: Annotated[
        str | None, typer.Option("--constraint", "-C", help="节点特性，如 a100、a100|h100")
    ] = None,
    nodelist: Annotated[str | None, typer.Option("--nodelist", "-w", help="指定节点")] = None,
    exclude: Annotated[str | None, typer.Option("--exclude", "-x", help="排除节点")] = None,
    parsable: Annotated[bool, typer.Option("--parsable", help="只输出作业 ID")] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """提交作业脚本（同 sbatch）：读取脚本开头的 #SBATCH 指令，命令行选项覆盖同名指令。"""
    try:
        text = script.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"无法读取脚本 {script}：{exc}", EXIT_USAGE)
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
        ntasks=ntasks,
        nodes=nodes,
        gres=gres,
        gpus=gpus,
        gpus_per_node=gpus_per_node,
        gpus_per_task=gpus_per_task,
        cpus_per_gpu=cpus_per_gpu,
        mem_per_gpu=mem_per_gpu,
        mem_per_cpu=mem_per_cpu,
        constraint=constraint,
        nodelist=nodelist,
        exclude=exclude,
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
        fail(exc.message, EXIT_USAGE)
    if opts.ignored and not parsable:
        err.print(lit(f"提示：已忽略 Conductor 不支持的选项：{' '.join(opts.ignored)}", "yellow"))
    with connect(url) as client:
        body = client.submit(payload)
    if parsable:
        print(body["job_id"])
    elif as_json:
        out.print_json(json.dumps(body))
    else:
        out.print(lit(f"已提交作业 {body['job_id']}"))
