"""cluster.health 的单元测试：什么时候报告不健康，什么时候看门狗让调度器退出。"""

from __future__ import annotations

from cluster.health import WATCHDOG_FACTOR, Liveness, fatal, problems

STALL = 120.0
GCS = 10.0


def live(**overrides: object) -> Liveness:
    values: dict[str, object] = {"ready": True, "main_error": None, "loop_idle": 1.0}
    return Liveness(**(values | overrides))  # type: ignore[arg-type]


def test_healthy() -> None:
    assert problems(live(), STALL, GCS) == []
    assert fatal(live(), STALL) is None


def test_main_loop_died() -> None:
    """主循环退出：报告原因，看门狗立刻退出（不等停滞时限）。"""
    dead = live(main_error="IntegrityError: boom", loop_idle=0.5, ready=False)
    assert problems(dead, STALL, GCS) == ["主循环已退出：IntegrityError: boom"]
    assert fatal(dead, STALL) == "主循环已退出：IntegrityError: boom"


def test_stall_reported_before_the_watchdog_exits() -> None:
    """停滞达到时限即报告不健康；达到时限的两倍看门狗才退出：先让人看见，再自愈。"""
    assert problems(live(loop_idle=STALL - 1), STALL, GCS) == []
    reported = live(loop_idle=STALL)
    assert problems(reported, STALL, GCS) == ["主循环已 120 秒没有进展（时限 120 秒）"]
    assert fatal(reported, STALL) is None
    assert fatal(live(loop_idle=STALL * WATCHDOG_FACTOR - 1), STALL) is None
    assert fatal(live(loop_idle=STALL * WATCHDOG_FACTOR), STALL) == (
        "主循环已 240 秒没有进展（超过 240 秒）"
    )


def test_not_ready_is_unhealthy_but_not_fatal() -> None:
    starting = live(ready=False)
    assert problems(starting, STALL, GCS) == ["尚未完成启动对账"]
    assert fatal(starting, STALL) is None


def test_gcs_reader_stuck_is_unhealthy_but_not_fatal() -> None:
    """节点列表读不到：报告不健康（调度用的是旧节点列表），但重启调度器无济于事，不退出。"""
    for stuck in (live(gcs_timeouts=2, gcs_busy=3.0), live(gcs_busy=GCS)):
        found = problems(stuck, STALL, GCS)
        assert len(found) == 1 and "读取 Ray 节点列表卡住" in found[0], found
        assert fatal(stuck, STALL) is None
    assert problems(live(gcs_busy=GCS - 1), STALL, GCS) == []
