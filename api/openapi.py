"""OpenAPI 文档的补充：各接口的中文摘要与示例，以及与实际相符的错误响应格式。

字段说明写在模型的 Field(description=...) 上；这里集中放示例，
一个测试（tests/unit/test_openapi.py）检查每个字段都有中文说明、每个接口都有示例。
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

JSON = "application/json"

SUBMIT_EXAMPLE = {
    "job": {
        "account": "my_project",
        "environment": {"OMP_NUM_THREADS": "8"},
        "current_working_directory": "/data/run001",
        "standard_output": "hello-%j.out",
        "standard_error": "hello-%j.err",
        "ntasks_per_node": 1,
        "cpus_per_task": 8,
        "memory_per_node": "32G",
        "name": "hello_world",
        "time_limit": "120",
        "partition": "default",
        "exclusive": False,
    },
    "script": '#!/bin/bash\necho "Hello World"\n',
}

# 新增的资源字段（议题 16）：一个 GPU 训练作业，相当于 sbatch 的
# --gres=gpu:a100:1 --cpus-per-gpu=8 --mem-per-gpu=32G -C 'a100|h100' -x node-03 -o %x_%N_%j.out
GPU_SUBMIT_EXAMPLE = {
    "job": {
        "account": "my_project",
        "current_working_directory": "/data/train",
        "standard_output": "%x_%N_%j.out",
        "standard_error": "%x_%N_%j.out",
        "name": "train",
        "time_limit": "1:00:00",
        "partition": "default",
        "tres_per_node": "gres/gpu:a100:1",
        "cpus_per_tres": "gres/gpu:8",
        "memory_per_tres": "gres/gpu:32G",
        "constraints": "a100|h100",
        "excluded_nodes": ["node-03"],
    },
    "script": "#!/bin/bash\npython train.py\n",
}

SUMMARY = {
    "job_id": 42,
    "name": "hello_world",
    "account": "my_project",
    "state": "RUNNING",
    "allocated_cpus": 8,
    "submit_time": "2025-11-07T10:20:30Z",
    "start_time": "2025-11-07T10:25:40Z",
}

QUERY_EXAMPLE = {
    "job_id": "42",
    "state": "COMPLETED",
    "error_msg": None,
    "time": {
        "submit_time": "2025-11-07T10:20:30Z",
        "start_time": "2025-11-07T10:25:40Z",
        "end_time": "2025-11-07T11:05:00Z",
        "eligible_time": "2025-11-07T10:20:30Z",
        "elapsed_time": "0-00:39:20",
        "limit_time": "2:00:00",
    },
    "job_log": {"stdout": "Hello World\n", "stderr": ""},
    "detail": {
        "job_name": "hello_world",
        "user": "my_project",
        "partition": "default",
        "allocated_cpus": 8,
        "allocated_nodes": 1,
        "node_list": "node-01",
        "exit_code": "0:0",
        "work_dir": "/data/run001",
        "data_source": "API",
        "account": "my_project",
        "tres_req_str": "cpu=8,mem=32G,node=1",
        "tres_alloc_str": "cpu=8,mem=32G,node=1",
    },
}

# (方法, 路径) → 中文摘要、请求示例、成功响应示例
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/jobs/submit"): {
        "summary": "提交作业",
        "request": SUBMIT_EXAMPLE,
        "response": {"job_id": "42"},
    },
    ("post", "/jobs/submit/batch"): {
        "summary": "批量提交作业（一个事务）",
        "request": {"jobs": [SUBMIT_EXAMPLE, GPU_SUBMIT_EXAMPLE]},
        "response": {"job_ids": ["42", "43"]},
    },
    ("get", "/jobs/query/{job_id}"): {"summary": "查询作业", "response": QUERY_EXAMPLE},
    ("post", "/jobs/cancel/{job_id}"): {
        "summary": "取消作业（幂等）",
        "response": {"msg": "作业 42 已取消（原状态 RUNNING）"},
    },
    ("post", "/jobs/{job_id}/hold"): {
        "summary": "挂起排队中的作业（新增）",
        "response": {"msg": "作业 42：挂起了 1 个排队中的作业"},
    },
    ("post", "/jobs/{job_id}/release"): {
        "summary": "放行被挂起的作业（新增）",
        "response": {"msg": "作业 42：放行了 1 个排队中的作业"},
    },
    ("post", "/jobs/{job_id}/requeue"): {
        "summary": "重新排队运行中或已结束的作业（新增，scontrol requeue）",
        "response": {"msg": "作业 42 已重新排队（原状态 RUNNING，第 1 次重启）"},
    },
    ("post", "/jobs/{job_id}/signal"): {
        "summary": "给运行中的作业发信号而不取消它（新增，scancel --signal）",
        "request": {"signal": "USR1", "batch": False, "full": False},
        "response": {"msg": "作业 42：信号 USR1 已发给作业步的任务（2 个进程）"},
    },
    ("patch", "/jobs/{job_id}"): {
        "summary": "修改排队中作业的优先级或时限（新增）",
        "request": {"priority": 100, "time_limit": "2:00:00"},
        "response": {"msg": "作业 42：已修改 1 个排队中的作业（优先级 100，时限 2:00:00）"},
    },
    ("post", "/nodes/{node_name}/drain"): {
        "summary": "排空节点（新增，仅管理员；scontrol update NodeName=… State=DRAIN）",
        "request": {"reason": "更换内存"},
        "response": {"msg": "节点 node-01 已排空：不再接新作业，运行中的作业照常跑完"},
    },
    ("post", "/nodes/{node_name}/resume"): {
        "summary": "恢复排空的节点（新增，仅管理员；scontrol update NodeName=… State=RESUME）",
        "response": {"msg": "节点 node-01 已恢复，重新接作业"},
    },
    ("get", "/jobs"): {
        "summary": "作业列表（过滤、分页）",
        "response": {
            "jobs": [
                {
                    **SUMMARY,
                    "partition": "default",
                    "node_list": "node-01",
                    "end_time": None,
                    "elapsed_time": "0-00:39:20",
                    "exit_code": None,
                }
            ],
            "next_cursor": "42",
        },
    },
    ("get", "/dashboard"): {
        "summary": "集群与作业总览",
        "response": {
            "job_stats": {
                "total": 10,
                "running": 1,
                "pending": 2,
                "completed": 6,
                "failed": 1,
                "cancelled": 0,
                "timeout": 0,
                "node_fail": 0,
            },
            "resource_stats": {
                "total_cpus": 16,
                "allocated_cpus": 8,
                "available_cpus": 8,
                "utilization_rate": 0.5,
                "total_gpus": 4,
                "allocated_gpus": 1,
                "available_gpus": 3,
                "gres": {"nvme": {"total": 1, "allocated": 0, "available": 1}},
            },
            "node_info": [
                {
                    "node_name": "node-01",
                    "partition": "default",
                    "total_cpus": 16,
                    "allocated_cpus": 8,
                    "available_cpus": 8,
                    "available": True,
                    "utilization_rate": 0.5,
                    "node_id": "4f1c…",
                    "total_gpus": 4,
                    "allocated_gpus": 1,
                    "available_gpus": 3,
                    "gres": {"nvme": {"total": 1, "allocated": 0, "available": 1}},
                    "features": ["a100", "ib"],
                    "state": "draining",
                    "drain_reason": "更换内存",
                    "drained_by": "root",
                    "drain_since": "2026-12-06T07:10:00Z",
                }
            ],
            "running_jobs": [SUMMARY],
            "pending_jobs": [],
        },
    },
    ("post", "/auth/login"): {
        "summary": "用一次性登录码换管理员令牌（网页登录，新增）",
        "request": {"code": "cdl_3q2Zr…"},
        "response": {"token": "cdt_Vd8kQ…"},
    },
    ("get", "/health"): {
        "summary": "健康检查",
        "response": {
            "status": "healthy",
            "components": {
                "postgres": {"status": "up"},
                "ray": {"status": "up", "alive_nodes": 1},
                "scheduler": {"status": "up", "ready": True, "epoch": 3},
                "agents": {
                    "status": "up",
                    "nodes": {
                        "4f1c…": {
                            "ok": True,
                            "pending": 0,
                            "failures": 0,
                            "error_kind": None,
                            "since": None,
                        }
                    },
                },
            },
            "dashboard_url": "http://127.0.0.1:8265",
        },
        "extra": {
            "503": {
                "description": "有组件不可用（detail 指明是哪一个）",
                "content": {
                    JSON: {
                        "example": {
                            "status": "unhealthy",
                            "components": {"postgres": {"status": "down", "error": "…"}},
                            "dashboard_url": None,
                            "detail": "不可用的组件：postgres",
                        }
                    }
                },
            }
        },
    },
}

ERROR_SCHEMA = {
    "title": "ErrorResponse",
    "type": "object",
    "description": "错误响应",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "一句话说明错误（中文）"},
        "errors": {
            "type": "array",
            "description": "请求校验失败时，逐个字段列出问题",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string", "description": "出错的字段路径，如 job.time_limit"},
                    "msg": {"type": "string", "description": "该字段的问题"},
                },
            },
        },
    },
}
VALIDATION_EXAMPLE = {
    "detail": "请求无效：job.time_limit：时间限制格式无效：'abc'",
    "errors": [{"field": "job.time_limit", "msg": "时间限制格式无效：'abc'"}],
}
NOT_FOUND = {
    "description": "作业不存在",
    "content": {
        JSON: {
            "schema": {"$ref": "#/components/schemas/ErrorResponse"},
            "example": {"detail": "作业 42 不存在"},
        }
    },
}


def _enrich(spec: dict[str, Any]) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI 默认的 422 格式与本服务的错误处理不符：换成真实的格式
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ErrorResponse"] = ERROR_SCHEMA
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            info = OPERATIONS.get((method, path), {})
            if "summary" in info:
                op["summary"] = info["summary"]
            body = op.get("requestBody", {}).get("content", {}).get(JSON)
            if body is not None and "request" in info:
                body["example"] = copy.deepcopy(info["request"])
            for code, resp in op.get("responses", {}).items():
                content = resp.get("content", {}).get(JSON)
                if code.startswith("2") and content is not None and "response" in info:
                    content["example"] = copy.deepcopy(info["response"])
            if "422" in op.get("responses", {}):
                op["responses"]["422"] = {
                    "description": "请求无效：指明字段与问题，什么也不保存",
                    "content": {
                        JSON: {
                            "schema": {"$ref": "#/components/schemas/ErrorResponse"},
                            "example": VALIDATION_EXAMPLE,
                        }
                    },
                }
            if "{job_id}" in path:
                op["responses"].setdefault("404", NOT_FOUND)
            op["responses"].update(copy.deepcopy(info.get("extra", {})))


def install(app: FastAPI) -> None:
    """替换 app.openapi：生成一次后补上摘要、示例与错误格式并缓存。"""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _enrich(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
