"""The folders tell the data flow, and the import direction keeps it so (docs/architecture.md).

Read with ``ast``: only imports executed at run time count (``if TYPE_CHECKING:`` blocks are
skipped), so a layer may name another's types for mypy without depending on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cctg_mcp"

#: Our top-level units (packages and the modules beside them).
RUNTIME = {
    "answers",
    "commands",
    "delivery",
    "events",
    "ops",
    "permissions",
    "resilience",
    "server",
    "tasks",
    "transports",
    "testing",
    "app",
    "cli",
    "client",
    "config",
    "runtime",
}
EDGE = {"server", "app", "cli", "client", "commands", "dev"}  # what the inner layers never import


def _runtime_imports(tree: ast.AST) -> list[str]:
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append(child.module)
            elif isinstance(child, ast.ImportFrom) and child.level > 0:
                found.append("." * child.level + (child.module or ""))
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        unit = parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")
        deps = graph.setdefault(unit, set())
        for module in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if module.startswith("cctg_mcp."):
                target = module.split(".")[1]
                if target != unit:
                    deps.add(target)
            elif not module.startswith("."):
                deps.add("ext:" + module.split(".")[0])
    return graph


GRAPH = _graph()


def test_the_units_are_the_documented_ones() -> None:
    assert set(GRAPH) == RUNTIME | {"dev", "__init__", "__main__"}


def test_resilience_imports_nothing_of_ours_outside_itself() -> None:
    assert {d for d in GRAPH["resilience"] if not d.startswith("ext:")} == set()


@pytest.mark.parametrize("unit", sorted(GRAPH))
def test_only_server_and_tooling_import_mcp(unit: str) -> None:
    if unit not in {"server", "dev"}:
        assert "ext:mcp" not in GRAPH[unit], f"{unit} imports mcp; only server/ (and dev/ tooling, a client) may"


@pytest.mark.parametrize("unit", sorted(GRAPH))
def test_only_transports_import_httpx(unit: str) -> None:
    if unit not in {"transports", "dev"}:
        assert "ext:httpx" not in GRAPH[unit], f"{unit} imports httpx; foreign errors are mapped in transports/"


@pytest.mark.parametrize(
    "unit",
    ["answers", "config", "delivery", "events", "ops", "permissions", "resilience", "runtime", "tasks", "transports"],
)
def test_inner_layers_never_import_the_edge(unit: str) -> None:
    assert not GRAPH[unit] & EDGE, f"{unit} imports {sorted(GRAPH[unit] & EDGE)}"


def test_transports_know_no_delivery_ops_or_server() -> None:
    assert not GRAPH["transports"] & {"delivery", "ops", "server", "app"}


@pytest.mark.parametrize("unit", sorted(RUNTIME - {"cli", "testing"}))
def test_runtime_never_imports_tooling(unit: str) -> None:
    assert "dev" not in GRAPH[unit] and "testing" not in GRAPH[unit]


def test_wall_time_is_read_only_inside_the_clock() -> None:
    """``time.time()`` and ``datetime.now()`` only in resilience/clock.py: everything else takes
    the injected clock, so whole-server tests can run in virtual time. The command-line entry
    points (``commands/``, and the import time the package records for them) measure their own
    process's wall-clock budget (a hook must return within 2 s of its start)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in {"resilience/clock.py", "__init__.py"} or rel.startswith(("dev/", "testing/", "commands/")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in {
                "time.time",
                "datetime.now",
                "datetime.utcnow",
                "datetime.datetime.now",
                "date.today",
            }:
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_the_stdio_server_does_not_load_the_http_transport() -> None:
    """Importing the server (what stdio runs) loads neither our HTTP modules nor uvicorn's h11
    protocol and h11. (uvicorn's package itself is loaded by the mcp SDK: its sse_starlette
    import hooks uvicorn's exit handler, which is outside our reach.)"""
    probe = (
        "import cctg_mcp.server, sys; "
        "print(sorted(m for m in sys.modules if m.startswith("
        "('cctg_mcp.server.http', 'uvicorn.protocols', 'h11'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
