"""FastAPI 应用工厂。"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from api import docs, errors, openapi, ui
from api.auth import AuthGate, announce
from api.request_guard import BodyLimit
from api.routes import (
    control,
    dashboard,
    health,
    jobs,
    login,
    logs,
    metrics,
    nodes,
    partitions,
    submit,
)
from api.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    """用给定的运行时依赖构造应用（服务与测试共用）。"""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # 后台定期合并 /metrics 的作业计数（见 api/routes/metrics.py）
        task = asyncio.create_task(metrics.compact_periodically(runtime))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        lifespan=lifespan,
        title="Conductor",
        description="Ray 集群上的 Slurm 风格批处理调度器",
        version="0.1.0",
        # /docs、/redoc 由 api/docs.py 用本地静态文件提供（离线可用）
        docs_url=None,
        redoc_url=None,
    )
    announce(runtime.settings)  # 不安全的配置（非回环地址上关闭认证）在这里拒绝
    app.state.runtime = runtime
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    # 最后加入的中间件在最外层：先认证，再读请求体
    app.add_middleware(AuthGate, runtime=runtime)
    for module in (submit, jobs, dashboard, health, control, nodes, logs, partitions):
        app.include_router(module.router, responses=errors.ERROR_RESPONSES)
    app.include_router(metrics.router)
    app.include_router(
        login.router,
        responses={
            401: errors.ERROR_RESPONSES[401],
            422: errors.ERROR_RESPONSES[422],
            503: errors.ERROR_RESPONSES[503],
        },
    )
    ui.install(app)
    docs.install(app)
    openapi.install(app)
    return app
