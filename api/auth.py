"""API 认证：FastAPI 依赖，给出请求者（Principal）。

用法（新路由照此即可，别名在 api/deps.py）：

    from api.deps import JobId, PrincipalDep, RuntimeDep

    @router.get("/jobs/{job_id}/logs")
    def logs(job_id: JobId, principal: PrincipalDep, rt: RuntimeDep):
        job = load_visible_job(rt, principal, job_id)   # 别人的作业同样 404
        ...

只需认证、不关心是谁时：`APIRouter(dependencies=[Depends(current_principal)])`。
认证关闭（只监听回环地址）时依赖返回 OPEN_ACCESS（等同管理员）。

令牌在请求进入应用之前由 AuthGate（ASGI 中间件）校验：没有有效令牌的请求在服务读入请求体
之前就得到 401，不必为它读入、解析至多 16 MiB 的内容。PUBLIC 之外的路径都要令牌。
"""

from __future__ import annotations

import logging
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from api.lookup import load_job
from api.runtime import Runtime, get_runtime
from conductor.admission import service_is_root
from conductor.auth import OPEN_ACCESS, Principal, authenticate
from conductor.db import session_scope
from conductor.errors import ConductorError, Unauthorized
from conductor.models import Job
from conductor.settings import Settings

log = logging.getLogger("conductor.api")

# auto_error=False：缺少头时由我们返回中文的 401，而不是英文的 403
bearer = HTTPBearer(auto_error=False, description="`conductor token create` 创建的 API 令牌")


# 不需要令牌的路径（前缀）：健康检查、指标、网页与文档的静态内容、一次性登录码的兑换
PUBLIC = (
    "/health",
    "/metrics",
    "/ui",
    "/docs",
    "/docs-static",
    "/redoc",
    "/openapi.json",
    "/auth/login",
)
INVALID = "API 令牌无效或已被吊销"


def check_token(rt: Runtime, token: str | None) -> Principal:
    """校验 Bearer 令牌的明文；缺少或无效时 Unauthorized。"""
    if not token:
        raise Unauthorized()
    principal = authenticate(rt.engine, token)
    if principal is None:
        raise Unauthorized(INVALID)
    return principal


def _bearer(scope: Scope) -> str | None:
    """Authorization 头里的 Bearer 令牌（与 HTTPBearer 一致：方案名不分大小写）。"""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return (token.strip() or None) if scheme.lower() == "bearer" else None
    return None


def is_public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC)


class AuthGate:
    """认证开启时，在应用读取请求体之前校验令牌；通过后把请求者放进 scope["state"]。"""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.rt.settings.auth_enabled()
            or is_public(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        try:
            principal = await anyio.to_thread.run_sync(check_token, self.rt, _bearer(scope))
        except ConductorError as exc:  # 401，或数据库不可用时的 503
            await error_response(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def current_principal(
    request: Request,
    rt: Annotated[Runtime, Depends(get_runtime)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """请求者：AuthGate 已校验过令牌时直接取用；认证关闭时放行。"""
    if not rt.settings.auth_enabled():
        return OPEN_ACCESS
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        return principal
    return check_token(rt, credentials.credentials if credentials else None)


def load_visible_job(rt: Runtime, principal: Principal, ref: str) -> Job:
    """按引用（12 或 12_3）读取作业；不存在或属于别的账户时一律 404，不泄露作业是否存在。"""
    with session_scope(rt.engine) as session:
        return load_job(session, ref, principal)


def announce(settings: Settings) -> None:
    """启动时说明认证状态与作业以谁运行；不安全的组合直接拒绝启动。"""
    settings.check_security()
    if settings.auth_enabled():
        log.info(
            "API 认证已开启：每个请求须带有效的 Bearer 令牌（/health、/metrics 与静态页面除外）"
        )
    else:
        log.warning(
            "API 认证已关闭（CONDUCTOR_AUTH=off，只为不会带令牌的旧客户端保留）：监听 %s（仅本机），"
            "本机任何用户、任何作业都能以服务身份提交并执行作业",
            settings.host,
        )
    if not service_is_root():
        return
    if settings.allow_root_jobs:
        log.warning(
            "服务以 root 运行且 CONDUCTOR_ALLOW_ROOT_JOBS=true：未映射到 Unix 用户的账户的作业以 root 运行"
        )
    else:
        log.info(
            "服务以 root 运行：未映射到 Unix 用户的账户的作业在提交时被拒绝（403）；"
            "映射见 CONDUCTOR_ACCOUNT_USERS，明确允许以 root 运行设 CONDUCTOR_ALLOW_ROOT_JOBS=true"
        )
