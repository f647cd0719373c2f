"""网页界面 /ui：纯 HTML + 原生 JavaScript，由 API 直接提供，无需构建步骤。

页面只调用公开的 REST 接口（/jobs、/jobs/query、/jobs/{id}/logs、/jobs/cancel、/dashboard、/health）。
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI) -> None:
    """挂载 /ui（页面）与 /ui/static（脚本与样式）；不出现在 OpenAPI 文档里。"""

    @app.get("/ui", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/ui/", include_in_schema=False)
    def index_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
