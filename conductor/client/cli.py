"""客户端命令行 `conductor`：submit、query、cancel、queue、history、logs、info、drain、resume，
以及 Slurm 替身命令的转交（`conductor sbatch …` 同 `sbatch …`，见 conductor/client/slurm/）。

每个命令都是“取得客户端，调用一次 SDK，渲染结果”（命令在各自的模块里）。这里只把它们
挂到一个 Typer 应用上；服务端命令（serve、doctor…）由 api/cli.py 加在同一个应用上。
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import typer

from conductor.client.info import info
from conductor.client.jobs import cancel, history, query, queue
from conductor.client.logs import logs
from conductor.client.nodes import drain, resume
from conductor.client.submit import submit

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
for command in (submit, query, cancel, queue, history, logs, info, drain, resume):
    app.command()(command)

# Slurm 替身命令：参数原样交给同一个 main（不经 Typer 解析，-h、--help 等照 Slurm 的含义）
SLURM_COMMANDS = {
    "sbatch": "提交批处理脚本（同 Slurm 的 sbatch）",
    "squeue": "列出排队与运行中的作业（同 Slurm 的 squeue）",
    "scancel": "取消作业或发信号（同 Slurm 的 scancel）",
    "sacct": "作业与作业步的记账记录（同 Slurm 的 sacct）",
    "sinfo": "分区与节点的概况（同 Slurm 的 sinfo）",
    "scontrol": "show job/node/partition、hold、release、requeue、update（含节点排空，同 Slurm 的 scontrol）",
}


def _pass_through(name: str) -> Callable[[typer.Context], None]:
    def command(ctx: typer.Context) -> None:
        module = importlib.import_module(f"conductor.client.slurm.{name}")
        raise typer.Exit(module.main(list(ctx.args)))

    return command


for _name, _help in SLURM_COMMANDS.items():
    app.command(
        _name,
        help=_help,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_pass_through(_name))
