"""组件启动失败时给用户的一行原因：从日志里挑出最能说明问题的那一行。"""

from __future__ import annotations

import re

# 终端颜色控制符（ray start 的输出带颜色）
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# 依次找：最后一个异常行（RuntimeError: …），最后一条 FATAL/ERROR
_PATTERNS = (
    re.compile(r"^[\w.]*(Error|Exception)\b[^:]*:"),
    re.compile(r"\b(FATAL|ERROR|CRITICAL)\b"),
)
MAX_CHARS = 400
# 监督进程经这个环境变量把就绪管道的写端交给 API 进程（两边共用这一个名字）
READY_FD_VAR = "CONDUCTOR_READY_FD"
# 组件起不来时 serve 的退出码：sysexits 的 EX_UNAVAILABLE，与 Python 崩溃的 1 区分开
EXIT_STARTUP_FAILED = 69


class StartupFailed(Exception):
    """组件试了几次仍无法启动；消息是给用户的一行中文（原因与日志文件）。"""


def failure_cause(text: str) -> str:
    """一段日志里最能说明失败原因的一行；都找不到时取最后一行。"""
    lines = [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    for pattern in _PATTERNS:
        for line in reversed(lines):
            if pattern.search(line):
                return line[:MAX_CHARS]
    return lines[-1][:MAX_CHARS] if lines else ""
