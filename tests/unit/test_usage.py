"""usage：真实进程的峰值内存与 CPU 时间，采样与 cgroup 两条路（cgroup 那条要 root 与可写的 memory
控制器，没有时跳过），以及 cgroup 的内存上限与 OOM 计数、用完即删。"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conductor import usage
from conductor.proctree import spawn
from conductor.usage import Meter, Probe, Usage
from harness.waiting import wait_for
from tests.unit.test_executor import REPO_ROOT

MB = 1 << 20
# 分配 100 MB（逐页写入，真的驻留），再睡一会儿让采样看得见
ALLOC_100 = "b = bytearray(100 << 20); import time; time.sleep(0.5)"
BUSY = "x = 0\nfor i in range(3_000_000): x += i"
# 两个子进程各分配 50 MB，分配好后各报一行 ready，等父进程的 stdin 关闭才退出：
# 测试在两者同时驻留时检查峰值，不靠计时
TWO_CHILDREN = """
import subprocess, sys
child = "import sys; b = bytearray(50 << 20); print('ready', flush=True); sys.stdin.read()"
kids = [subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE) for _ in range(2)]
for k in kids:
    k.stdout.readline()
print("ready", flush=True)
sys.stdin.read()
for k in kids:
    k.kill(); k.wait()
"""

CGROUP = usage.detect() is not None and os.geteuid() == 0
needs_cgroup = pytest.mark.skipif(not CGROUP, reason="需要 root 与可写的 memory cgroup")


def _run(probe: Probe, code: str) -> tuple[int, Usage]:
    proc = spawn([sys.executable, "-c", code], preexec_fn=probe.preexec())
    probe.started(proc.pid)
    ru = usage.wait_rusage(proc)
    return proc.returncode, probe.finish(ru)


def _two_children(probe: Probe) -> Usage:
    """两个各 50 MB 的子进程同时驻留时等峰值达到 100 MB（采样）或直接读叶子（cgroup）。"""
    proc = spawn(
        [sys.executable, "-c", TWO_CHILDREN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=probe.preexec(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    probe.started(proc.pid)
    assert proc.stdout.readline() == b"ready\n"
    if probe.sampler is not None:
        wait_for(lambda: probe.sampler is not None and probe.sampler.peak >= 100 * MB, 10)
    proc.stdin.close()
    ru = usage.wait_rusage(proc)
    assert proc.returncode == 0
    return probe.finish(ru)


def test_sampled_peak_of_one_process() -> None:
    rc, used = _run(Probe(None), ALLOC_100)
    assert rc == 0
    assert used.max_rss_bytes is not None and used.max_rss_bytes >= 100 * MB


def test_sampled_peak_is_the_sum_over_the_tree() -> None:
    used = _two_children(Probe(None))
    assert used.max_rss_bytes is not None and used.max_rss_bytes >= 100 * MB


def test_cpu_time_of_a_busy_loop() -> None:
    rc, used = _run(Probe(None), BUSY)
    assert rc == 0
    assert used.user_cpu_seconds is not None and used.user_cpu_seconds > 0
    assert used.system_cpu_seconds is not None


def test_summarize_takes_max_mean_and_sums() -> None:
    total, ave = usage.summarize(
        [Usage(100, 1.0, 0.5), Usage(300, 2.0, 0.25), Usage(None, None, None)]
    )
    assert total == Usage(300, 3.0, 0.75)
    assert ave == 200
    assert usage.summarize([]) == (Usage(), None)


def test_usage_round_trips_through_a_dict() -> None:
    u = Usage(123, 1.5, 0.25, True)
    assert Usage.from_dict(u.as_dict()) == u
    assert Usage.from_dict({"max_rss_bytes": "x"}) is None
    assert Usage.from_dict(None) is None


@needs_cgroup
def test_cgroup_peak_cpu_and_removal() -> None:
    meter = Meter(f"test-{uuid.uuid4().hex[:8]}", 0)
    assert meter.cgroup is not None and not meter.enforced
    try:
        rc, one = _run(meter.probe("one"), ALLOC_100)
        assert rc == 0
        assert one.max_rss_bytes is not None and one.max_rss_bytes >= 100 * MB
        tree = _two_children(meter.probe("tree"))
        assert tree.max_rss_bytes is not None and tree.max_rss_bytes >= 100 * MB
        rc, busy = _run(meter.probe("busy"), BUSY)
        assert busy.user_cpu_seconds is not None and busy.user_cpu_seconds > 0
        assert not (one.oom_killed or tree.oom_killed or busy.oom_killed)
    finally:
        meter.close()
    assert not any(d.exists() for d in meter.cgroup.dirs.values())
    assert not [
        p
        for p in usage.leftover_cgroups()
        if p.name in {d.name for d in meter.cgroup.dirs.values()}
    ]


@needs_cgroup
def test_cgroup_limit_oom_kills_and_is_counted() -> None:
    meter = Meter(f"test-{uuid.uuid4().hex[:8]}", 60 * MB)
    assert meter.enforced
    try:
        rc, used = _run(meter.probe("big"), "b = bytearray(200 << 20)")
        assert rc == -9
        assert used.oom_killed
        rc, small = _run(meter.probe("small"), "b = bytearray(10 << 20)")
        assert rc == 0 and not small.oom_killed
    finally:
        meter.close()
    assert not any(d.exists() for d in meter.cgroup.dirs.values())


@needs_cgroup
def test_cgroup_joins_before_exec_even_as_another_user() -> None:
    """以别的用户运行的进程也在 exec 之前进入叶子（cgroup.procs 由 root 事先打开）。"""
    meter = Meter(f"test-{uuid.uuid4().hex[:8]}", 0)
    try:
        probe = meter.probe("nobody")
        proc = spawn(
            ["/bin/cat", "/proc/self/cgroup"],
            stdout=subprocess.PIPE,
            user=65534,
            group=65534,
            preexec_fn=probe.preexec(),
        )
        probe.started(proc.pid)
        out, _ = proc.communicate()
        assert proc.returncode == 0
        assert meter.cgroup is not None
        leaf = meter.cgroup.dirs["memory" if meter.cgroup.version == 1 else "unified"]
        assert f"{leaf.name}/nobody" in out.decode()
    finally:
        meter.close()


@needs_cgroup
def test_stale_empty_cgroups_are_swept_but_live_ones_stay() -> None:
    """执行器被强制结束时留下的空 cgroup：下一个作业建 cgroup 时删掉空了很久的；刚建的、
    里面还有进程的都不动（正在运行的作业不受影响）。"""
    tag = uuid.uuid4().hex[:8]
    stale = Meter(f"test-{tag}-stale", 0)
    fresh = Meter(f"test-{tag}-fresh", 0)
    busy = Meter(f"test-{tag}-busy", 0)
    assert stale.cgroup and fresh.cgroup and busy.cgroup
    stale.cgroup.leaf("batch")
    probe = busy.probe("batch")
    proc = spawn(["/bin/sleep", "60"], preexec_fn=probe.preexec())
    probe.started(proc.pid)
    old = time.time() - 2 * usage.STALE_AFTER
    try:
        for group in (stale.cgroup, busy.cgroup):
            for d in group.dirs.values():
                os.utime(d, (old, old))
        nxt = Meter(f"test-{tag}-next", 0)
        nxt.close()
        assert not any(d.exists() for d in stale.cgroup.dirs.values())
        assert all(d.exists() for d in fresh.cgroup.dirs.values())
        assert all(d.exists() for d in busy.cgroup.dirs.values())
    finally:
        proc.kill()
        proc.wait()
        for m in (stale, fresh, busy):
            m.close()
    assert not any(d.exists() for m in (fresh, busy) for d in m.cgroup.dirs.values())  # type: ignore[union-attr]


# 在没有可写 cgroup 的节点上运行执行器（非 root、只读的 cgroupfs）：以 nobody 运行要能执行服务的
# Python（这里它在 0700 的 /root 下），所以改为让这个子进程里的检测答“没有”，其余全是真的
NO_CGROUP = """
import json, sys
from conductor import usage
usage.detect = lambda: None
from cluster.executor import execute
from conductor.jobspec import JobSpec
from conductor.proctree import new_token
wd = sys.argv[1]
spec = JobSpec(job_id=7, name="t", account="a", partition="p", script=sys.stdin.read(),
               environment={}, work_dir=wd, stdout_path=wd + "/out", stderr_path=wd + "/out",
               ntasks_per_node=1, cpus_per_task=1, cpus=1, memory_bytes=50 << 20,
               time_limit_seconds=60, node_name="n", token=new_token(), kill_wait=1.0)
r = execute(spec)
print(json.dumps({"code": r.returncode, "error": r.error, "usage": r.usage.as_dict()}))
"""


def test_without_a_cgroup_the_executor_samples_and_does_not_enforce(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_CGROUP, str(tmp_path)],
        input=f"python3 -c '{ALLOC_100}'\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # 50 MB 的 --mem 没有执行（没有 cgroup）：分配 100 MB 的作业照常完成，峰值由采样测得
    assert (result["code"], result["error"]) == (0, None), (tmp_path / "out").read_text()
    assert result["usage"]["max_rss_bytes"] >= 100 * MB
    assert result["usage"]["oom_killed"] is False
    assert result["usage"]["user_cpu_seconds"] > 0
