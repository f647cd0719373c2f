"""打开作业给出的路径而不受它摆布（仅限 Linux）：FIFO、设备、套接字永远不会让服务阻塞，
也不会被真正打开（打开某些设备本身就有副作用，如 /dev/watchdog）。

做法：先以 O_PATH 取得路径指向的对象——O_PATH 不真正打开文件，FIFO 不等对端，设备的 open 不执行；
fstat 确认它是普通文件后，再经 /proc/self/fd/N 重新打开同一个 inode。检查与打开之间没有竞态：
路径在此期间被换掉也无妨，打开的始终是检查过的那一个。
"""

from __future__ import annotations

import os
import stat

# /dev/null 是唯一接受的非普通文件：常用来丢弃输出，打开它没有副作用
_DEV_NULL = os.makedev(1, 3)


class NotRegularFile(OSError):
    """路径不是普通文件（FIFO、设备、套接字、目录、符号链接），拒绝打开。"""

    def __init__(self, message: str, mode: int) -> None:
        super().__init__(message)
        self.mode = mode


def kind_of(mode: int) -> str:
    """文件类型的中文名（用于说明为什么拒绝）。"""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "设备"
    if stat.S_ISSOCK(mode):
        return "套接字"
    if stat.S_ISDIR(mode):
        return "目录"
    if stat.S_ISLNK(mode):
        return "符号链接"
    return "特殊文件"


def _reopen(pfd: int, flags: int) -> int:
    return os.open(f"/proc/self/fd/{pfd}", flags | os.O_CLOEXEC | os.O_NOCTTY)


def open_regular(path: str | os.PathLike[str]) -> int:
    """以只读打开一个普通文件，返回 fd（可跟随符号链接，打开的是它最终指向的对象）。

    不是普通文件时抛 NotRegularFile。"""
    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(
                f"{os.fspath(path)} 不是普通文件（{kind_of(st.st_mode)}）", st.st_mode
            )
        return _reopen(pfd, os.O_RDONLY)
    finally:
        os.close(pfd)


def open_output(path: str | os.PathLike[str], append: bool = False) -> int:
    """为作业创建或截断（append 时追加）输出文件，返回可写的 fd。只接受普通文件与 /dev/null。

    fd 总是带 O_APPEND（同 slurmstepd：作业与它的作业步同写一个文件也不会互相覆盖）。
    最后一级是符号链接也拒绝：服务可能以 root 运行，别的作业放下的符号链接能让它截断任意文件。"""
    try:
        # 新建：O_EXCL 保证不会打开任何已存在的东西
        return os.open(
            path,
            os.O_WRONLY
            | os.O_APPEND
            | os.O_CREAT
            | os.O_EXCL
            | os.O_NOFOLLOW
            | os.O_CLOEXEC
            | os.O_NOCTTY,
            0o644,
        )
    except FileExistsError:
        pass
    pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(pfd)
        regular = stat.S_ISREG(st.st_mode)
        if not regular and not (stat.S_ISCHR(st.st_mode) and st.st_rdev == _DEV_NULL):
            raise NotRegularFile(
                f"输出文件 {os.fspath(path)} 不是普通文件（{kind_of(st.st_mode)}），拒绝打开",
                st.st_mode,
            )
        fd = _reopen(pfd, os.O_WRONLY | os.O_APPEND)
    finally:
        os.close(pfd)
    if regular and not append:
        os.ftruncate(fd, 0)
    return fd
