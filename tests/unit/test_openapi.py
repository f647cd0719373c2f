"""OpenAPI 文档完整：每个字段与参数都有中文说明，每个接口都有示例。"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.runtime import Runtime
from conductor.settings import Settings

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def client() -> TestClient:
    # 生成文档不访问数据库与集群：运行时依赖留空
    return TestClient(create_app(Runtime(Settings(), None, None)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def _walk_properties(name: str, schema: dict[str, Any]) -> list[tuple[str, dict]]:
    found = []
    for prop, sub in (schema.get("properties") or {}).items():
        found.append((f"{name}.{prop}", sub))
        found.extend(_walk_properties(f"{name}.{prop}", sub))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found.extend(_walk_properties(name, schema[key]))
    for key in ("anyOf", "allOf", "oneOf"):
        for sub in schema.get(key) or []:
            found.extend(_walk_properties(name, sub))
    return found


def test_every_property_has_a_chinese_description(spec: dict[str, Any]) -> None:
    missing = [
        path
        for name, schema in spec["components"]["schemas"].items()
        for path, prop in _walk_properties(name, schema)
        if not CJK.search(prop.get("description", ""))
    ]
    assert not missing, f"缺少中文说明的字段：{missing}"


def test_every_parameter_has_a_chinese_description(spec: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path} {param['name']}"
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        for param in op.get("parameters", [])
        if not CJK.search(param.get("description", ""))
    ]
    assert not missing, f"缺少中文说明的参数：{missing}"


def _has_example(content: dict[str, Any], spec: dict[str, Any]) -> bool:
    for media in content.values():
        if "example" in media or "examples" in media:
            return True
        schema = media.get("schema", {})
        ref = schema.get("$ref")
        if ref:
            schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        if "example" in schema or "examples" in schema:
            return True
    return False


def test_every_operation_has_examples(spec: dict[str, Any]) -> None:
    missing = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            label = f"{method.upper()} {path}"
            if not CJK.search(op.get("summary", "") + op.get("description", "")):
                missing.append(f"{label}：没有中文摘要或说明")
            body = op.get("requestBody", {}).get("content")
            if body is not None and not _has_example(body, spec):
                missing.append(f"{label}：请求体没有示例")
            ok = [r for code, r in op["responses"].items() if code.startswith("2")]
            if not ok or not all(_has_example(r.get("content", {}), spec) for r in ok):
                missing.append(f"{label}：成功响应没有示例")
    assert not missing, "；".join(missing)


def test_docs_pages_are_served_without_a_cdn(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower() and "/docs-static/" in html
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/ui").headers["content-type"].startswith("text/html")
    assert client.get("/ui/static/app.js").status_code == 200
