"""客户端命令不导入 Ray 与服务端的库：每次 `conductor queue` 都导入 Ray 要多花一两秒，
FastAPI、SQLAlchemy、uvicorn 也各要几十到上百毫秒（`conductor queue --help` 的目标是 0.3 秒内，
见 docs/benchmarks.md）。

在子进程里真正执行命令（连一个没人监听的地址，以“连不上”结束），再看这些包是否被导入过。
令牌命令直接连数据库，SQLAlchemy 是它的本分：只对它们检查 Ray。"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.serve import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

RUNNER = """
import sys
from api.cli import main
sys.argv = ["conductor", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
for package in ("ray", "fastapi", "sqlalchemy", "uvicorn"):
    loaded = sorted(m for m in sys.modules if m == package or m.startswith(package + "."))
    print(package.upper() + "_MODULES", len(loaded), loaded[:3])
"""

SERVER_PACKAGES = ("RAY", "FASTAPI", "SQLALCHEMY", "UVICORN")

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
        # Slurm 替身命令经 conductor 转交：同样不带上服务端的库
        ["squeue", "--help"],
        ["sbatch", "--help"],
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
    counts = dict(line.split()[:2] for line in done.stdout.splitlines() if "_MODULES " in line)
    forbidden = ("RAY",) if args[0] == "token" else SERVER_PACKAGES
    assert {p: counts.get(f"{p}_MODULES") for p in forbidden} == dict.fromkeys(forbidden, "0"), (
        done.stdout[-2000:],
        done.stderr[-2000:],
    )
