"""Slurm 替身命令的模块不导入 Ray、httpx、FastAPI、SQLAlchemy：每次 squeue 都要快（目标远低于 0.3 秒，
启动时间见 bench/slurm_startup.py）。在新的子进程里导入模块，再看 sys.modules。"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("ray", "httpx", "fastapi", "sqlalchemy", "typer", "rich")

CHECK = f"""
import importlib, sys
importlib.import_module(sys.argv[1])
bad = sorted(m for m in sys.modules if m.split(".")[0] in {set(FORBIDDEN)!r})
print("LOADED", len(bad), bad[:5])
"""


@pytest.mark.parametrize("command", ["sbatch", "squeue", "scancel", "sacct", "sinfo", "scontrol"])
def test_command_module_imports_no_heavy_packages(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK, f"conductor.client.slurm.{command}"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED 0 []" in done.stdout, done.stdout
