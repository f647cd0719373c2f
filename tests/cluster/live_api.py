"""真实的 HTTP 服务：uvicorn 在测试进程的线程里运行 API，连本会话的 PostgreSQL 与 Ray 集群。

CLI 与浏览器测试经它访问服务，走真实的 HTTP（含流式响应），与 `conductor serve` 的 API 进程相同。
"""

from __future__ import annotations

import threading

import uvicorn

from api.app import create_app
from api.runtime import Runtime
from cluster.client import ClusterClient
from conductor.settings import Settings
from harness.serve import free_port
from harness.waiting import wait_for
from tests.cluster.conftest import Service


class LiveApi:
    def __init__(self, service: Service, settings: Settings | None = None) -> None:
        """settings 默认用服务的配置（测试服务关闭认证）；测认证时传开启认证的配置。"""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = settings or service.settings
        app = create_app(Runtime(settings, service.engine, ClusterClient(settings)))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-api", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30, what="uvicorn 启动")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
