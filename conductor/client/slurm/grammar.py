"""Slurm 命令共用的语法（纯函数）：作业号列表、状态名、逗号列表、argparse 的 Slurm 式报错。"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Collection, Mapping
from typing import Any, NoReturn

# src/common/slurm_protocol_defs.c 的 job_state_string 与 job_state_string_compact
STATE_COMPACT = {
    "PENDING": "PD",
    "RUNNING": "R",
    "SUSPENDED": "S",
    "COMPLETING": "CG",
    "COMPLETED": "CD",
    "CONFIGURING": "CF",
    "CANCELLED": "CA",
    "FAILED": "F",
    "TIMEOUT": "TO",
    "PREEMPTED": "PR",
    "NODE_FAIL": "NF",
    "BOOT_FAIL": "BF",
    "DEADLINE": "DL",
    "OUT_OF_MEMORY": "OOM",
    "REQUEUED": "RQ",
    "RESIZING": "RS",
    "REVOKED": "RV",
    "SIGNALING": "SI",
    "SPECIAL_EXIT": "SE",
    "STAGE_OUT": "SO",
    "STOPPED": "ST",
}
# 还没结束的状态（squeue 默认只列这些；src/squeue/print.c 的 _filter_job）
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING"})
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)
_BY_COMPACT = {v: k for k, v in STATE_COMPACT.items()}


class GrammarError(ValueError):
    """命令行的写法无效。"""


def parse_states(text: str) -> frozenset[str]:
    """逗号分隔的状态：全名（pending）或缩写（PD），大小写不敏感；返回全名集合。"""
    states: set[str] = set()
    for raw in text.split(","):
        name = raw.strip().upper()
        if not name:
            continue
        if name in STATE_COMPACT:
            states.add(name)
        elif name in _BY_COMPACT:
            states.add(_BY_COMPACT[name])
        else:
            raise GrammarError(f"Invalid job state specified: {raw.strip()}")
    if not states:
        raise GrammarError(f"Invalid job state specified: {text}")
    return frozenset(states)


def split_list(text: str) -> list[str]:
    """逗号分隔的列表，方括号里的逗号不算分隔（12_[1,3],13 → 12_[1,3]、13）。"""
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]


_JOB = re.compile(r"^(\d+)(?:_(\d+|\*|\[([0-9,\-:%]+)\]))?(?:\.(\w+))?$")


def expand_job_ids(text: str, allow_step: bool = False) -> list[str]:
    """作业号列表 → 逐个的引用：12 → 12；12_3 → 12_3；12_[1-3,7] → 12_1 12_2 12_3 12_7；
    12_* → 12（整个数组）。allow_step 时保留 .batch/.0 之类的作业步后缀。"""
    refs: list[str] = []
    for item in split_list(text):
        match = _JOB.match(item)
        if match is None or (match[4] is not None and not allow_step):
            raise GrammarError(f"Invalid job id: {item}")
        job, task, ranges, step = match[1], match[2], match[3], match[4]
        suffix = f".{step}" if step else ""
        if task is None or task == "*":
            refs.append(job + suffix)
        elif ranges is None:
            refs.append(f"{job}_{int(task)}{suffix}")
        else:
            refs.extend(f"{job}_{i}{suffix}" for i in _expand_ranges(ranges.split("%")[0], item))
    if not refs:
        raise GrammarError(f"Invalid job id: {text}")
    return refs


def _expand_ranges(text: str, item: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if m is None:
            raise GrammarError(f"Invalid job id: {item}")
        lo = int(m[1])
        hi = int(m[2]) if m[2] else lo
        step = int(m[3]) if m[3] else 1
        if hi < lo or step < 1:
            raise GrammarError(f"Invalid job id: {item}")
        out.extend(range(lo, hi + 1, step))
    return out


def current_user() -> str:
    """提交者的用户名（同 submit 的默认账户：$USER，取不到时问系统）。"""
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "default"


def owned_by(item: Mapping[str, Any], users: Collection[str]) -> bool:
    """作业是否属于这些用户之一：运行它的 Unix 用户（user），或提交它的账户。

    账户没有映射到 Unix 用户时作业以服务自身的用户运行，user 不是提交者；提交者的默认账户就是
    $USER（同 submit），所以 -u/--me 也按账户认。"""
    return item.get("user") in users or item.get("account") in users


class SlurmParser(argparse.ArgumentParser):
    """argparse，但报错照 Slurm：`prog: error: …`，退出码 1（Slurm 的命令行错误都是 1）。

    argparse 与 getopt_long 一样支持 --opt=值、--opt 值、-X值、短开关合写（-hr）与长选项的唯一前缀。
    """

    def __init__(self, prog: str, usage: str) -> None:
        super().__init__(prog=prog, add_help=False, usage=usage)
        self.add_argument("--help", action="store_true")
        self.add_argument("--usage", action="store_true")

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.stderr.write(f'Try "{self.prog} --help" for more information\n')
        raise SystemExit(1)

    def parse(self, argv: list[str], help_text: str) -> argparse.Namespace:
        args = self.parse_args(argv)
        if args.help or args.usage:
            sys.stdout.write(help_text)
            raise SystemExit(0)
        return args
