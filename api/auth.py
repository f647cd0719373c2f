"""API 认证：FastAPI 依赖，给出请求者（Principal）。

用法（新路由照此即可）：

    from api.auth import CurrentPrincipal

    @router.get("/jobs/{job_id}/logs")
    def logs(job_id: JobId, principal: CurrentPrincipal, rt: Runtime = Depends(get_runtime)):
        job = load_visible_job(rt, principal, job_id)   # 别人的作业同样 404
        ...

只需认证、不关心是谁时：`APIRouter(dependencies=[Depends(current_principal)])`。
认证关闭（只监听回环地址）时依赖返回 OPEN_ACCESS（等同管理员）。
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.lookup import load_job
from api.runtime import Runtime, get_runtime
from conductor.auth import OPEN_ACCESS, Principal, authenticate
from conductor.db import session_scope
from conductor.errors import Unauthorized
from conductor.models import Job
from conductor.settings import Settings

log = logging.getLogger("conductor.api")

# auto_error=False：缺少头时由我们返回中文的 401，而不是英文的 403
bearer = HTTPBearer(auto_error=False, description="`conductor token create` 创建的 API 令牌")


def current_principal(
    rt: Annotated[Runtime, Depends(get_runtime)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """校验 Bearer 令牌；认证关闭时放行。"""
    if not rt.settings.auth_enabled():
        return OPEN_ACCESS
    if credentials is None:
        raise Unauthorized()
    principal = authenticate(rt.engine, credentials.credentials)
    if principal is None:
        raise Unauthorized("API 令牌无效或已被吊销")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def load_visible_job(rt: Runtime, principal: Principal, ref: str) -> Job:
    """按引用（12 或 12_3）读取作业；不存在或属于别的账户时一律 404，不泄露作业是否存在。"""
    with session_scope(rt.engine) as session:
        return load_job(session, ref, principal)


def announce(settings: Settings) -> None:
    """启动时说明认证状态；不安全的组合直接拒绝启动。"""
    settings.check_security()
    if settings.auth_enabled():
        log.info("API 认证已开启：每个请求须带有效的 Bearer 令牌（/health 除外）")
    else:
        log.warning(
            "API 认证已关闭：监听 %s（仅本机），本机任何用户都能以服务身份提交并执行作业",
            settings.host,
        )
