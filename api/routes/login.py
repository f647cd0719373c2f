"""POST /auth/login：用 `conductor serve` 打印的一次性登录码换一个管理员令牌（网页登录用）。

serve 启动时打印 http://主机:端口/ui#login=cdl_…；网页读到地址栏里的登录码后调这个接口，把得到的令牌
存进浏览器的 localStorage，并从地址栏去掉登录码。登录码用过一次或过期（1 小时）即失效。
这个接口本身不需要令牌（见 api/auth.py 的 PUBLIC）。
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import RuntimeDep
from conductor.auth import redeem_login_code
from conductor.errors import Unauthorized

router = APIRouter()


class LoginRequest(BaseModel):
    """一次性登录码。"""

    code: str = Field(min_length=1, max_length=200, description="serve 启动时打印的一次性登录码")


class LoginResponse(BaseModel):
    """换得的管理员令牌。"""

    token: str = Field(description="API 令牌：之后以 Authorization: Bearer <令牌> 发送")


@router.post("/auth/login", response_model=LoginResponse)
async def login(req: LoginRequest, rt: RuntimeDep) -> LoginResponse:
    """用一次性登录码换一个管理员令牌（新增接口，网页登录用）；登录码用过或过期时 401。"""
    token = await asyncio.to_thread(redeem_login_code, rt.engine, req.code)
    if token is None:
        raise Unauthorized(
            "一次性登录码无效、已用过或已过期：重启 serve 或运行 conductor token login-url 得到新的登录地址"
        )
    return LoginResponse(token=token)
