"""私有的真实 PostgreSQL：测试会话与基准各自启动一个，用完停止并删除数据目录。"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conductor.embedded_pg import EmbeddedPostgres


@contextmanager
def private_postgres(prefix: str) -> Iterator[EmbeddedPostgres]:
    """一个真实的 PostgreSQL（pgserver），数据放在独立的临时目录，结束时停止并删除。

    不放在 pytest 的 tmp_path 下：另一个 pytest 进程清理旧的 basetemp 时会改动目录权限，
    以 pgserver 用户运行的 postgres 随之失去对数据目录的访问。
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
