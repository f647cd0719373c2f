"""执行器的模块不导入 pydantic、pydantic-settings、SQLAlchemy、FastAPI：每个运行中的作业都有一个执行器所在的
Ray worker，它多导入的每个包都要乘以节点上的作业数（issue 20 第 3 项，数字见 docs/benchmarks.md）。
在新的子进程里导入模块，再看 sys.modules。"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("pydantic", "pydantic_settings", "sqlalchemy", "sqlmodel", "fastapi")

CHECK = f"""
import sys
import cluster.executor
bad = sorted(m for m in sys.modules if m.split(".")[0] in {set(FORBIDDEN)!r})
print("LOADED", len(bad), bad[:5])
"""


def test_executor_imports_no_service_packages() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED 0 []" in done.stdout, done.stdout
