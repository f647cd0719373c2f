"""作业环境变量名的规则：哪些名字合法、哪些改变 bash 的启动方式（提交时拒绝，导出时跳过）。

只用标准库：sbatch 等替身命令也用它（启动要快）。
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# 改变 bash 启动方式的变量：在脚本第一行之前执行代码（BASH_ENV、ENV、导出的函数）或改变
# 解析与跟踪（SHELLOPTS、BASHOPTS）。作业环境里不接受它们，提交时拒绝。
SHELL_STARTUP_VARS = frozenset({"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS"})


def changes_shell_startup(name: str) -> bool:
    """该环境变量是否改变 bash 的启动方式（BASH_FUNC_* 是 bash 导出的函数）。"""
    return name in SHELL_STARTUP_VARS or name.startswith("BASH_FUNC_")
