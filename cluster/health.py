"""调度器的活性：主循环是否还活着、是否还在前进、节点列表是否还读得到。

纯函数（不碰 Ray）：调度器的 status()、它的看门狗线程、API 的 /health 与 conductor doctor
用同一套判断。actor 还能应答 status() 并不说明它在干活：主循环可能已经因异常退出，
或者卡在一条永远等不到的语句上。
"""

from __future__ import annotations

from dataclasses import dataclass

# 看门狗在停滞达到时限的这么多倍时让进程退出：先报告不健康，给人看见的时间，再自愈
WATCHDOG_FACTOR = 2.0


@dataclass(frozen=True)
class Liveness:
    """调度器此刻的活性快照（秒数都从调度器自己的单调时钟算）。"""

    ready: bool
    # 主循环已退出时为其异常（类型: 消息）；仍在运行为 None
    main_error: str | None
    # 距主循环上一次转回循环顶端（或启动）的秒数
    loop_idle: float
    # 读取节点列表：自上次成功以来连续超时的次数，以及正在进行的这次已读了多久（没在读为 0）
    gcs_timeouts: int = 0
    gcs_busy: float = 0.0


def problems(live: Liveness, stall_timeout: float, gcs_timeout: float) -> list[str]:
    """不健康的原因（中文短句）；健康时为空。"""
    found = []
    if live.main_error is not None:
        found.append(f"主循环已退出：{live.main_error}")
    elif live.loop_idle >= stall_timeout:
        found.append(f"主循环已 {live.loop_idle:.0f} 秒没有进展（时限 {stall_timeout:g} 秒）")
    if not live.ready and live.main_error is None:
        found.append("尚未完成启动对账")
    if live.gcs_timeouts or live.gcs_busy >= gcs_timeout:
        found.append(
            f"读取 Ray 节点列表卡住（连续超时 {live.gcs_timeouts} 次，"
            f"当前这次已等 {live.gcs_busy:.0f} 秒），调度用的是旧的节点列表"
        )
    return found


def fatal(live: Liveness, stall_timeout: float) -> str | None:
    """看门狗：返回应当让进程退出（由 Ray 重启）的理由；不必退出为 None。

    节点列表读不到不在其列：那是 GCS 的问题，重启调度器无济于事。"""
    if live.main_error is not None:
        return f"主循环已退出：{live.main_error}"
    limit = stall_timeout * WATCHDOG_FACTOR
    if live.loop_idle >= limit:
        return f"主循环已 {live.loop_idle:.0f} 秒没有进展（超过 {limit:g} 秒）"
    return None
