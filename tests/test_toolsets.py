"""The surface an agent meets: toolsets, read-only mode, titles, pinned hints, the size budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import pytest
from helpers import make_settings
from mcp import Client
from mcp.types import Tool

from cctg_mcp.app import open_service
from cctg_mcp.config import Settings
from cctg_mcp.resilience.errors import ConfigurationError
from cctg_mcp.server import TOOL_MODULES, build_server
from cctg_mcp.server.toolsets import EVERYTHING, TOOLSETS, Catalogue, ToolSelection, default_toolsets, select_tools

ROOT = Path(__file__).resolve().parent.parent
BUDGET_BYTES = 8 * 1024

#: (readOnlyHint, destructiveHint, idempotentHint, openWorldHint) of every tool; None = unset.
HINTS: dict[str, tuple[bool | None, bool | None, bool | None, bool | None]] = {
    "send_telegram_event": (False, False, False, True),
    "send_telegram_message": (False, False, False, True),
    "send_task_completion": (False, False, False, True),
    "send_performance_alert": (False, False, False, True),
    "send_approval_request": (False, False, False, True),
    "list_event_types": (True, None, True, False),
    "get_telegram_responses": (True, None, True, False),
    "clear_old_responses": (False, True, True, False),
    "process_pending_responses": (True, None, True, False),
    "wait_for_response": (True, None, False, True),
    "ping": (True, None, True, False),
    "get_resilience_status": (True, None, True, False),
    "get_health_report": (True, None, True, True),
    "get_metrics": (True, None, True, False),
    "trigger_recovery": (False, True, False, True),
    "get_recovery_history": (True, None, True, False),
    "force_circuit_breaker": (False, False, True, False),
    "get_bridge_status": (True, None, True, False),
    "start_bridge": (False, False, True, False),
    "stop_bridge": (False, True, False, False),
    "restart_bridge": (False, True, False, False),
    "check_bridge_process": (False, False, True, False),
    "list_chaos_experiments": (True, None, True, False),
    "run_chaos_experiment": (False, True, False, False),
    "stop_chaos_experiment": (False, False, False, False),
    "get_chaos_history": (True, None, True, False),
    "switch_to_nomad_mode": (False, False, True, True),
    "switch_to_local_mode": (False, False, True, True),
    "switch_to_mute_mode": (False, False, True, True),
    "get_task_status": (True, None, True, False),
    "register_claude_todos": (False, False, False, False),
    "todo": (True, None, True, False),
    "permission_prompt": (False, False, False, True),
}


@asynccontextmanager
async def listed(settings: Settings, selection: ToolSelection = EVERYTHING) -> AsyncIterator[Client]:
    async with Client(build_server(lambda: open_service(settings), selection=selection)) as client:
        yield client


async def tools_for(tmp_path: Path, selection: ToolSelection) -> list[Tool]:
    async with listed(make_settings(None, tmp_path, CCTG_DELIVERY="telegram"), selection) as client:
        return (await client.list_tools()).tools


def model_visible(tools: list[Tool]) -> str:
    """What a model reads of tools/list: names, titles, descriptions, input schemas."""
    parts = [
        {"name": t.name, "title": t.title, "description": t.description, "inputSchema": t.input_schema} for t in tools
    ]
    return json.dumps(parts, separators=(",", ":"), ensure_ascii=False)


def catalogue() -> Catalogue:
    found = Catalogue()
    build_server(lambda: open_service(None), catalogue=found)  # type: ignore[arg-type]
    return found


def test_every_tool_module_is_registered_and_declares_a_known_toolset() -> None:
    modules = {p.stem for p in (ROOT / "cctg_mcp" / "server").glob("*_tools.py")}
    assert modules == {m.__name__.rsplit(".", 1)[-1] for m in TOOL_MODULES}
    for module in TOOL_MODULES:
        assert getattr(module, "TOOLSET", None) in TOOLSETS, module.__name__


def test_a_module_without_a_toolset_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import cctg_mcp.server as server

    stray = ModuleType("cctg_mcp.server.stray_tools")
    stray.register = lambda mcp: None  # type: ignore[attr-defined]
    monkeypatch.setattr(server, "TOOL_MODULES", (*server.TOOL_MODULES, stray))
    with pytest.raises(RuntimeError, match="stray_tools declares no TOOLSET"):
        server.build_server(lambda: open_service(None))  # type: ignore[arg-type]


def test_every_tool_is_in_one_toolset_and_its_hints_are_pinned() -> None:
    entries = catalogue().tools
    assert sorted(e.name for e in entries) == sorted(HINTS)
    for entry in entries:
        ann = entry.annotations
        assert ann is not None, entry.name
        got = (ann.read_only_hint, ann.destructive_hint, ann.idempotent_hint, ann.open_world_hint)
        assert got == HINTS[entry.name], entry.name


def test_default_toolsets_follow_delivery_and_environment() -> None:
    core = {"send", "answers", "diagnostics", "recovery"}
    assert default_toolsets("telegram", "production") == core
    assert default_toolsets("bridge", "production") == core | {"bridge"}
    assert default_toolsets("telegram", "development") == core | {"chaos"}
    assert select_tools(["all"], delivery="telegram", environment="production").toolsets == set(TOOLSETS)
    assert select_tools(["default", "modes"], delivery="telegram", environment="staging").toolsets == core | {
        "chaos",
        "modes",
    }
    assert select_tools([], delivery="telegram", environment="production").toolsets == core


def test_unknown_toolsets_are_an_error_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        select_tools(["send", "chaoss"], delivery="telegram", environment="production")
    message = str(info.value)
    assert "CCTG_TOOLSETS" in message and "'chaoss'" in message
    assert all(name in message for name in (*TOOLSETS, "all", "default"))


@pytest.mark.anyio
async def test_the_default_selection_lists_exactly_its_toolsets(tmp_path: Path) -> None:
    by_set = catalogue().by_toolset()
    selection = select_tools([], delivery="telegram", environment="production")
    names = {t.name for t in await tools_for(tmp_path, selection)}
    assert names == {n for s in ("send", "answers", "diagnostics", "recovery") for n in by_set[s]}
    bridge_dev = select_tools([], delivery="bridge", environment="development")
    names = {t.name for t in await tools_for(tmp_path, bridge_dev)}
    assert set(by_set["bridge"]) | set(by_set["chaos"]) <= names
    assert not set(by_set["modes"]) & names


@pytest.mark.anyio
async def test_read_only_lists_only_read_only_tools(tmp_path: Path) -> None:
    selection = select_tools(["all"], delivery="telegram", environment="development", read_only=True)
    tools = await tools_for(tmp_path, selection)
    assert tools and all(t.annotations and t.annotations.read_only_hint for t in tools)
    expected = {name for name, hints in HINTS.items() if hints[0]}
    assert {t.name for t in tools} == expected


@pytest.mark.anyio
async def test_titles_descriptions_and_prompt_arguments(tmp_path: Path) -> None:
    async with listed(make_settings(None, tmp_path, CCTG_DELIVERY="telegram")) as client:
        tools = (await client.list_tools()).tools
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        prompts = (await client.list_prompts()).prompts
    for tool in tools:
        assert tool.title, tool.name
        assert tool.description and not any(line.startswith(" ") for line in tool.description.splitlines())
        props = tool.input_schema.get("properties", {})
        assert "title" not in tool.input_schema and not any("title" in p for p in props.values()), tool.name
    for item in [*resources, *templates, *prompts]:
        assert item.title, item.name
    for prompt in prompts:
        for argument in prompt.arguments or []:
            assert argument.description, (prompt.name, argument.name)


@pytest.mark.anyio
async def test_the_default_toolset_fits_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    selection = select_tools([], delivery="telegram", environment="production")
    default = model_visible(await tools_for(tmp_path, selection))
    everything = model_visible(await tools_for(tmp_path, EVERYTHING))
    size, total = len(default.encode()), len(everything.encode())
    with capsys.disabled():
        print(f"\ntools/list model-visible part: default toolsets {size} bytes (budget {BUDGET_BYTES}); all {total}")
    assert size < BUDGET_BYTES


def _serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cctg_mcp", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        (["serve", "--toolsets", "send,nope"], {}, "--toolsets"),
        (["serve"], {"CCTG_TOOLSETS": "send,nope"}, "CCTG_TOOLSETS"),
    ],
)
def test_serve_refuses_unknown_toolsets_at_start(
    tmp_path: Path, args: list[str], env: dict[str, str], source: str
) -> None:
    done = _serve(args, {"CCTG_DATA_DIR": str(tmp_path), **env})
    assert done.returncode == 2
    assert f"{source} names unknown toolset(s) 'nope'" in done.stderr and "Traceback" not in done.stderr
    assert "send, answers, diagnostics" in done.stderr
