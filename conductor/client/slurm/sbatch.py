"""sbatch：提交批处理脚本（文件、标准输入或 --wrap），打印 `Submitted batch job N`。

选项语法同 Slurm 的 getopt_long：`--opt=值`、`--opt 值`、`-X值`、`-X 值`、不带值的短开关合写（-HW）；
第一个不是选项的参数是脚本，之后的都属于脚本。#SBATCH 指令与选项的含义由
conductor/client/sbatch.py 解析（同 `conductor submit`），本模块只处理 sbatch 命令自己的选项：
--parsable、-W/--wait、--test-only、--wrap、-Q/--quiet、--help。
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from conductor.client import sbatch as directives
from conductor.client.slurm.grammar import FINISHED_STATES, current_user
from conductor.client.slurm.http import Api, ApiError, Unreachable, connect, die, entry, error

PROG = "sbatch"

USAGE = """\
用法：sbatch [选项...] [脚本 [参数...]]
      sbatch [选项...] --wrap="命令"

提交批处理脚本；没有给脚本时从标准输入读。#SBATCH 指令与 Slurm 相同（见 docs/slurm-compat.md），
命令行选项覆盖脚本里的同名指令。

  -J, --job-name=名称       作业名（默认：脚本文件名；标准输入为 sbatch，--wrap 为 wrap）
  -A, --account=账户        记账账户（默认 $USER）
  -p, --partition=分区      分区
  -c, --cpus-per-task=N     每任务 CPU 数
  -n, --ntasks=N            任务数
  -N, --nodes=N[-M]         节点数
      --mem=大小            每节点内存（如 4G）
  -t, --time=时限           时限（如 30、1:00:00、1-00:00:00）
  -o, --output=模式         标准输出文件（默认 slurm-%j.out）
  -e, --error=模式          标准错误文件（默认同标准输出）
  -D, --chdir=目录          工作目录（默认当前目录）
  -a, --array=下标          作业数组（如 0-99%10）
  -d, --dependency=依赖     依赖（如 afterok:12）
  -H, --hold                提交后挂起（scontrol release 放行）
      --wrap=命令           把命令包成 sh 脚本提交
      --parsable            只输出作业号
  -W, --wait                等作业结束，以作业的退出码退出
      --test-only           只检查脚本与选项，不提交
  -Q, --quiet               不输出提示
      --help                显示本帮助

服务地址取环境变量 CONDUCTOR_URL。
"""

ARRAY_OUTPUT = "slurm-%A_%a.out"

# sbatch 命令本身的选项（其余交给 conductor/client/sbatch.py）
_OWN_FLAGS = {
    "--parsable": "parsable",
    "-W": "wait",
    "--wait": "wait",
    "--test-only": "test_only",
    "-Q": "quiet",
    "--quiet": "quiet",
    "-h": "help",
    "--help": "help",
    "--usage": "help",
    "-v": "verbose",
    "--verbose": "verbose",
}
_OWN_VALUES = {"--wrap": "wrap"}


def _value_options() -> set[str]:
    """取值的选项名：conductor/client/sbatch.py 的表（随它增加的选项自动生效）。"""
    return set(directives._VALUE_OPTIONS) | set(directives._IGNORED_WITH_VALUE) | set(_OWN_VALUES)


def _flag_options() -> set[str]:
    return set(directives._FLAG_OPTIONS) | set(directives._IGNORED_FLAGS) | set(_OWN_FLAGS)


def _long_name(name: str, known: set[str]) -> str:
    """长选项的唯一前缀（getopt_long 允许 --par 代替 --parsable）；完全匹配优先。"""
    if name in known:
        return name
    matches = sorted(k for k in known if k.startswith("--") and k.startswith(name))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        die(PROG, f"option '{name}' is ambiguous; possibilities: {' '.join(matches)}")
    return name  # 不认识：交给指令解析器报错


class Command:
    """解析后的 sbatch 命令行：sbatch 自己的开关、交给指令解析器的选项、脚本与其参数。"""

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.wrap: str | None = None
        self.tokens: list[str] = []
        self.script: str | None = None
        self.script_args: list[str] = []


def parse_command(argv: list[str]) -> Command:
    """把 sbatch 的命令行拆开（遇到第一个非选项参数即停，同 sbatch 的 getopt "+" 模式）。"""
    cmd = Command()
    values, flags = _value_options(), _flag_options()
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-":
            i -= 1
            break
        if token.startswith("--"):
            name, eq, inline = token.partition("=")
            name = _long_name(name, values | flags)
            if name in values:
                if eq:
                    value = inline
                elif i < len(argv):
                    value, i = argv[i], i + 1
                else:
                    die(PROG, f"option '{name}' requires an argument")
                _take(cmd, name, value)
            else:
                _take(cmd, name, inline if eq else None, token)
            continue
        # 短选项：可合写（-HW）；遇到取值的字母，其后的文字（或下一个参数）是它的值
        j = 1
        while j < len(token):
            name = "-" + token[j]
            j += 1
            if name in values:
                if j < len(token):
                    value = token[j:]
                elif i < len(argv):
                    value, i = argv[i], i + 1
                else:
                    die(PROG, f"option requires an argument -- '{name[1]}'")
                _take(cmd, name, value)
                break
            _take(cmd, name, None, name)
    if i < len(argv):
        cmd.script = argv[i]
        cmd.script_args = argv[i + 1 :]
    return cmd


def _take(cmd: Command, name: str, value: str | None, original: str | None = None) -> None:
    if name in _OWN_FLAGS and value is None:
        cmd.flags.add(_OWN_FLAGS[name])
    elif name in _OWN_VALUES:
        cmd.wrap = value
    elif value is None:
        cmd.tokens.append(original or name)
    elif name.startswith("--"):
        cmd.tokens.append(f"{name}={value}")  # 也包括 --exclusive=user 这类可带值的开关
    else:
        cmd.tokens += [name, value]


def wrap_script(command: str) -> str:
    """--wrap 生成的脚本，同 sbatch 的 _script_wrap。"""
    return f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{command}\n"


def _read_script(cmd: Command) -> tuple[str, str]:
    """（脚本内容，默认作业名）。"""
    if cmd.wrap is not None:
        if cmd.script is not None:
            die(PROG, "Script arguments not permitted with --wrap option")
        return wrap_script(cmd.wrap), "wrap"
    if cmd.script is None:
        if sys.stdin.isatty():
            sys.stderr.write("sbatch: 从标准输入读取脚本（按 Ctrl-D 结束）\n")
        return sys.stdin.read(), "sbatch"
    path = Path(cmd.script)
    try:
        return path.read_text(), path.name
    except FileNotFoundError:
        die(PROG, f"Unable to open file {cmd.script}")
    except (OSError, UnicodeDecodeError) as exc:
        die(PROG, f"Unable to open file {cmd.script}: {exc}")


def _check_script(text: str) -> None:
    # sbatch 的 _check_script：第一行必须是 #!
    if not text.strip():
        die(PROG, "Batch script is empty!")
    if not text.startswith("#!"):
        die(
            PROG,
            "This does not look like a batch script.  The first\n"
            "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
            "sbatch: error: For instance: #!/bin/sh",
        )


def build(cmd: Command, environ: Mapping[str, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """命令行 → POST /jobs/submit 的请求体与被忽略的选项（指令或选项无效时报错退出）。"""
    try:
        cli = directives.parse_args(cmd.tokens)  # 先查选项：写错的选项不该被当成脚本名
    except directives.SbatchError as exc:
        die(PROG, exc.message)
    text, default_name = _read_script(cmd)
    _check_script(text)
    try:
        opts = cli.merged_over(directives.parse_directives(text))
        payload = directives.build_payload(
            opts, text, default_name, Path.cwd(), current_user(), environ
        )
    except directives.SbatchError as exc:
        die(PROG, exc.message)
    if opts.array is not None and opts.output is None:
        # 同 sbatch：作业数组的默认输出为 slurm-%A_%a.out（每个任务一个文件）
        payload["job"]["standard_output"] = ARRAY_OUTPUT
        if opts.error is None:
            payload["job"]["standard_error"] = ARRAY_OUTPUT
    if cmd.script_args:
        payload["job"]["argv"] = list(cmd.script_args)  # 脚本里的 $1 $2 …
    return payload, opts.ignored


def _exit_status(exit_code: str | None) -> int:
    """作业的 code:signal → sbatch -W 的退出码（被信号杀死为 1，同 _job_wait）。"""
    code, _, sig = (exit_code or "0:0").partition(":")
    try:
        return 1 if int(sig or 0) else int(code or 0)
    except ValueError:
        return 1


def wait_for_job(api: Api, job_id: str) -> int:
    """等作业（数组则全部任务）结束，返回最大的退出码。"""
    delay = 0.2
    while True:
        try:
            body = api.request("GET", f"/jobs/query/{job_id}")
        except ApiError as exc:
            if exc.status == 404:
                error(PROG, f"Job {job_id} no longer found and exit code not found")
                return 0
            error(PROG, f"Currently unable to load job state information, retrying: {exc.detail}")
            body = None
        except Unreachable as exc:
            error(PROG, f"Currently unable to load job state information, retrying: {exc}")
            body = None
        if body is not None:
            tasks = body.get("array_tasks") or [
                {"state": body["state"], "exit_code": body["detail"].get("exit_code")}
            ]
            if all(t["state"] in FINISHED_STATES for t in tasks):
                return max(_exit_status(t.get("exit_code")) for t in tasks)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _test_only(api: Api, payload: dict[str, Any]) -> int:
    """--test-only：不提交。分区在服务端存在时按 Slurm 的样子报告（作业号 0、开始时间为现在、节点待定）。"""
    job = payload["job"]
    partition = job.get("partition")
    try:
        known = api.request("GET", "/partitions").get("partitions", [])
    except ApiError:
        known = []
    except Unreachable as exc:
        die(PROG, str(exc))
    if partition is None:
        # 没给 -p：服务端的默认分区（同提交时）
        partition = next((p["name"] for p in known if p.get("default")), "default")
    elif known and partition not in {p["name"] for p in known}:
        die(PROG, "Job submit/allocate failed: Invalid partition name specified")
    tasks = job.get("tasks") or job.get("ntasks_per_node", 1)
    cpus = int(tasks) * int(job.get("cpus_per_task", 1))
    now = datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    sys.stderr.write(
        f"sbatch: Job 0 to start at {now} using {cpus} processors on nodes (null) "
        f"in partition {partition}\n"
    )
    sys.stderr.write(
        "sbatch: 仅检查（--test-only）：脚本与选项有效，未提交；Conductor 不预测开始时间与节点\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    cmd = parse_command(args)
    if "help" in cmd.flags:
        sys.stdout.write(USAGE)
        return 0
    payload, ignored = build(cmd, os.environ)
    quiet = "quiet" in cmd.flags
    if ignored and not quiet:
        sys.stderr.write(f"sbatch: 提示：已忽略 Conductor 不支持的选项：{' '.join(ignored)}\n")
    with connect(PROG) as api:
        if "test_only" in cmd.flags:
            return _test_only(api, payload)
        try:
            body = api.request("POST", "/jobs/submit", body=payload)
        except ApiError as exc:
            die(PROG, f"Batch job submission failed: {exc.detail}")
        except Unreachable as exc:
            die(PROG, f"Batch job submission failed: {exc}")
        job_id = str(body["job_id"])
        if not quiet:
            sys.stdout.write(
                job_id + "\n" if "parsable" in cmd.flags else f"Submitted batch job {job_id}\n"
            )
            sys.stdout.flush()
        if "wait" in cmd.flags:
            return wait_for_job(api, job_id)
    return 0


def run() -> None:
    """控制台脚本 `sbatch` 的入口。"""
    entry(main)


if __name__ == "__main__":
    run()
