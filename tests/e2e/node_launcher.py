"""测试用的“节点”：依次用 bash 执行一个节点的启动命令，然后留下来收养它们的后台进程。

用法：python node_launcher.py STATUS_FILE LOG_FILE CMD...

`ray start` 与 `nohup … &` 启动的守护进程在命令返回后成了孤儿；本进程设为 child subreaper，
孤儿都挂到它名下，测试夹具只要结束本进程的全部后代，就能停掉这个“节点”上的一切，
而不必用会波及本机其他 Ray 集群的 `ray stop`。全部命令成功后在 STATUS_FILE 写 ok，
某条失败则写 failed 与那条命令，之后不再执行后面的命令。
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    status_path, log_path, *commands = sys.argv[1:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    status = "ok"
    with open(log_path, "ab", buffering=0) as log:
        for command in commands:
            log.write(f"$ {command}\n".encode())
            code = subprocess.run(
                ["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            ).returncode
            if code != 0:
                status = f"failed (exit {code}): {command}"
                break
    with open(status_path + ".tmp", "w") as f:
        f.write(status)
    os.replace(status_path + ".tmp", status_path)
    # 回收被收养的孤儿，直到被测试结束
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)


if __name__ == "__main__":
    main()
