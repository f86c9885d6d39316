"""The public API is curated and pinned; every public class says in one line what it is."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cctg_mcp
import cctg_mcp.client
from cctg_mcp.client import ResilientBridgeClient
from cctg_mcp.delivery.service import SendResult
from cctg_mcp.resilience.errors import BaseResilienceError

PACKAGE = Path(cctg_mcp.__file__).parent


def test_the_package_exports_exactly_the_curated_names() -> None:
    assert cctg_mcp.__all__ == ["BaseResilienceError", "ResilientBridgeClient", "SendResult", "__version__"]
    assert cctg_mcp.ResilientBridgeClient is ResilientBridgeClient
    assert cctg_mcp.SendResult is SendResult
    assert cctg_mcp.BaseResilienceError is BaseResilienceError
    assert isinstance(cctg_mcp.__version__, str) and cctg_mcp.__version__
    assert set(cctg_mcp.__all__) <= set(dir(cctg_mcp))
    namespace: dict[str, object] = {}
    exec("from cctg_mcp import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(cctg_mcp.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        _ = cctg_mcp.NotAThing
    except AttributeError as exc:
        assert "NotAThing" in str(exc)
    else:
        raise AssertionError("cctg_mcp.NotAThing resolved")


def test_the_client_module_exports_the_client_and_the_types_of_its_signatures() -> None:
    assert cctg_mcp.client.__all__ == [
        "ResilienceConfig",
        "ResilienceStatus",
        "ResilientBridgeClient",
        "SendResult",
        "Settings",
    ]
    for name in cctg_mcp.client.__all__:
        assert getattr(cctg_mcp.client, name).__name__ == name


def test_importing_the_package_does_not_import_the_client() -> None:
    """`cctg-mcp --version` and the server's start-up stay light: the public names are lazy."""
    code = "import sys, cctg_mcp; print(sorted(m for m in sys.modules if m.startswith('cctg_mcp')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "['cctg_mcp']"


def public_classes_without_a_docstring(package: Path) -> list[str]:
    """Top-level public classes (outside private modules) whose docstring has no summary line."""
    missing = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent)
        if any(part.startswith("_") and part not in ("__init__.py", "__main__.py") for part in relative.parts):
            continue  # a private module: nothing in it is public
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if not doc or not doc.splitlines()[0].strip():
                    missing.append(f"{relative.as_posix()}:{node.lineno} {node.name}")
    return missing


def test_every_public_class_has_a_one_line_summary() -> None:
    assert public_classes_without_a_docstring(PACKAGE) == []


def test_the_docstring_walk_reports_a_public_class_without_one(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text('class Exported:\n    """Says what it is."""\n')
    (package / "sub" / "mod.py").write_text(
        'class Bare:\n    x = 1\n\n\nclass _Private:\n    pass\n\n\nclass Blank:\n    """\n    """\n'
    )
    (package / "_internal.py").write_text("class Hidden:\n    pass\n")
    assert public_classes_without_a_docstring(package) == ["pkg/sub/mod.py:1 Bare", "pkg/sub/mod.py:9 Blank"]
