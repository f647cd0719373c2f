"""/docs 与 /redoc 使用本地的 Swagger UI / ReDoc 文件，而不是 FastAPI 默认的 CDN。

集群常在内网或离线环境：CDN 不可达时默认的 /docs 是一张白纸。
静态文件来自 fastapi-offline 包（只用它附带的文件，不用它的 FastAPI 子类）。
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
PREFIX = "/docs-static"


def install(app: FastAPI) -> None:
    """应用须以 docs_url=None、redoc_url=None 创建，由这里提供同名页面。"""

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API 文档",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API 文档",
            redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        )

    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-static")
