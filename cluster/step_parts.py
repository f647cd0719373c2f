"""多节点作业步在其他节点上的那部分任务：一个 Ray 流式生成器任务，放在作业放置组的对应份额里。

它在所在节点上用 step_tasks 启动任务，把输出一块一块地 yield 回批处理节点上的步服务，
最后 yield 各任务的结局与用量。份额里的 CPU 已为作业预留，任务本身不再占 CPU（num_cpus=0）；
GPU 在份额里按作业步的需要申请，Ray 分到的编号即任务的 CUDA_VISIBLE_DEVICES。
能建 cgroup 时这部分任务放进它自己的作业 cgroup（上限为作业在该节点的内存），用完即删。
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.step_server import Results, with_gpus
from conductor.jobspec import JobSpec
from conductor.step_tasks import LocalTask, run_node_tasks
from conductor.steps import split_gpus
from conductor.usage import Meter, TaskUsage, Usage

# 取消后等本节点任务收尾的额外时间（在宽限期之外）
_SETTLE = 5.0


@ray.remote(num_cpus=0, max_retries=0)
def run_part(
    tasks: list[LocalTask],
    gpus_per_task: int,
    kill_on_bad_exit: bool,
    grace: float,
    cgroup_name: str = "",
    memory_limit: int = 0,
) -> Iterator[tuple[Any, ...]]:
    """运行本节点上的任务：yield ("o", rank, 流, 数据)……最后 ("x", 结局, 用量) 或 ("e", 错误)。

    被 ray.cancel 时（srun 取消、作业结束）先 SIGTERM、宽限后 SIGKILL 本节点的全部任务。
    cgroup_name 非空时建这部分任务的 cgroup（memory_limit 为上限，0 为不限）；用量为 rank → dict。"""
    ids = ray.get_gpu_ids()
    if ids:
        sets = split_gpus(ids, len(tasks), gpus_per_task) if gpus_per_task else [ids] * len(tasks)
        tasks = [with_gpus(t, s) for t, s in zip(tasks, sets, strict=True)]
    items: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    cancelled = threading.Event()

    def work() -> None:
        meter = Meter(cgroup_name, memory_limit) if cgroup_name else None
        tu = TaskUsage(meter, "part")
        try:
            results = run_node_tasks(
                tasks,
                lambda r, s, d: items.put(("o", r, s, d)),
                cancelled,
                kill_on_bad_exit,
                grace,
                tu,
            )
        except BaseException as exc:  # noqa: BLE001 - 任何错误都要让生成器结束
            items.put(("e", f"{type(exc).__name__}: {exc}"))
            return
        finally:
            if meter is not None:
                meter.close()
        items.put(("x", results, {r: u.as_dict() for r, u in tu.results.items()}))

    worker = threading.Thread(target=work, name="step-part", daemon=True)
    worker.start()
    try:
        while True:
            try:
                # 带超时地等：ray.cancel 的 KeyboardInterrupt 要能打断这里
                item = items.get(timeout=0.2)
            except queue.Empty:
                continue
            yield item
            if item[0] in ("x", "e"):
                return
    finally:
        cancelled.set()
        worker.join(grace + _SETTLE)


class RayParts:
    """步服务的远端执行器：在放置组的第 index 个份额里运行那个节点的任务，等它结束。"""

    def __init__(
        self, group: PlacementGroup, gpus_per_node: int, grace: float, spec: JobSpec | None = None
    ) -> None:
        self.group = group
        self.gpus_per_node = gpus_per_node
        self.grace = grace
        self.spec = spec
        self.calls = itertools.count(1)  # next() 在多个作业步线程里也不会重号

    def __call__(
        self,
        index: int,
        tasks: list[LocalTask],
        gpus_per_task: int,
        emit: Callable[[int, int, bytes], None],
        cancelled: threading.Event,
        kill_on_bad_exit: bool,
        usage: dict[int, Usage] | None = None,
    ) -> Results:
        # 没有 --gpus-per-task 的作业步同 Slurm 拿到作业在该节点上的全部 GPU
        gpus = len(tasks) * gpus_per_task if gpus_per_task else self.gpus_per_node
        name, limit = "", 0
        if self.spec is not None:
            # 同一节点上可能同时有这个作业的几个部分：名字各不相同
            name = f"job{self.spec.job_id}-{self.spec.token[:12]}-n{index}-{next(self.calls)}"
            limit = self.spec.memory_limit(index)
        parts = run_part.options(
            num_gpus=gpus,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=index
            ),
        ).remote(tasks, gpus_per_task, kill_on_bad_exit, self.grace, name, limit)
        finished = threading.Event()

        def cancel_on_request() -> None:
            while not finished.wait(0.2):
                if cancelled.is_set():
                    with contextlib.suppress(Exception):
                        ray.cancel(parts)
                    return

        threading.Thread(target=cancel_on_request, name="step-cancel", daemon=True).start()
        results: Results = {}
        try:
            for ref in parts:
                kind, *rest = ray.get(ref)
                if kind == "o":
                    emit(*rest)
                elif kind == "x":
                    results = {int(k): tuple(v) for k, v in rest[0].items()}  # type: ignore[misc]
                    if usage is not None:
                        for rank, data in rest[1].items():
                            measured = Usage.from_dict(data)
                            if measured is not None:
                                usage[int(rank)] = measured
                else:
                    raise RuntimeError(str(rest[0]))
        except ray.exceptions.TaskCancelledError:
            pass  # 被取消：没有结局的任务由步服务记为被 SIGKILL
        finally:
            finished.set()
        return results
