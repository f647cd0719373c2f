"""错误到 HTTP 状态码的唯一映射；路由保持简洁。"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from conductor.admission import PayloadTooLarge
from conductor.errors import (
    ClusterUnavailable,
    ConductorError,
    DatabaseUnavailable,
    Forbidden,
    InvalidJobRequest,
    JobNotFound,
    JobNotPending,
    JobStateConflict,
    LogUnreadable,
    NodeNotDrained,
    NodeNotFound,
    SchedulerUnavailable,
    TransactionConflict,
    Unauthorized,
)

STATUS: dict[type[ConductorError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    PayloadTooLarge: 413,
    JobNotFound: 404,
    NodeNotFound: 404,
    NodeNotDrained: 409,
    JobNotPending: 409,
    JobStateConflict: 409,
    LogUnreadable: 409,
    InvalidJobRequest: 422,
    DatabaseUnavailable: 503,
    SchedulerUnavailable: 503,
    TransactionConflict: 503,
    ClusterUnavailable: 503,
}


class ErrorItem(BaseModel):
    """一个出错的字段。"""

    field: str = Field(description="出错字段的路径，如 job.time_limit")
    msg: str = Field(description="该字段错在哪里（中文）")


class ErrorResponse(BaseModel):
    """所有错误响应的形状：detail 是给人看的中文说明，errors 指明出错的字段。"""

    detail: str = Field(description="给人看的中文说明，指明问题所在")
    errors: list[ErrorItem] | None = Field(None, description="请求无效时：逐个出错的字段")


# 写进 OpenAPI 文档（客户端与模糊测试据此校验错误响应）
ERROR_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorResponse, "description": "缺少或无效的 API 令牌"},
    403: {"model": ErrorResponse, "description": "令牌无权执行该操作（如以别的账户提交）"},
    404: {"model": ErrorResponse, "description": "作业不存在（或属于别的账户），或节点不存在"},
    409: {
        "model": ErrorResponse,
        "description": "作业或节点的状态不允许该操作（如重新排队排队中的作业、恢复没在排空的节点）",
    },
    413: {"model": ErrorResponse, "description": "请求体或脚本过大"},
    422: {"model": ErrorResponse, "description": "请求无效，errors 指明字段"},
    503: {"model": ErrorResponse, "description": "PostgreSQL、Ray 或调度器不可用"},
}


def _field(loc: tuple) -> str:
    # 去掉 "body" 前缀，留下 job.time_limit 这样的字段路径
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


# pydantic 内置错误的中文说明（按错误类型）；其余沿用原文
MESSAGES = {
    "missing": "缺少必填字段",
    "string_too_short": "长度不能小于 {min_length}",
    "string_too_long": "长度不能超过 {max_length}",
    "string_type": "应为字符串",
    "int_type": "应为整数",
    "bool_type": "应为布尔值",
    "bool_parsing": "应为布尔值",
    "dict_type": "应为对象",
    "model_type": "应为对象",
    "greater_than_equal": "不能小于 {ge}",
    "less_than_equal": "不能大于 {le}",
    "json_invalid": "请求体不是合法的 JSON",
}


def _message(err: dict) -> str:
    template = MESSAGES.get(str(err.get("type")))
    if template is not None:
        try:
            return template.format(**(err.get("ctx") or {}))
        except (KeyError, IndexError):
            return template
    return str(err.get("msg", "")).removeprefix("Value error, ")


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _field(tuple(e.get("loc", ()))), "msg": _message(e)} for e in exc.errors()]
    detail = "；".join(f"{e['field']}：{e['msg']}" for e in errors)
    return JSONResponse(
        status_code=422, content={"detail": f"请求无效：{detail}", "errors": errors}
    )


def error_response(exc: ConductorError) -> JSONResponse:
    """ConductorError 的 HTTP 响应（异常处理器与请求进入应用之前的中间件共用）。"""
    # 取最具体的类：PayloadTooLarge 是 InvalidJobRequest 的子类，应得 413 而非 422
    status = next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 500)
    content: dict = {"detail": exc.message}
    if isinstance(exc, InvalidJobRequest):
        content["errors"] = [{"field": exc.field, "msg": exc.message}]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=content, headers=headers)


async def conductor_error(request: Request, exc: ConductorError) -> JSONResponse:
    return error_response(exc)


# FastAPI 在请求体无法解码（非 UTF-8 等）时抛出的英文 400
BODY_PARSE_ERROR = "There was an error parsing the body"
HTTP_MESSAGES = {404: "接口不存在", 405: "接口不支持该请求方法"}


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """框架自身的 HTTP 错误：请求体无法解析按 422 报告，其余换成中文说明。"""
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
        msg = "请求体不是合法的 JSON（须为 UTF-8 编码）"
        return JSONResponse(
            status_code=422,
            content={"detail": f"请求无效：{msg}", "errors": [{"field": "body", "msg": msg}]},
        )
    detail = HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        status_code=exc.status_code, content={"detail": detail}, headers=exc.headers
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(ConductorError, conductor_error)  # type: ignore[arg-type]
