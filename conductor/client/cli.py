"""客户端命令行 `conductor`：submit、query、cancel、queue、history、logs、info。

每个命令都是“取得客户端，调用一次 SDK，渲染结果”（命令在各自的模块里）。这里只把它们
挂到一个 Typer 应用上；服务端命令（serve、doctor…）由 api/cli.py 加在同一个应用上。
"""

from __future__ import annotations

import typer

from conductor.client.info import info
from conductor.client.jobs import cancel, history, query, queue
from conductor.client.logs import logs
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
for command in (submit, query, cancel, queue, history, logs, info):
    app.command()(command)
