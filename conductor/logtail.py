"""读取作业日志：1 MB 以内整份返回，否则返回最后 1000 行并注明已截断。"""

from __future__ import annotations

from pathlib import Path

WHOLE_LIMIT = 1024 * 1024
TAIL_LINES = 1000
# 截断时从文件末尾读取的字节数上限，避免为取最后 1000 行读入超大文件
TAIL_WINDOW = 4 * 1024 * 1024


def read_tail(path: Path) -> str | None:
    """返回日志内容；文件不存在返回 None。"""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size <= WHOLE_LIMIT:
                f.seek(0)
                return f.read().decode("utf-8", errors="replace")
            f.seek(max(0, size - TAIL_WINDOW))
            data = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    # 只按 \n 切行（同 tail -n）：进度条里的 \r 不算换行
    lines = data.decode("utf-8", errors="replace").split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    tail = "\n".join(lines[-TAIL_LINES:]) + ("\n" if ends_with_newline else "")
    note = f"[日志共 {size} 字节，超过 1 MB，以下仅为最后 {TAIL_LINES} 行]\n"
    return note + tail


def read_range(path: Path, offset: int | None, limit: int) -> dict:
    """从 offset 起读至多 limit 字节；offset 为 None 时读最后 limit 字节。

    返回 {"data": 字节或 None（文件不存在）, "offset": 实际起点, "size": 文件当前大小}。
    offset 超过文件大小（文件被截断重写）时从头读。
    """
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = max(0, size - limit) if offset is None else offset
            if start > size:
                start = 0
            f.seek(start)
            return {"data": f.read(limit), "offset": start, "size": size}
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return {"data": None, "offset": offset or 0, "size": 0}
