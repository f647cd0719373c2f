"""子进程随父进程退出：Linux 的 PR_SET_PDEATHSIG。

监督进程即使被 SIGKILL，它启动的 Ray 头节点与 API 进程也会收到 SIGTERM 并按各自的正常流程退出，
不会作为孤儿占着端口。
"""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """在子进程里（fork 之后、exec 之前）调用：父进程一死就收到 SIGTERM。"""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
