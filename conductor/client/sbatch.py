"""解析 Slurm 作业脚本里的 #SBATCH 指令与 sbatch 风格的选项（纯函数，不访问网络）。

规则同 sbatch：指令只在脚本开头的注释块里有效（遇到第一条命令即停止）；
一行可以写多个选项，支持 `--opt=值`、`--opt 值`、`-J名`、`-J 名` 与引号；
命令行选项覆盖脚本里的同名指令。
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from conductor.envnames import ENV_NAME, changes_shell_startup
from conductor.errors import ConductorError
from conductor.signalspec import parse_signal_spec
from conductor.tres import parse_tres


class SbatchError(ConductorError):
    """#SBATCH 指令或 sbatch 选项无效。"""


@dataclass(frozen=True)
class SbatchOptions:
    """sbatch 选项；None 表示未指定（留给下一层：命令行 → 脚本指令 → 默认值）。"""

    job_name: str | None = None
    account: str | None = None
    partition: str | None = None
    cpus_per_task: int | None = None
    ntasks_per_node: int | None = None
    mem: str | None = None
    time: str | None = None
    output: str | None = None
    error: str | None = None
    chdir: str | None = None
    export: str | None = None
    exclusive: bool | None = None
    array: str | None = None
    dependency: str | None = None
    priority: int | None = None
    hold: bool | None = None
    # ---- 资源（议题 16/17）：换算成 REST 的 tasks、nodes、tres_per_*、memory_per_cpu…，见 build_payload ----
    ntasks: int | None = None
    nodes: str | None = None
    gres: str | None = None
    gpus: str | None = None
    gpus_per_node: str | None = None
    gpus_per_task: str | None = None
    cpus_per_gpu: int | None = None
    mem_per_gpu: str | None = None
    mem_per_cpu: str | None = None
    constraint: str | None = None
    nodelist: str | None = None
    exclude: str | None = None
    # ---- 议题 18 ----
    requeue: bool | None = None
    open_mode: str | None = None
    signal: str | None = None
    # 认得但 Conductor 不支持、被忽略的选项（给用户的提示）
    ignored: tuple[str, ...] = field(default=(), compare=False)

    def merged_over(self, base: SbatchOptions) -> SbatchOptions:
        """self 中已指定的值覆盖 base（命令行覆盖脚本指令）。"""
        updates = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "ignored" and getattr(self, f.name) is not None
        }
        return replace(base, **updates, ignored=base.ignored + self.ignored)


# 选项名 → (字段, 类型)。类型：str、int，或 flag（不带值）
_VALUE_OPTIONS: dict[str, tuple[str, type]] = {
    "-J": ("job_name", str),
    "--job-name": ("job_name", str),
    "-A": ("account", str),
    "--account": ("account", str),
    "-p": ("partition", str),
    "--partition": ("partition", str),
    "-c": ("cpus_per_task", int),
    "--cpus-per-task": ("cpus_per_task", int),
    "--ntasks-per-node": ("ntasks_per_node", int),
    "--mem": ("mem", str),
    "-t": ("time", str),
    "--time": ("time", str),
    "-o": ("output", str),
    "--output": ("output", str),
    "-e": ("error", str),
    "--error": ("error", str),
    "-D": ("chdir", str),
    "--chdir": ("chdir", str),
    "--export": ("export", str),
    "-a": ("array", str),
    "--array": ("array", str),
    "-d": ("dependency", str),
    "--dependency": ("dependency", str),
    "--priority": ("priority", int),
    "-n": ("ntasks", int),
    "--ntasks": ("ntasks", int),
    "-N": ("nodes", str),
    "--nodes": ("nodes", str),
    "--gres": ("gres", str),
    "-G": ("gpus", str),
    "--gpus": ("gpus", str),
    "--gpus-per-node": ("gpus_per_node", str),
    "--gpus-per-task": ("gpus_per_task", str),
    "--cpus-per-gpu": ("cpus_per_gpu", int),
    "--mem-per-gpu": ("mem_per_gpu", str),
    "--mem-per-cpu": ("mem_per_cpu", str),
    "-C": ("constraint", str),
    "--constraint": ("constraint", str),
    "-w": ("nodelist", str),
    "--nodelist": ("nodelist", str),
    "-x": ("exclude", str),
    "--exclude": ("exclude", str),
    "--open-mode": ("open_mode", str),
    "--signal": ("signal", str),
}
_FLAG_OPTIONS = {"--exclusive": "exclusive", "-H": "hold", "--hold": "hold"}
# sbatch 允许 --exclusive[=user|mcs|topo]：任何取值都按独占处理
_OPTIONAL_VALUE_FLAGS = {"--exclusive"}

# 常见但 Conductor 不支持、且忽略它们不会让作业少拿资源的选项：忽略并提示，使现有 Slurm 脚本
# 不经修改即可提交（原因见 README 的“仍被忽略的指令”）。申请资源的选项一律照办或明确拒绝
_IGNORED_WITH_VALUE = {
    "--mail-type", "--mail-user", "-q", "--qos", "--ntasks-per-core", "--comment",
    "-M", "--clusters", "--reservation", "--licenses", "-L", "--begin", "-b",
    "--nice", "--distribution", "-m", "--cpu-freq", "--threads-per-core", "--hint", "--wckey",
}  # fmt: skip
# 申请资源、但 Conductor 无法保证的选项：忽略会让作业少拿资源，所以明确拒绝
_REFUSED = {
    "--tmp": "不做节点本地磁盘的记账，无法保证所要的临时空间",
    "--mincpus": "请改用 -c/--cpus-per-task 或 -n/--ntasks 申请 CPU",
}
_IGNORED_FLAGS = {
    "-Q", "--quiet", "-v", "--verbose", "--parsable",
    "--contiguous", "--overcommit", "-O", "--oversubscribe", "-s", "--share", "-W", "--wait",
    "--get-user-env", "-k", "--no-kill", "--spread-job", "--use-min-nodes",
}  # fmt: skip

ARRAY_RE = re.compile(r"^\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?$")
DEPENDENCY_RE = re.compile(
    r"^(singleton|[a-z]+(:\d+(\+\d+)?)+)([,?](singleton|[a-z]+(:\d+(\+\d+)?)+))*$"
)
DIRECTIVE = re.compile(r"^#SBATCH(\s|$)")


def _convert(option: str, kind: type, raw: str) -> Any:
    if kind is int:
        try:
            value = int(raw)
        except ValueError:
            raise SbatchError(f"{option} 应为整数：{raw!r}") from None
        if option != "--priority" and value < 1:
            raise SbatchError(f"{option} 不能小于 1：{raw!r}")
        if value < 0:
            raise SbatchError(f"{option} 不能为负数：{raw!r}")
        return value
    if not raw.strip():
        raise SbatchError(f"{option} 的值不能为空")
    if option in ("-a", "--array") and not ARRAY_RE.match(raw):
        raise SbatchError(f"{option} 格式无效：{raw!r}（应如 0-99、1,3,5、0-15:4 或 0-99%10）")
    if option == "--open-mode" and raw not in ("append", "truncate"):
        raise SbatchError(f"--open-mode 只能是 append 或 truncate：{raw!r}")
    if option == "--signal":
        try:
            parse_signal_spec(raw)
        except ValueError as exc:
            raise SbatchError(str(exc)) from None
    if option in ("-d", "--dependency") and not DEPENDENCY_RE.match(raw):
        raise SbatchError(f"{option} 格式无效：{raw!r}（应如 afterok:12:13 或 afterany:7）")
    return raw


def parse_args(tokens: list[str]) -> SbatchOptions:
    """解析 sbatch 选项列表（已按 shell 规则切分）。未知选项报错，只有认得的不支持选项被忽略。"""
    values: dict[str, Any] = {}
    ignored: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if not token.startswith("--") and len(token) > 2 and token.startswith("-"):
            name, eq, inline = token[:2], "=", token[2:]  # -Jname 形式
        if name in _REFUSED:
            raise SbatchError(f"不支持 {name}：{_REFUSED[name]}；请删去该指令")
        if name in ("--requeue", "--no-requeue"):
            # --requeue[=expedite]：expedite 要求立刻以最高优先级重新调度，Conductor 做不到，拒绝
            if eq:
                raise SbatchError(f"{name} 不带取值（不支持 --requeue=expedite）：{token!r}")
            values["requeue"] = name == "--requeue"
            continue
        if name in _FLAG_OPTIONS:
            if eq and name not in _OPTIONAL_VALUE_FLAGS:
                raise SbatchError(f"{name} 不带取值：{token!r}")
            values[_FLAG_OPTIONS[name]] = True
            continue
        if name in _VALUE_OPTIONS or name in _IGNORED_WITH_VALUE:
            if eq:
                raw = inline
            elif i < len(tokens):
                raw, i = tokens[i], i + 1
            else:
                raise SbatchError(f"{name} 缺少取值")
            if name in _IGNORED_WITH_VALUE:
                ignored.append(f"{name}={raw}")
                continue
            target, kind = _VALUE_OPTIONS[name]
            values[target] = _convert(name, kind, raw)
            continue
        if name in _IGNORED_FLAGS:
            ignored.append(name)
            continue
        raise SbatchError(f"不认识的选项：{token!r}")
    return SbatchOptions(**values, ignored=tuple(ignored))


def parse_directives(script: str) -> SbatchOptions:
    """读取脚本开头注释块中的 #SBATCH 指令（第一条命令之后的 #SBATCH 不再生效，同 sbatch）。"""
    tokens: list[str] = []
    for lineno, line in enumerate(script.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break  # 第一条命令：指令块结束
        if not DIRECTIVE.match(stripped):
            continue
        try:
            tokens.extend(shlex.split(stripped[len("#SBATCH") :], comments=True))
        except ValueError as exc:
            raise SbatchError(f"第 {lineno} 行的 #SBATCH 指令无法解析：{exc}") from None
    try:
        return parse_args(tokens)
    except SbatchError as exc:
        raise SbatchError(f"脚本中的 #SBATCH 指令无效：{exc}") from None


# --export=ALL 不带过去的提交者变量：凭据（作业拿自己这次执行的）、上一层作业的 Slurm/Conductor
# 变量（作业总会得到自己的一套，留着旧值只会让“没被覆盖的那几个”指向别的作业）、shell 自己的 `_`
_NOT_EXPORTED_PREFIXES = ("SLURM_", "SBATCH_", "CONDUCTOR_")


def _exportable(name: str) -> bool:
    return (
        ENV_NAME.fullmatch(name) is not None
        and not changes_shell_startup(name)
        and not name.startswith(_NOT_EXPORTED_PREFIXES)
        and name != "_"
    )


def parse_export(value: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """--export，同 sbatch：不写即 ALL。

    ALL 把提交者的环境带进作业（跳过凭据、旧的 SLURM_*/CONDUCTOR_* 与改变 bash 启动方式的变量，
    见 _exportable）；NONE/NIL 什么也不带（作业从节点的干净基础环境启动）；逗号分隔的 NAME 或
    NAME=值 另外加上（没有 ALL 时只带这些）。
    """
    items = [item.strip() for item in (value or "ALL").split(",") if item.strip()]
    words = {item.upper() for item in items}
    env: dict[str, str] = {}
    if "ALL" in words:
        env.update({k: v for k, v in environ.items() if _exportable(k)})
    for item in items:
        if item.upper() in ("ALL", "NONE", "NIL"):
            continue
        key, sep, val = item.partition("=")
        if not ENV_NAME.fullmatch(key):
            raise SbatchError(f"--export 中的变量名无效：{key!r}")
        if sep:
            env[key] = val
        elif key in environ:
            env[key] = environ[key]
        else:
            raise SbatchError(f"--export 列出的变量 {key} 在当前环境中不存在")
    return env


DEFAULT_OUTPUT = "slurm-%j.out"


def build_payload(
    opts: SbatchOptions,
    script: str,
    script_name: str,
    cwd: Path,
    default_account: str,
    environ: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """由合并后的选项构造 POST /jobs/submit 的请求体。

    默认值同 sbatch：作业名取脚本文件名，stdout 与 stderr 都写 slurm-%j.out（%j 由服务端展开），
    工作目录为提交时的当前目录。array/dependency/priority/hold 只在指定时发送。
    """
    chdir = Path(opts.chdir).expanduser() if opts.chdir else cwd
    if not chdir.is_absolute():
        chdir = cwd / chdir
    output = opts.output or DEFAULT_OUTPUT
    job: dict[str, Any] = {
        "account": opts.account or default_account,
        "environment": {**parse_export(opts.export, environ), **(extra_env or {})},
        "current_working_directory": str(chdir.resolve()),
        "standard_output": output,
        # sbatch：未指定 --error 时 stderr 与 stdout 写同一个文件
        "standard_error": opts.error or output,
        "name": opts.job_name or script_name,
        "time_limit": opts.time or "UNLIMITED",
        "exclusive": bool(opts.exclusive),
    }
    if opts.partition:  # 不带 -p 时不发：服务端用配置的默认分区（它不一定叫 default）
        job["partition"] = opts.partition
    job.update(resource_fields(opts))
    for key in ("array", "dependency", "priority"):
        value = getattr(opts, key)
        if value is not None:
            job[key] = value
    if opts.hold:
        job["hold"] = True
    if opts.requeue is not None:
        job["requeue"] = opts.requeue
    for key in ("open_mode", "signal"):
        value = getattr(opts, key)
        if value is not None:
            job[key] = value
    return {"job": job, "script": script}


def _gres_entries(value: str, option: str) -> list[str]:
    """--gres=gpu:a100:2,nvme → gres/gpu:a100:2、gres/nvme:1（写法错误时指明是哪个选项）。"""
    try:
        return [t.spelled() for t in parse_tres(value, option)]
    except ValueError as exc:
        raise SbatchError(str(exc)) from None


def _gpu_count(value: str, option: str) -> str:
    """--gpus、--gpus-per-node、--gpus-per-task 的 [类型:]数量 → gres/gpu:[类型:]数量。"""
    if value.count(":") > 1 or not value.split(":")[-1].isdigit():
        raise SbatchError(f"{option} 格式无效：{value!r}（应为 [类型:]数量，如 2 或 a100:2）")
    return _gres_entries(f"gpu:{value}", option)[0]


def resource_fields(opts: SbatchOptions) -> dict[str, Any]:
    """资源选项 → REST 的资源字段（字段名同 Slurm REST）。

    只发送用户给出的：互斥的选项（--mem 与 --mem-per-cpu、--cpus-per-task 与 --cpus-per-gpu）
    由服务端判断冲突，默认值不应被当成“用户也给了”。"""
    job: dict[str, Any] = {}
    if opts.ntasks is not None:
        job["tasks"] = opts.ntasks
    if opts.ntasks_per_node is not None or opts.ntasks is None:
        job["ntasks_per_node"] = opts.ntasks_per_node or 1
    if opts.cpus_per_task is not None or opts.cpus_per_gpu is None:
        job["cpus_per_task"] = opts.cpus_per_task or 1
    if opts.mem is not None or (opts.mem_per_cpu is None and opts.mem_per_gpu is None):
        job["memory_per_node"] = opts.mem or "1G"
    if opts.mem_per_cpu is not None:
        job["memory_per_cpu"] = opts.mem_per_cpu
    if opts.nodes is not None:
        # N 或 N-M（服务端按 N 分配）；写法与任务数是否够分由服务端检查并点名字段
        job["nodes"] = opts.nodes
    per_node = _gres_entries(opts.gres, "--gres") if opts.gres else []
    if opts.gpus_per_node is not None:
        if any(e.startswith("gres/gpu:") for e in per_node):
            raise SbatchError("--gres=gpu 与 --gpus-per-node 不能同时指定（都在申请每节点的 GPU）")
        per_node.append(_gpu_count(opts.gpus_per_node, "--gpus-per-node"))
    if per_node:
        job["tres_per_node"] = ",".join(per_node)
    if opts.gpus is not None:
        job["tres_per_job"] = _gpu_count(opts.gpus, "--gpus")
    if opts.gpus_per_task is not None:
        job["tres_per_task"] = _gpu_count(opts.gpus_per_task, "--gpus-per-task")
    if opts.cpus_per_gpu is not None:
        job["cpus_per_tres"] = f"gres/gpu:{opts.cpus_per_gpu}"
    if opts.mem_per_gpu is not None:
        job["memory_per_tres"] = f"gres/gpu:{opts.mem_per_gpu}"
    for key, value in (
        ("constraints", opts.constraint),
        ("required_nodes", opts.nodelist),
        ("excluded_nodes", opts.exclude),
    ):
        if value is not None:
            job[key] = value
    return job
