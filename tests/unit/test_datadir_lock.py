"""数据目录锁：第二个持有者被拒绝并得知第一个的 pid；释放后可以再占。"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conductor.datadir_lock import lock_data_dir
from conductor.startup import StartupFailed


def test_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = lock_data_dir(data)
    with pytest.raises(
        StartupFailed, match=rf"正被另一个 conductor serve 使用（pid {os.getpid()}）"
    ):
        lock_data_dir(data)
    os.close(first)
    os.close(lock_data_dir(data))
