"""ClusterClient.wake：请求线程不调用 Ray，唤醒线程把一串唤醒合并发送。"""

from __future__ import annotations

import threading

from cluster.client import ClusterClient
from conductor.settings import Settings
from harness.waiting import wait_for


class FakeMethod:
    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[str] = set()
        self.gate = threading.Event()

    def remote(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.calls += 1
        self.gate.wait(5)  # 第一次发送卡住：期间的唤醒应合并


class FakeScheduler:
    def __init__(self) -> None:
        self.wake = FakeMethod()


def test_wakes_are_sent_off_the_request_thread_and_coalesced() -> None:
    client = ClusterClient(Settings())
    fake = FakeScheduler()
    client._scheduler = fake  # type: ignore[assignment]
    client.wake()
    wait_for(lambda: fake.wake.calls == 1, 5, 0.01)
    for _ in range(100):
        client.wake()  # 第一次发送还没返回：这些只留下一个待发标志
    fake.wake.gate.set()
    wait_for(lambda: fake.wake.calls == 2, 5, 0.01)
    assert fake.wake.threads == {"scheduler-waker"}
    assert threading.current_thread().name not in fake.wake.threads
    client.wake()
    wait_for(lambda: fake.wake.calls == 3, 5, 0.01)  # 之后的唤醒照常送到
