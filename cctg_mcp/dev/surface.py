"""The public tool surface, read from the live server: a snapshot (for the pinned test)
and the Markdown tool reference in docs/tools.md, so the docs cannot drift from the code.

    python -m cctg_mcp.dev.surface --write      # regenerate docs/tools.md and tests/snapshots/tools.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from cctg_mcp.app import open_service
from cctg_mcp.config import load_settings
from cctg_mcp.server import build_server
from cctg_mcp.server.toolsets import TOOLSETS, Catalogue

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "tools.md"
SNAPSHOT = ROOT / "tests" / "snapshots" / "tools.json"


async def tool_surface() -> list[dict[str, Any]]:
    """Names, input and output schemas and annotations of every tool, sorted by name."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({"CCTG_DATA_DIR": tmp, "CCTG_DELIVERY": "telegram"})
        catalogue = Catalogue()
        async with Client(build_server(lambda: open_service(settings), catalogue=catalogue)) as client:
            tools = (await client.list_tools()).tools
    toolsets = {entry.name: entry.toolset for entry in catalogue.tools}
    out = []
    for tool in sorted(tools, key=lambda t: t.name):
        ann = tool.annotations.model_dump(exclude_none=True, by_alias=True) if tool.annotations else {}
        out.append(
            {
                "name": tool.name,
                "title": tool.title or "",
                "toolset": toolsets[tool.name],
                "description": tool.description or "",
                "annotations": ann,
                "inputSchema": tool.input_schema,
                "outputSchema": tool.output_schema,
            }
        )
    return out


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        values = schema["enum"]
        return " \\| ".join(f"`{v}`" for v in values[:6]) + (" …" if len(values) > 6 else "")
    if "$ref" in schema:
        return "enum (see list_event_types)"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    return kind


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        if key in schema:
            value = f"`{schema[key]}`" if key == "pattern" else schema[key]
            parts.append(f"{label} {value}")
    if "default" in schema:
        parts.append(f"default `{json.dumps(schema['default'])}`")
    return ", ".join(parts)


def markdown(surface: list[dict[str, Any]]) -> str:
    lines = [
        "# Tool reference",
        "",
        "Generated from the live server by `python -m cctg_mcp.dev.surface --write`; "
        "a test fails when this file and the server disagree.",
        "",
        "Tools come in toolsets; `CCTG_TOOLSETS` (or `serve --toolsets`) chooses which are listed",
        "(`default`, `all`, or a comma list of names), `CCTG_READ_ONLY=1` lists only read-only tools.",
        "",
        "| toolset | listed by default | tools |",
        "|---|---|---|",
    ]
    rule = {
        "always": "yes",
        "bridge": "in bridge delivery",
        "nonproduction": "outside production",
        "opt-in": "no",
    }
    for toolset in TOOLSETS.values():
        names = ", ".join(f"`{t['name']}`" for t in surface if t["toolset"] == toolset.name) or "(none yet)"
        lines.append(f"| `{toolset.name}`: {toolset.summary} | {rule[toolset.rule]} | {names} |")
    lines.append("")
    for tool in surface:
        ann = tool["annotations"]
        flags = ", ".join(
            k for k in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint") if ann.get(k)
        )
        lines += [f"## `{tool['name']}`: {tool['title']}", "", f"Toolset `{tool['toolset']}`.", ""]
        lines += [inspect.cleandoc(tool["description"]), ""]
        if flags:
            lines += [f"Annotations: {flags}.", ""]
        props: dict[str, Any] = tool["inputSchema"].get("properties", {})
        required = set(tool["inputSchema"].get("required", []))
        if props:
            lines += ["| argument | type | required | limits |", "|---|---|---|---|"]
            for name, schema in props.items():
                lines.append(
                    f"| `{name}` | {_type(schema)} | {'yes' if name in required else 'no'} | {_limits(schema)} |"
                )
            lines.append("")
        out = tool.get("outputSchema") or {}
        if out.get("properties"):
            lines += ["Returns: " + ", ".join(f"`{k}`" for k in out["properties"]) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite docs/tools.md and the snapshot")
    args = parser.parse_args(argv)
    surface = anyio.run(tool_surface)
    if args.write:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(markdown(surface))
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(surface, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(markdown(surface))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
