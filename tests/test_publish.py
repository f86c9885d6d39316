"""Install and publish: the registry manifest, the README's mcp-name line, the built distributions,
and the [trio] extra's message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cctg_mcp import __version__

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "mcp-server.schema.json").read_text())
SERVER = json.loads((ROOT / "manifests" / "server.json").read_text())
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def problems(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_server_json_is_valid_for_the_registry() -> None:
    assert problems(SERVER) == []
    assert SERVER["$schema"].endswith("/2025-12-11/server.schema.json")
    assert len(SERVER["description"]) <= 100
    assert SERVER["version"] == PROJECT["version"] == __version__
    assert SERVER["repository"] == {"url": PROJECT["urls"]["Repository"], "source": "github"}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"description": "x" * 101}, "description"),
        ({"version": "latest"}, "version"),
        ({"name": "cctg-mcp"}, "name"),
        ({"repository": {"url": "https://github.com/cctg-mcp/cctg-mcp"}}, "repository"),
    ],
)
def test_the_schema_catches_what_the_registry_refuses(change: dict[str, Any], where: str) -> None:
    found = problems({**SERVER, **change})
    assert found and all(p.startswith(where) for p in found), found


def test_readme_names_the_server_for_the_registry() -> None:
    assert f"mcp-name: {SERVER['name']}" in (ROOT / "README.md").read_text()


def test_distributions_carry_the_license_urls_and_extras(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(metadata_name).decode()
        license_files = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert license_files and "MIT License" in z.read(license_files[0]).decode()
    with tarfile.open(sdist) as t:
        assert any(m.name.endswith("/LICENSE") for m in t.getmembers())
    assert "License-Expression: MIT" in metadata
    assert "Project-URL: Repository, https://github.com/cctg-mcp/cctg-mcp" in metadata
    for extra in ("trio", "prometheus"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "mcp-name: io.github.cctg-mcp/cctg-mcp" in metadata  # the README is the long description


def test_serve_on_trio_without_trio_says_what_to_install(tmp_path: Path) -> None:
    code = "import sys; sys.modules['trio'] = None; from cctg_mcp.cli import main; raise SystemExit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "--backend", "trio"],
        env={**os.environ, "CCTG_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "pip install 'cctg-mcp[trio]'" in done.stderr and "Traceback" not in done.stderr
    assert PROJECT["optional-dependencies"]["trio"] == ["trio>=0.25"]
