"""客户端命令不导入 Ray：每次 `conductor queue` 都导入 Ray 要多花一两秒。

在子进程里真正执行命令（连一个没人监听的地址，以“连不上”结束），再看 Ray 是否被导入过。"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.serve_process import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

RUNNER = """
import sys
from api.cli import main
sys.argv = ["conductor", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("RAY_MODULES", len(loaded), loaded[:3])
"""

NOWHERE = f"http://127.0.0.1:{free_port()}"
# 令牌命令连接数据库：给一个连不上的地址，命令同样会执行到出错为止
NO_DB = f"postgresql://nobody@127.0.0.1:{free_port()}/none"


@pytest.mark.parametrize(
    "args",
    [
        ["queue", "--url", NOWHERE],
        ["query", "1", "--url", NOWHERE],
        ["history", "--url", NOWHERE],
        ["cancel", "1", "--url", NOWHERE],
        ["logs", "1", "--url", NOWHERE],
        ["info", "--url", NOWHERE],
        ["submit", __file__, "--url", NOWHERE],
        ["token", "list", "--database-url", NO_DB],
        ["token", "create", "--account", "a", "--database-url", NO_DB],
        ["token", "revoke", "1", "--database-url", NO_DB],
        ["queue", "--help"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_client_command_does_not_import_ray(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RAY_MODULES 0 "), (last, done.stderr[-2000:])
