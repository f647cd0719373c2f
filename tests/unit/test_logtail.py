"""logtail.read_tail 的单元测试（真实临时文件）。"""

from __future__ import annotations

from pathlib import Path

from conductor.logtail import TAIL_LINES, WHOLE_LIMIT, read_tail


def note_for(size: int) -> str:
    return f"[日志共 {size} 字节，超过 1 MB，以下仅为最后 1000 行]\n"


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "nope.log") is None


def test_missing_parent_is_none(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    # 父路径是普通文件：NotADirectoryError 也按“不存在”处理
    assert read_tail(f / "child.log") is None


def test_directory_is_none(tmp_path: Path) -> None:
    assert read_tail(tmp_path) is None


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.log"
    f.write_bytes(b"")
    assert read_tail(f) == ""


def test_small_file_whole(tmp_path: Path) -> None:
    f = tmp_path / "out.log"
    content = "第一行\nsecond line\r\nno newline at end"
    f.write_text(content, encoding="utf-8")
    assert read_tail(f) == content


def test_exactly_limit_is_whole(tmp_path: Path) -> None:
    """恰好 1 MiB 仍整份返回，不加说明行。"""
    f = tmp_path / "limit.log"
    line = b"a" * 1023 + b"\n"
    data = line * (WHOLE_LIMIT // len(line))
    assert len(data) == WHOLE_LIMIT
    f.write_bytes(data)
    assert read_tail(f) == data.decode()


def test_over_limit_tail(tmp_path: Path) -> None:
    """超过 1 MiB：说明行 + 恰好最后 1000 行。"""
    f = tmp_path / "big.log"
    lines = [f"line {i:06d} " + "x" * 100 + "\n" for i in range(20000)]
    data = "".join(lines).encode()
    assert len(data) > WHOLE_LIMIT
    f.write_bytes(data)
    result = read_tail(f)
    assert result is not None
    assert result == note_for(len(data)) + "".join(lines[-TAIL_LINES:])
    body = result.split("\n", 1)[1]
    assert body.count("\n") == 1000
    assert body.startswith("line 019000 ")


def test_one_byte_over_limit(tmp_path: Path) -> None:
    f = tmp_path / "edge.log"
    lines = [f"{i}\n" for i in range(200000)]
    data = "".join(lines).encode()
    data = data[: WHOLE_LIMIT + 1]
    f.write_bytes(data)
    result = read_tail(f)
    assert result is not None
    assert result.startswith(note_for(WHOLE_LIMIT + 1))
    expected = "".join(data.decode().splitlines(keepends=True)[-1000:])
    assert result.removeprefix(note_for(WHOLE_LIMIT + 1)) == expected


def test_over_limit_without_trailing_newline(tmp_path: Path) -> None:
    f = tmp_path / "partial.log"
    lines = [f"row {i}\n" for i in range(300000)]
    data = "".join(lines) + "partial-last"
    f.write_text(data)
    result = read_tail(f)
    assert result is not None
    assert result.endswith("row 299999\npartial-last")
    body = result.removeprefix(note_for(len(data.encode())))
    assert body == "".join(lines[-999:]) + "partial-last"


def test_invalid_utf8_small_is_replaced(tmp_path: Path) -> None:
    f = tmp_path / "bin.log"
    f.write_bytes(b"ok\n\xff\xfe bad \xc3\n")
    assert read_tail(f) == "ok\n\ufffd\ufffd bad \ufffd\n"


def test_invalid_utf8_large_is_replaced(tmp_path: Path) -> None:
    f = tmp_path / "binbig.log"
    line = b"\xff\xfe garbage \x80 " + b"y" * 200 + b"\n"
    data = line * 6000
    assert len(data) > WHOLE_LIMIT
    f.write_bytes(data)
    result = read_tail(f)
    assert result is not None
    body = result.removeprefix(note_for(len(data)))
    assert body == line.decode("utf-8", errors="replace") * 1000


def test_over_limit_counts_only_newlines(tmp_path: Path) -> None:
    """进度条常用 \\r 原地刷新；“最后 1000 行”应按 \\n 计，与 tail -n 1000 一致。"""
    f = tmp_path / "progress.log"
    lines = [f"epoch {i:05d} 10%\r50%\r100%\n" for i in range(60000)]
    data = "".join(lines)
    assert len(data.encode()) > WHOLE_LIMIT
    f.write_text(data)
    result = read_tail(f)
    assert result == note_for(len(data.encode())) + "".join(lines[-1000:])
