"""代理手中的执行：启动作业的 Ray 任务，监视它直到得出结局，需要时终止它。

监视无论出什么错，作业都要有结局，否则它永远 RUNNING；结局交给 report（上报器）写入数据库。
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import NodeDiedError
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from cluster.executor import run_job
from cluster.names import agent_name
from cluster.spool import (
    cancel_marker,
    read_result,
    result_file,
    script_path,
    started_marker,
    touch_marker,
)
from conductor.exec_result import ExecResult, classify, node_lost_message
from conductor.jobspec import JobSpec
from conductor.proctree import kill_job_tree_async
from conductor.states import JobState
from conductor.store.transitions import Outcome
from conductor.timefmt import format_limit
from conductor.usage import Usage

log = logging.getLogger("conductor.agent")

# Ray 节点自带的节点 id 标签：放置组的每一份用它钉在认领时选定的节点上
NODE_ID_LABEL = "ray.io/node-id"
# 多少秒看一次放置组是否还完整；结束时等其他节点清理残留进程最多多久
GANG_POLL = 1.0
REAP_TIMEOUT = 30.0

# 监视得出的结局：(状态, 退出码, 说明)
Verdict = tuple[JobState, str | None, str | None]


@dataclass
class Run:
    """代理手中一个作业的执行。"""

    spec: JobSpec
    ref: ray.ObjectRef
    stopping: bool = False
    # 服务关闭时代理主动终止的作业以 NODE_FAIL 结束，并写明原因
    stop_reason: str | None = None
    # 派发时刻（事件循环时钟）：代理的期限从这里算起
    launched: float = 0.0
    # 多节点作业的放置组，及找其他节点代理所用的命名空间
    gang: PlacementGroup | None = None
    namespace: str | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    # 执行器测得的批处理步用量（拿到 ExecResult 时记下，随结局上报）
    usage: Usage | None = None

    @property
    def finished(self) -> bool:
        return self.watcher is not None and self.watcher.done()


def start_run(
    spec: JobSpec,
    node_id: str,
    launch_timeout: float,
    report: Callable[[Outcome], None],
    agent: ray.actor.ActorHandle | None = None,
    namespace: str | None = None,
) -> Run:
    """在本节点启动作业的任务（硬绑定 node_id），并开始监视它。

    agent 为本节点代理自己（作业步记录经它入库）；namespace 用来找分配里其他节点的代理。
    多节点作业先为整个分配建一个放置组（每节点一份，各绑定到认领时选定的节点），批处理任务
    在第 0 份里运行：全部节点同时就位才开始，任何一个节点失去即整个作业 NODE_FAIL。"""
    gang = _gang(spec) if spec.multi_node else None
    if gang is not None:
        strategy: Any = PlacementGroupSchedulingStrategy(gang, placement_group_bundle_index=0)
        # CPU、内存、通用资源已由放置组为作业预留；GPU 在份额里申请，Ray 才会给出具体编号
        resources: dict[str, Any] = {"num_cpus": 0, "num_gpus": spec.gpus}
    else:
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        # 资源向量原样交给 Ray：GPU 由 Ray 分配具体编号，通用资源按节点声明的自定义资源预留
        resources = {
            "num_cpus": spec.cpus,
            "num_gpus": spec.gpus,
            "memory": (spec.node_memory if spec.whole_node_memory else spec.memory_bytes) or None,
            "resources": dict(spec.gres),
        }
    ref = run_job.options(
        **resources, name=f"job-{spec.job_id}:{spec.name}", scheduling_strategy=strategy
    ).remote(spec, agent, namespace)
    loop = asyncio.get_running_loop()
    run = Run(spec, ref, launched=loop.time(), gang=gang, namespace=namespace)
    run.watcher = loop.create_task(_watch(run, launch_timeout, report))
    return run


def _gang(spec: JobSpec) -> PlacementGroup:
    """整个分配的放置组：每个节点一份（CPU、内存、GPU、通用资源为该节点上归作业的量），
    用节点 id 标签钉在认领时选定的节点上；STRICT_SPREAD 保证各份在不同节点。"""
    bundles = []
    for member in spec.allocation:
        bundle = {"CPU": float(member.cpus), **{k: float(v) for k, v in spec.gres.items()}}
        if spec.gpus:
            bundle["GPU"] = float(spec.gpus)
        if member.memory:
            bundle["memory"] = float(member.memory)
        bundles.append(bundle)
    return placement_group(
        bundles,
        strategy="STRICT_SPREAD",
        name=f"conductor-job-{spec.job_id}-{spec.token[:8]}",
        bundle_label_selector=[{NODE_ID_LABEL: m.node_id} for m in spec.allocation],
    )


async def stop_run(run: Run, grace: float) -> None:
    """终止一个执行直到它的任务结束。

    任务可能还在 Ray 的队列里、尚未启动脚本：先放取消标记让它不再启动，
    再反复按标记清理进程树，覆盖“检查标记之后、启动脚本之前”的窄窗口。
    """
    run.stopping = True
    marker = cancel_marker(run.spec.token)
    marker.parent.mkdir(parents=True, exist_ok=True)
    touch_marker(marker)
    while not run.finished:
        await kill_job_tree_async(run.spec.token, grace=grace)
        if run.watcher is not None:
            await asyncio.wait([run.watcher], timeout=0.2)


async def _watch(run: Run, launch_timeout: float, report: Callable[[Outcome], None]) -> None:
    """监视一个执行直到得出结局。这里无论出什么错，作业都要有结局，否则它永远 RUNNING。"""
    spec = run.spec
    verdict: Verdict = (JobState.FAILED, None, "节点代理在作业结束前停止了监视")
    try:
        if run.gang is None:
            verdict = await _supervise(run, launch_timeout)
        else:
            verdict = await _supervise_gang(run, launch_timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - 监视本身的任何错误（含 classify 的错误）
        log.exception("监视作业 %s 时出错，按失败记录并清理进程树", spec.job_id)
        with contextlib.suppress(Exception):
            await kill_job_tree_async(spec.token, grace=0)
        verdict = (
            JobState.FAILED,
            None,
            f"节点代理监视作业时出错（{type(exc).__name__}：{_last_line(exc)}），作业已被终止",
        )
    finally:
        report(_conclude(run, *verdict))


async def _supervise(run: Run, budget: float) -> Verdict:
    """等执行结束并得出结局。时限要到脚本启动后才开始计时，而启动前的步骤（Ray 排队、
    切换用户、进入工作目录、打开日志文件）可能永远卡住：代理另设期限——启动预算内
    脚本必须启动；有时限的作业还须在 启动预算 + 时限 + KillWait 内结束。超过就强制结束。"""
    spec = run.spec
    loop = asyncio.get_running_loop()
    done = asyncio.wrap_future(
        run.ref.future()
    )  # as_future() 已弃用，且每个作业都往日志里打一行警告
    if not await _wait(done, run.launched + budget - loop.time()):
        if not started_marker(spec.token).exists():
            return await _abandon(
                run,
                JobState.FAILED,
                f"作业在 {budget:g} 秒内没有启动（卡在启动前：Ray 排队、切换用户、进入工作目录"
                "或打开日志文件），节点代理已强制结束它（CONDUCTOR_LAUNCH_TIMEOUT）",
            )
        limit = spec.time_limit_seconds
        if limit is not None:
            left = run.launched + budget + limit + spec.kill_wait - loop.time()
            if not await _wait(done, left):
                return await _abandon(
                    run,
                    JobState.TIMEOUT,
                    f"超过时间限制（{format_limit(limit)}），执行器在宽限期后仍未结束作业，"
                    "节点代理已强制终止它",
                )
        await asyncio.wait([done])
    try:
        result = done.result()
    except Exception as exc:  # noqa: BLE001 - 执行进程死亡的各种 Ray 异常一并处理
        # 执行器所在的 worker 进程（或整个 raylet）死了：代理与作业在同一台机器上，
        # 脚本的子孙进程成了孤儿，由这里按标记清理
        await kill_job_tree_async(spec.token, grace=0)
        kept = await asyncio.to_thread(read_result, result_file(spec.token))
        if kept is not None and kept[1] == spec.token:
            # 执行器写下结果之后、返回之前死了：结果是真实的
            return _classify(kept[3], run)
        if isinstance(exc, NodeDiedError):
            return JobState.NODE_FAIL, None, node_lost_message(spec.node_name)
        return (
            JobState.FAILED,
            None,
            f"执行作业的进程意外退出（{type(exc).__name__}）：{_last_line(exc)}",
        )
    return _classify(result, run)


async def _supervise_gang(run: Run, budget: float) -> Verdict:
    """多节点作业：监视批处理任务的同时盯着放置组；分配里有节点失去就判 NODE_FAIL。

    无论哪种结局，最后都删除放置组（Ray 随之结束其中的任务、释放各节点的份额），再让其他
    节点的代理按令牌清理作业留下的进程：资源只释放一次，任何节点上都不留作业的进程。"""
    supervise = asyncio.ensure_future(_supervise(run, budget))
    lost = asyncio.ensure_future(_member_lost(run))
    try:
        await asyncio.wait([supervise, lost], return_when=asyncio.FIRST_COMPLETED)
        if supervise.done():
            return supervise.result()
        supervise.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervise
        return await _abandon(run, JobState.NODE_FAIL, lost.result())
    finally:
        lost.cancel()
        await _release_gang(run)


async def _member_lost(run: Run) -> str:
    """等到放置组因节点失去而不再完整，返回说明（哪个节点）。"""
    assert run.gang is not None
    group_id = run.gang.id.hex()
    while True:
        await asyncio.sleep(GANG_POLL)
        try:
            table = await asyncio.to_thread(placement_group_table, run.gang)
        except Exception as exc:  # noqa: BLE001 - GCS 暂时不可达：下次再看
            log.warning("作业 %s：读取放置组 %s 失败：%s", run.spec.job_id, group_id, exc)
            continue
        if table.get("state") in ("RESCHEDULING", "REMOVED"):
            alive = await asyncio.to_thread(_alive_nodes)
            dead = [m.node_name for m in run.spec.allocation if m.node_id not in alive]
            return node_lost_message(",".join(dead) or run.spec.node_name)


def _alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


async def _release_gang(run: Run) -> None:
    """删除放置组，并让分配里其他节点的代理按令牌杀掉作业的残留进程（有上限地等）。"""
    spec = run.spec
    if run.gang is not None:
        try:
            await asyncio.to_thread(remove_placement_group, run.gang)
        except Exception as exc:  # noqa: BLE001 - 放置组可能已随节点消失
            log.warning("作业 %s：删除放置组失败：%s", spec.job_id, exc)
    calls = []
    for member in spec.allocation[1:]:
        try:
            peer = ray.get_actor(agent_name(member.node_id), namespace=run.namespace)
        except ValueError:
            continue  # 节点或其代理已不在：进程随节点而去，或由该节点新代理上任时清理
        calls.append(peer.reap.remote(spec.token))
    if calls:
        done, _ = await asyncio.wait(
            [asyncio.wrap_future(c.future()) for c in calls], timeout=REAP_TIMEOUT
        )
        for fut in done:
            if fut.exception() is not None:
                log.warning("作业 %s：其他节点清理残留进程失败：%s", spec.job_id, fut.exception())


async def _abandon(run: Run, state: JobState, reason: str) -> Verdict:
    """过了期限：强制结束任务（SIGKILL 执行器所在的 worker），按标记杀掉整棵进程树。"""
    spec = run.spec
    log.warning("作业 %s：%s", spec.job_id, reason)
    try:
        ray.cancel(run.ref, force=True)
    except Exception as exc:  # noqa: BLE001 - 任务可能已结束；进程树照样清理
        log.warning("强制取消作业 %s 的任务失败：%s", spec.job_id, exc)
    # 之后任务若还返回结果，也只是被我们杀掉的结果（如 SIGKILL），不再采用
    await kill_job_tree_async(spec.token, grace=0)
    return state, None, reason


def _conclude(run: Run, state: JobState, code: str | None, msg: str | None) -> Outcome:
    """定下要上报的结局（不抛出：清理标记失败也不能丢掉结局）。"""
    spec = run.spec
    if run.stop_reason is not None and state is not JobState.COMPLETED:
        state, msg = JobState.NODE_FAIL, run.stop_reason
    # 执行器被强制结束时来不及删除它的脚本副本
    for path in (cancel_marker(spec.token), started_marker(spec.token), script_path(spec)):
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("作业 %s 的临时文件 %s 无法删除：%s", spec.job_id, path, exc)
    return Outcome(spec.job_id, state, code, msg, spec.token, run.usage)


async def _wait(fut: asyncio.Future[Any], timeout: float) -> bool:
    """等 fut 完成，最多 timeout 秒（超时不取消它）；返回它是否已完成。"""
    if not fut.done() and timeout > 0:
        await asyncio.wait([fut], timeout=timeout)
    return fut.done()


def _classify(result: object, run: Run) -> Verdict:
    if not isinstance(result, ExecResult):
        # 例如 worker 被强制结束时 ray.get 可能返回 -9 而不是抛出异常（DESIGN.md）
        return JobState.FAILED, None, f"执行器返回了意外的结果（{type(result).__name__}）"
    run.usage = result.usage
    return classify(result, run.spec.time_limit_seconds)


def _last_line(exc: BaseException) -> str:
    """错误文本的最后一行：Ray 的异常文本前面是回溯，最后一行才是错误本身。"""
    lines = str(exc).strip().splitlines()
    return lines[-1][:500] if lines else ""
