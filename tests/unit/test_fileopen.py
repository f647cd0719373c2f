"""conductor.fileopen 与 logtail 遇到 FIFO、设备、符号链接（真实的文件系统对象）：
从不阻塞、从不打开非普通文件，答复一句说明。打开 FIFO 一旦阻塞，测试由 timeout 判失败。"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conductor.fileopen import NotRegularFile, open_output, open_regular
from conductor.logtail import read_range, read_tail

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "out.txt"
    os.mkfifo(path)
    return path


def test_log_that_is_a_fifo_is_refused_without_blocking(fifo: Path) -> None:
    assert read_tail(fifo) == f"[拒绝读取：日志文件 {fifo} 不是普通文件（FIFO）]"
    chunk = read_range(fifo, 0, 100)
    assert chunk["data"] is None and chunk["error"] == f"日志文件 {fifo} 不是普通文件（FIFO）"


def test_log_that_links_to_a_fifo_or_device_is_refused(tmp_path: Path, fifo: Path) -> None:
    (tmp_path / "to-fifo").symlink_to(fifo)
    (tmp_path / "to-dev").symlink_to("/dev/zero")
    assert "不是普通文件（FIFO）" in (read_tail(tmp_path / "to-fifo") or "")
    assert "不是普通文件（设备）" in (read_tail(tmp_path / "to-dev") or "")


def test_log_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("hello\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert read_tail(tmp_path / "link.txt") == "hello\n"


def test_output_fifo_device_or_symlink_is_refused(tmp_path: Path, fifo: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for path, kind in (
        (fifo, "FIFO"),
        (Path("/dev/zero"), "设备"),
        (tmp_path / "link", "符号链接"),
    ):
        with pytest.raises(NotRegularFile, match=f"输出文件 {path} 不是普通文件（{kind}）"):
            open_output(path)
    assert not (tmp_path / "target").exists()  # 没有顺着符号链接创建文件


def test_output_regular_is_created_or_truncated_and_dev_null_allowed(tmp_path: Path) -> None:
    old = tmp_path / "old.txt"
    old.write_text("previous run\n")
    for path in (old, tmp_path / "new.txt", Path("/dev/null")):
        fd = open_output(path)
        os.write(fd, b"x")
        os.close(fd)
    assert old.read_text() == "x" and (tmp_path / "new.txt").read_text() == "x"


def test_open_regular_refuses_fifo(fifo: Path) -> None:
    with pytest.raises(NotRegularFile):
        open_regular(fifo)


def test_open_output_append_keeps_content(tmp_path: Path) -> None:
    """--open-mode=append：已有内容保留、写在末尾；默认截断。"""
    path = tmp_path / "out.log"
    path.write_text("first\n")
    fd = open_output(path, append=True)
    os.write(fd, b"second\n")
    os.close(fd)
    assert path.read_text() == "first\nsecond\n"
    fd = open_output(path)
    os.write(fd, b"third\n")
    os.close(fd)
    assert path.read_text() == "third\n"
