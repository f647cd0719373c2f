"""路由共用的依赖别名（Annotated）：运行时、请求者、路径里的作业引用。

路由写 `rt: RuntimeDep`、`principal: PrincipalDep`、`job_id: JobId`，不在每个参数上重复 Depends(...)。
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from api.auth import current_principal
from api.runtime import Runtime, get_runtime
from conductor.auth import Principal

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]
JobId = Annotated[
    str, Path(description="作业 ID；数组任务写作 主作业号_下标（如 12_3），数组主作业号指整个数组")
]
