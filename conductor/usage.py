"""作业与作业步的用量：整棵进程树的峰值常驻内存、用户态与内核态 CPU 时间，以及 --mem 的执行。

两种测法，运行时自动选择：
- 能建 cgroup（root，cgroup v1 的 memory 控制器或 v2 的 memory 控制器可写）：每个作业在本节点
  一个 cgroup（上限为作业在本节点的内存），批处理脚本与每个作业步任务各占其下一个叶子。峰值取
  叶子的 memory.max_usage_in_bytes（v1）/ memory.peak（v2），CPU 取 cpuacct.stat / cpu.stat，
  超出上限由内核 OOM 杀掉，叶子的 oom_kill 计数据此判 OUT_OF_MEMORY。
- 建不了（非 root、只读、没有 memory 控制器）：不限制内存，后台线程按间隔对进程树的 RSS 求和取
  峰值；CPU 取 wait4 的 rusage（脚本及它等待过的子孙）。
wait4 的 ru_maxrss 不用：直接子进程的 ru_maxrss 含 exec 之前那份 fork 自父进程（Ray worker，
约 90 MB）的内存，实测一个 /bin/true 也报出父进程的 RSS。

进程在 exec 之前就进入叶子（preexec_fn 往事先以 root 打开的 cgroup.procs 写 0）：
它 fork 出的子孙一出生就在里面，用户也改不了（cgroup.procs 属 root）。
本模块只用标准库，不依赖 Ray 与 FastAPI。
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("conductor.usage")

# 作业 cgroup 的名字前缀：清理遗留时只认它
PREFIX = "conductor-"
# 采样间隔（秒）：够抓住秒级的峰值，又不让每个作业多占可观的 CPU
SAMPLE_INTERVAL = 0.2
# 遗留的空 cgroup 多久以后才清理（秒）：刚建好、尚未放进进程的不能误删
STALE_AFTER = 60.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
_HZ = os.sysconf("SC_CLK_TCK")
_PROC = "/proc"


@dataclass(frozen=True)
class Usage:
    """一次测量的结果；None 为没测到。"""

    max_rss_bytes: int | None = None
    user_cpu_seconds: float | None = None
    system_cpu_seconds: float | None = None
    # 叶子里有进程被内存上限触发的 OOM 杀掉（只有 cgroup 能知道）
    oom_killed: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "max_rss_bytes": self.max_rss_bytes,
            "user_cpu_seconds": self.user_cpu_seconds,
            "system_cpu_seconds": self.system_cpu_seconds,
            "oom_killed": self.oom_killed,
        }

    @classmethod
    def from_dict(cls, data: object) -> Usage | None:
        """as_dict 的反面；内容不对时为 None（结果文件可能被改过）。"""
        if not isinstance(data, dict):
            return None
        rss, user, system = (
            data.get("max_rss_bytes"),
            data.get("user_cpu_seconds"),
            data.get("system_cpu_seconds"),
        )
        if rss is not None and not isinstance(rss, int):
            return None
        if not all(v is None or isinstance(v, int | float) for v in (user, system)):
            return None
        return cls(rss, user, system, bool(data.get("oom_killed")))


def cpu_of(ru: resource.struct_rusage | None) -> Usage:
    """wait4 的 rusage → 只含 CPU 时间的 Usage（ru_maxrss 不可信，见模块说明）。"""
    if ru is None:
        return Usage()
    return Usage(None, ru.ru_utime, ru.ru_stime)


def summarize(tasks: Iterable[Usage]) -> tuple[Usage, int | None]:
    """各任务的用量 → (作业步的用量, 平均峰值)：峰值取最大（sacct 的 MaxRSS）、另给平均
    （AveRSS），CPU 求和。"""
    items = list(tasks)
    peaks = [u.max_rss_bytes for u in items if u.max_rss_bytes is not None]
    users = [u.user_cpu_seconds for u in items if u.user_cpu_seconds is not None]
    systems = [u.system_cpu_seconds for u in items if u.system_cpu_seconds is not None]
    total = Usage(
        max(peaks) if peaks else None,
        sum(users) if users else None,
        sum(systems) if systems else None,
        any(u.oom_killed for u in items),
    )
    return total, (sum(peaks) // len(peaks) if peaks else None)


# ---------------------------------------------------------------------------
# 进程树采样（没有 cgroup 时）
# ---------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tids = os.listdir(f"{_PROC}/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"{_PROC}/{pid}/task/{tid}/children", "rb") as f:
                found += map(int, f.read().split())
        except (OSError, ValueError):
            continue
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"{_PROC}/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss(roots: Iterable[int]) -> int:
    """以 roots 为根的进程树此刻的 RSS 之和（逐层读 /proc/<pid>/task/*/children）。"""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss(pid)
        stack += _children(pid)
    return total


class TreeSampler:
    """后台线程按间隔对进程树的 RSS 求和，记下最大值。

    只看得见仍挂在树上的进程：两次 fork 逃到收养者名下的孤儿不算（所以是下界）。"""

    def __init__(self, interval: float = SAMPLE_INTERVAL) -> None:
        self.interval = interval
        self.peak = 0
        self._roots: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, pid: int) -> None:
        """把 pid 加为一个根；第一次调用时开始采样（立即先采一次）。"""
        self._roots.append(pid)
        self.sample()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="usage-sampler", daemon=True)
            self._thread.start()

    def sample(self) -> None:
        self.peak = max(self.peak, tree_rss(list(self._roots)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        """停止采样，返回峰值（字节）。"""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak


# ---------------------------------------------------------------------------
# cgroup
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mount:
    version: int  # 1 或 2
    # v1：控制器 → 本进程所在 cgroup 的目录；v2：{"unified": 目录}
    dirs: dict[str, Path]


def _mountinfo() -> list[tuple[str, str, str, str]]:
    """(挂载根, 挂载点, 文件系统类型, 超级块选项)。"""
    rows = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                a, b = left.split(), right.split()
                if len(a) >= 5 and len(b) >= 3:
                    rows.append((a[3], a[4], b[0], b[2]))
    except OSError:
        pass
    return rows


def _own_cgroups() -> dict[str, str]:
    """本进程的 cgroup 路径：v1 按控制器，v2 的键为 ""。"""
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    own[c] = path
    except (OSError, ValueError):
        pass
    return own


def _inside(mountpoint: str, root: str, path: str) -> Path:
    # 容器里挂载根可能不是 /：/proc/self/cgroup 的路径相对于层级的根，要去掉挂载根
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return Path(mountpoint + path)


def detect() -> _Mount | None:
    """本机可用的 cgroup：优先 v1 的 memory 层级（有 cpuacct 一并用），否则 v2；都没有为 None。"""
    own = _own_cgroups()
    mounts = _mountinfo()
    v1: dict[str, Path] = {}
    for root, point, fstype, opts in mounts:
        if fstype != "cgroup":
            continue
        for controller in ("memory", "cpuacct"):
            if controller in opts.split(",") and controller in own:
                v1[controller] = _inside(point, root, own[controller])
    if "memory" in v1:
        return _Mount(1, v1)
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            mine = _inside(point, root, own[""])
            top = Path(point)
            # v2 不许有进程的 cgroup 再把控制器分给子 cgroup：作业 cgroup 建在本进程所在 cgroup 的旁边
            base = mine.parent if mine != top else top
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "memory" in enabled or (base == top and _controllers(top, "memory")):
                return _Mount(2, {"unified": base})
    return None


def _controllers(path: Path, name: str) -> bool:
    try:
        return name in (path / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                found[key] = int(value)
    except OSError:
        pass
    return found


def _rmdir_tree(top: Path) -> bool:
    """自底向上删除 cgroup 目录（cgroup 的目录只能 rmdir，里面的文件不能删）。全删掉返回 True。"""
    ok = True
    try:
        subdirs = [p for p in top.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for sub in subdirs:
        ok = _rmdir_tree(sub) and ok
    try:
        top.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return ok


class Leaf:
    """作业 cgroup 下的一个叶子（批处理脚本或一个作业步任务）。"""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs
        self._fds: list[int] = []

    def joiner(self) -> Callable[[], None]:
        """给 Popen 的 preexec_fn：子进程 exec 之前把自己写进叶子。

        cgroup.procs 由父进程（root）先打开：内核按打开时的身份检查权限，子进程切换成作业用户
        之后照样写得进；fd 不可继承，exec 时自动关闭。子进程里只做一次 write，不碰锁。"""
        self.close_fds()
        self._fds = [
            os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.dirs.values()
        ]
        fds = tuple(self._fds)

        def join() -> None:
            for fd in fds:
                os.write(fd, b"0")

        return join

    def close_fds(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def measure(self) -> Usage:
        """叶子的峰值、CPU 与 OOM 计数（进程都结束之后读）。"""
        if self.version == 1:
            mem = self.dirs["memory"]
            peak = _read_int(mem / "memory.max_usage_in_bytes")
            oom = _read_keyed(mem / "memory.oom_control").get("oom_kill", 0)
            user = system = None
            if "cpuacct" in self.dirs:
                stat = _read_keyed(self.dirs["cpuacct"] / "cpuacct.stat")
                if "user" in stat:
                    user, system = stat["user"] / _HZ, stat.get("system", 0) / _HZ
            return Usage(peak, user, system, oom > 0)
        unified = self.dirs["unified"]
        peak = _read_int(unified / "memory.peak")
        oom = _read_keyed(unified / "memory.events").get("oom_kill", 0)
        cpu = _read_keyed(unified / "cpu.stat")
        user = cpu["user_usec"] / 1e6 if "user_usec" in cpu else None
        system = cpu["system_usec"] / 1e6 if "system_usec" in cpu else None
        return Usage(peak, user, system, oom > 0)


class JobCgroup:
    """一个作业在本节点的 cgroup：上限设在这一层，进程只放在其下的叶子里（v2 要求如此）。"""

    def __init__(self, version: int, dirs: dict[str, Path], limit_bytes: int) -> None:
        self.version = version
        self.dirs = dirs
        self.limit_bytes = limit_bytes

    @classmethod
    def create(cls, name: str, limit_bytes: int, mount: _Mount | None = None) -> JobCgroup | None:
        """建作业的 cgroup，limit_bytes 为 0 表示不设上限（只测量）。建不了返回 None（记一条日志）。"""
        mount = mount if mount is not None else detect()
        if mount is None:
            return None
        dirs = {c: base / f"{PREFIX}{name}" for c, base in mount.dirs.items()}
        made: list[Path] = []
        try:
            for base in mount.dirs.values():
                _sweep_stale(base)
            for d in dirs.values():
                d.mkdir()
                made.append(d)
            group = cls(mount.version, dirs, limit_bytes)
            group._set_limit()
        except OSError as exc:
            for d in made:
                _rmdir_tree(d)
            log.info("无法建作业的 cgroup（%s），改为采样测量、不限制内存：%s", name, exc)
            return None
        return group

    def _set_limit(self) -> None:
        if self.version == 1:
            mem = self.dirs["memory"]
            # 子 cgroup 必须计入父 cgroup（新内核恒为 1，老内核默认可能为 0）
            if _read_int(mem / "memory.use_hierarchy") == 0:
                _write(mem / "memory.use_hierarchy", "1")
            if self.limit_bytes:
                _write(mem / "memory.limit_in_bytes", str(self.limit_bytes))
                # 有交换分区记账时连交换一起限制：否则超出的部分被换出而不是 OOM
                memsw = mem / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    _write(memsw, str(self.limit_bytes))
            return
        unified = self.dirs["unified"]
        _write(unified / "cgroup.subtree_control", "+memory")
        if self.limit_bytes:
            _write(unified / "memory.max", str(self.limit_bytes))
            swap = unified / "memory.swap.max"
            if swap.exists():
                _write(swap, "0")

    def leaf(self, name: str) -> Leaf:
        """建一个叶子；名字在作业内唯一（batch、step0.task1…）。"""
        dirs = {c: d / name for c, d in self.dirs.items()}
        for d in dirs.values():
            d.mkdir()
        return Leaf(self.version, dirs)

    def remove(self, timeout: float = 2.0) -> bool:
        """删除整个作业 cgroup。刚被杀的进程要过一小会儿才离开 cgroup：最多等 timeout 秒。"""
        deadline = time.monotonic() + timeout
        while True:
            if all(_rmdir_tree(d) for d in self.dirs.values()):
                return True
            if time.monotonic() >= deadline:
                log.warning("作业 cgroup %s 删不掉（仍有进程？）", list(self.dirs.values()))
                return False
            time.sleep(0.01)


def _sweep_stale(base: Path) -> None:
    """删掉本层遗留的作业 cgroup（执行器被强制结束时来不及删）：只删空了 STALE_AFTER 秒以上的。

    里面还有进程的删不掉（rmdir 失败），正在运行的作业因而不受影响。"""
    now = time.time()
    try:
        entries = [p for p in base.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return
    for path in entries:
        try:
            if now - path.stat().st_mtime < STALE_AFTER:
                continue
        except OSError:
            continue
        _rmdir_tree(path)


def leftover_cgroups() -> list[Path]:
    """本进程所在层级里以 PREFIX 开头的 cgroup（测试与诊断用）。"""
    mount = detect()
    if mount is None:
        return []
    found = []
    for base in mount.dirs.values():
        with contextlib.suppress(OSError):
            found += [p for p in base.iterdir() if p.name.startswith(PREFIX)]
    return found


# ---------------------------------------------------------------------------
# 对外：一个作业（或一个远端作业步部分）的测量
# ---------------------------------------------------------------------------


class Probe:
    """测量一棵进程树（批处理脚本或一个任务）：有叶子用叶子，否则采样。

    用法：preexec = probe.preexec()；Popen(..., preexec_fn=preexec)；probe.started(pid)；
    进程与子孙都结束后 probe.finish(rusage)。"""

    def __init__(self, leaf: Leaf | None) -> None:
        self.leaf = leaf
        self.sampler = None if leaf is not None else TreeSampler()

    def preexec(self) -> Callable[[], None] | None:
        return self.leaf.joiner() if self.leaf is not None else None

    def started(self, pid: int) -> None:
        if self.leaf is not None:
            self.leaf.close_fds()
        elif self.sampler is not None:
            self.sampler.watch(pid)

    def stop_sampling(self) -> None:
        """首领已退出：之后的样本只会更小，先停下采样线程。"""
        if self.sampler is not None:
            self.sampler.stop()

    def finish(self, ru: resource.struct_rusage | None) -> Usage:
        """峰值取叶子（或采样），CPU 取叶子的统计（没有时取 wait4 的 rusage）。"""
        waited = cpu_of(ru)
        if self.leaf is not None:
            self.leaf.close_fds()
            measured = self.leaf.measure()
            return Usage(
                measured.max_rss_bytes,
                measured.user_cpu_seconds
                if measured.user_cpu_seconds is not None
                else waited.user_cpu_seconds,
                measured.system_cpu_seconds
                if measured.system_cpu_seconds is not None
                else waited.system_cpu_seconds,
                measured.oom_killed,
            )
        peak = self.sampler.stop() if self.sampler is not None else 0
        return Usage(peak or None, waited.user_cpu_seconds, waited.system_cpu_seconds)


class Meter:
    """一个作业（或远端节点上一个作业步部分）在本节点的测量与内存上限。

    能建 cgroup 时 enforced 为真（limit_bytes 非 0 时内核执行上限）；close() 删除 cgroup。"""

    def __init__(self, name: str, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.cgroup = JobCgroup.create(name, limit_bytes)
        self._lock = threading.Lock()

    @classmethod
    def for_job(cls, job_id: int, token: str, limit_bytes: int) -> Meter:
        return cls(f"job{job_id}-{token[:12]}", limit_bytes)

    @property
    def enforced(self) -> bool:
        return self.cgroup is not None and self.limit_bytes > 0

    def probe(self, name: str) -> Probe:
        """一棵进程树的测量；叶子建不了时退回采样（此时这棵树不受上限约束，记日志）。"""
        leaf = None
        if self.cgroup is not None:
            try:
                with self._lock:
                    leaf = self.cgroup.leaf(name)
            except OSError as exc:
                log.warning("作业 cgroup 的叶子 %s 建不了，改为采样：%s", name, exc)
        return Probe(leaf)

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()


def wait_rusage(
    proc: subprocess.Popen[bytes], timeout: float | None = None
) -> resource.struct_rusage | None:
    """回收 proc 并取它的 rusage（含它等待过的子孙），同时填好 proc.returncode。

    已被别处回收时返回 None。timeout 为 None 时一直等；超时返回 None（不回收）。"""
    if proc.returncode is not None:
        return None
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        except ChildProcessError:
            proc.poll()
            return None
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


class TaskUsage:
    """一个作业步在本节点上各任务的测量：probe(rank) 给出该任务的测量，结束后 results 为 rank → 用量。

    meter 为 None 时每个任务采样测量（不限制内存）。"""

    def __init__(self, meter: Meter | None, prefix: str) -> None:
        self.meter = meter
        self.prefix = prefix
        self.results: dict[int, Usage] = {}

    def probe(self, rank: int) -> Probe:
        if self.meter is None:
            return Probe(None)
        return self.meter.probe(f"{self.prefix}.task{rank}")
