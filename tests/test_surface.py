"""What clients see: manifests, resources, prompts."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from helpers import connected, make_settings, prompt_text, resource_text

from cctg_mcp import __version__
from cctg_mcp.testing import TelegramStandIn

ROOT = Path(__file__).resolve().parent.parent


def test_versions_agree_across_package_and_registry_manifest() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = json.loads((ROOT / "manifests" / "server.json").read_text())
    assert project["version"] == __version__ == server["version"]
    assert all(p["version"] == __version__ for p in server["packages"])


def test_manifests_run_the_console_script_with_the_required_variables() -> None:
    server = json.loads((ROOT / "manifests" / "server.json").read_text())
    (pkg,) = server["packages"]
    assert (pkg["registryType"], pkg["identifier"], pkg["transport"]["type"]) == ("pypi", "cctg-mcp", "stdio")
    env = {v["name"]: v for v in pkg["environmentVariables"]}
    assert env["TELEGRAM_BOT_TOKEN"]["isSecret"] and env["TELEGRAM_BOT_TOKEN"]["isRequired"]
    assert not env["TELEGRAM_ALLOWED_USERS"]["isSecret"]
    for name in ("claude_desktop_config.json", "claude_code.mcp.json"):
        entry = json.loads((ROOT / "manifests" / name).read_text())["mcpServers"]["cctg"]
        assert entry["args"][-1] == "serve" and "cctg-mcp" in entry["args"]
        assert {"TELEGRAM_BOT_TOKEN", "TELEGRAM_ALLOWED_USERS"} <= set(entry["env"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cctg-mcp"] == "cctg_mcp.cli:main"


@pytest.mark.anyio
async def test_resources_and_prompts(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"cctg://event-types", "cctg://event-templates", "cctg://status"} <= uris
        types = json.loads(resource_text(await client.read_resource("cctg://event-types")))
        assert len(types) == 47
        status = json.loads(resource_text(await client.read_resource("cctg://status")))
        assert status["configured"] is True and "breakers" in status
        templates = json.loads(resource_text(await client.read_resource("cctg://event-templates")))
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {t["tool"] for t in templates} <= tools
        for template in templates:  # every template is a valid call
            result = await client.call_tool(template["tool"], template["arguments"])
            assert not result.is_error, template["name"]
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"notify_me_when_done", "ask_me_before", "check_notification_channel"} <= prompts
        prompt = await client.get_prompt("ask_me_before", {"action": "deploy to production"})
        text = prompt_text(prompt)
        assert "deploy to production" in text and "send_approval_request" in text


@pytest.mark.anyio
async def test_the_tool_surface_matches_the_pinned_snapshot_and_the_docs() -> None:
    """Any change to what clients see (names, schemas, annotations) must be deliberate:
    regenerate with `python -m cctg_mcp.dev.surface --write` and review the diff."""
    from cctg_mcp.dev.surface import DOC, SNAPSHOT, markdown, tool_surface

    surface = await tool_surface()
    pinned = json.loads(SNAPSHOT.read_text())
    assert [t["name"] for t in surface] == [t["name"] for t in pinned]
    for live, snap in zip(surface, pinned, strict=True):
        assert json.loads(json.dumps(live, sort_keys=True)) == snap, f"{live['name']} changed"
    assert DOC.read_text() == markdown(surface)


@pytest.mark.anyio
async def test_read_only_tools_are_annotated_and_senders_are_not() -> None:
    from cctg_mcp.dev.surface import tool_surface

    surface = {t["name"]: t for t in await tool_surface()}
    for name in (
        "get_resilience_status",
        "get_health_report",
        "get_metrics",
        "list_event_types",
        "get_telegram_responses",
        "get_recovery_history",
        "get_chaos_history",
    ):
        assert surface[name]["annotations"].get("readOnlyHint") is True, name
    for name in ("send_telegram_event", "send_telegram_message", "send_approval_request", "trigger_recovery"):
        assert surface[name]["annotations"].get("readOnlyHint") is False, name
        assert surface[name]["outputSchema"], name
