"""读取作业日志：1 MB 以内整份返回，否则返回最后 1000 行并注明已截断。

日志路径归作业所有：作业可以把它换成 FIFO 或设备。只打开普通文件（conductor.fileopen），
否则 open 会一直阻塞（FIFO 没有写者），读日志的线程从此被占住。
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from conductor.fileopen import NotRegularFile, open_regular

WHOLE_LIMIT = 1024 * 1024
TAIL_LINES = 1000
# 截断时从文件末尾读取的字节数上限，避免为取最后 1000 行读入超大文件
TAIL_WINDOW = 4 * 1024 * 1024


def owner_uid(user: str | None) -> int | None:
    """作业用户的 uid；用户在本节点不存在时为 -1（任何文件都不匹配，一律拒绝读取）。"""
    if user is None:
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return -1


def read_tail(path: Path, uid: int | None = None) -> str | None:
    """返回日志内容；文件不存在返回 None。

    uid 非空时（作业以该用户运行），打开后核对文件属主：作业用户可能把日志换成指向
    别人文件的符号链接，而读日志的是服务（可能是 root）。以打开的文件为准，没有竞态。"""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            if uid is not None and os.fstat(f.fileno()).st_uid != uid:
                return f"[拒绝读取：日志文件 {path} 不属于作业的用户]"
            size = f.seek(0, 2)
            if size <= WHOLE_LIMIT:
                f.seek(0)
                return f.read().decode("utf-8", errors="replace")
            f.seek(max(0, size - TAIL_WINDOW))
            data = f.read()
    except NotRegularFile as exc:
        if stat.S_ISDIR(exc.mode):
            return None
        return f"[拒绝读取：日志文件 {exc}]"
    except (FileNotFoundError, NotADirectoryError):
        return None
    # 只按 \n 切行（同 tail -n）：进度条里的 \r 不算换行
    lines = data.decode("utf-8", errors="replace").split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    tail = "\n".join(lines[-TAIL_LINES:]) + ("\n" if ends_with_newline else "")
    note = f"[日志共 {size} 字节，超过 1 MB，以下仅为最后 {TAIL_LINES} 行]\n"
    return note + tail


def read_range(path: Path, offset: int | None, limit: int, uid: int | None = None) -> dict:
    """从 offset 起读至多 limit 字节；offset 为 None 时读最后 limit 字节。

    返回 {"data": 字节或 None（文件不存在）, "offset": 实际起点, "size": 文件当前大小}。
    offset 超过文件大小（文件被截断重写）时从头读。uid 非空而文件不属于它时，按不存在处理
    （理由同 read_tail）。不是普通文件（FIFO、设备）时另有 "error"：一句中文说明。
    """
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            if uid is not None and os.fstat(f.fileno()).st_uid != uid:
                return {"data": None, "offset": offset or 0, "size": 0, "denied": True}
            size = f.seek(0, 2)
            start = max(0, size - limit) if offset is None else offset
            if start > size:
                start = 0
            f.seek(start)
            return {"data": f.read(limit), "offset": start, "size": size}
    except NotRegularFile as exc:
        missing = {"data": None, "offset": offset or 0, "size": 0}
        return missing if stat.S_ISDIR(exc.mode) else missing | {"error": f"日志文件 {exc}"}
    except (FileNotFoundError, NotADirectoryError):
        return {"data": None, "offset": offset or 0, "size": 0}
