"""依赖方向：api → cluster → conductor，api → conductor。conductor 不导入 fastapi 与 ray；SQL 只在 conductor/store。"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "conductor": {"fastapi", "ray", "api", "cluster", "starlette", "uvicorn"},
    "cluster": {"api", "fastapi", "starlette"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upper_layers(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}


# SQL 只在 conductor/store：表定义（models.py，含约束与触发器的 DDL）与迁移除外
SQL_BUILDERS = {"text", "select", "insert", "update", "delete"}
SQL_MODULES = {"sqlalchemy", "sqlmodel"}
SQL_PACKAGES = ("conductor", "cluster", "api")
SQL_EXEMPT = ("conductor/store/", "conductor/migrations/", "conductor/models.py")


def _sql_uses(path: Path) -> list[str]:
    """文件里构造或执行 SQL 的地方：调用从 sqlalchemy/sqlmodel 导入的 text/select/insert/update/delete，
    以及把字符串字面量直接交给 session.exec/execute。"""
    tree = ast.parse(path.read_text())
    builders: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in SQL_MODULES:
                builders.update(a.asname or a.name for a in node.names if a.name in SQL_BUILDERS)
        elif isinstance(node, ast.Import):
            modules.update(
                a.asname or a.name for a in node.names if a.name.split(".")[0] in SQL_MODULES
            )
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in builders:
            found.append(f"{node.lineno}: {func.id}(")
        elif isinstance(func, ast.Attribute):
            if (
                func.attr in SQL_BUILDERS
                and isinstance(func.value, ast.Name)
                and func.value.id in modules
            ):
                found.append(f"{node.lineno}: {func.value.id}.{func.attr}(")
            elif (
                func.attr in ("exec", "execute", "exec_driver_sql")
                and node.args
                and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
            ):
                found.append(f"{node.lineno}: {func.attr}(<字符串>)")
    return found


def test_sql_only_in_store() -> None:
    offenders = {}
    for package in SQL_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            if name.startswith(SQL_EXEMPT):
                continue
            if uses := _sql_uses(path):
                offenders[name] = uses
    assert offenders == {}


def test_sql_check_sees_what_it_forbids(tmp_path: Path) -> None:
    """检查本身：别名导入、模块属性与原始字符串都算；别处来的同名函数不算。"""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import sqlalchemy as sa\n"
        "from sqlmodel import select as pick\n"
        "from selectors import select\n"
        "sa.text('SELECT 1')\n"
        "pick(Job)\n"
        "select([])\n"
        "session.execute('SELECT 1')\n"
        "session.execute(f'SELECT {x}')\n"
        "session.execute(STATEMENT)\n"
    )
    assert _sql_uses(sample) == [
        "4: sa.text(",
        "5: pick(",
        "7: execute(<字符串>)",
        "8: execute(<字符串>)",
    ]


# 不许有循环导入：函数里的延迟导入也算（它正是用来藏循环的），只在类型检查时的导入不算
FIRST_PARTY = ("conductor", "api", "cluster", "harness", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.Module) -> set[ast.AST]:
    hidden: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(n for child in node.body for n in ast.walk(child))
    return hidden


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in FIRST_PARTY for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        hidden = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if node in hidden:
                continue
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan 强连通分量：多于一个模块的分量就是循环。"""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_import_graph()) == []


def test_cycle_check_sees_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_bench_and_harness_do_not_import_tests() -> None:
    offenders = {
        str(path.relative_to(ROOT))
        for pkg in ("bench", "harness")
        for path in (ROOT / pkg).rglob("*.py")
        if "tests" in _imports(path)
    }
    assert offenders == set()
