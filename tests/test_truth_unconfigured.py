"""Issue 13, items 1 and 5: no token is "not configured", never a silent switch to bridge
delivery; and get_resilience_status and get_health_report give one verdict.

Through the real server: as a subprocess over stdio with no environment at all (as the
README's MCP Inspector line runs it), and in memory with the loopback stand-in."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import connected, fast_config, make_settings, text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

SENDS: list[tuple[str, dict[str, Any]]] = [
    ("send_telegram_message", {"message": "hi"}),
    ("send_telegram_event", {"type": "build_completed", "title": "t", "description": "d"}),
    ("send_task_completion", {"task_id": "t1", "title": "done"}),
    ("send_performance_alert", {"title": "cpu", "current_value": 9, "threshold": 1}),
    ("send_approval_request", {"title": "deploy?", "description": "prod"}),
]


def bare_env(home: Path) -> dict[str, str]:
    """No TELEGRAM_* / CCTG_* variable at all: what a new user's first run looks like."""
    return {"HOME": str(home), "PATH": ""}


async def test_with_no_environment_the_server_lists_tools_and_every_send_says_what_to_set(
    tmp_path: Path, anyio_backend: str
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cctg_mcp", "serve", "--backend", anyio_backend], env=bare_env(tmp_path)
    )
    with (tmp_path / "stderr.log").open("w") as errlog, anyio.fail_after(60):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            results = [await client.call_tool(name, args) for name, args in SENDS]
            status = (await client.call_tool("get_resilience_status", {})).structured_content
            health = (await client.call_tool("get_health_report", {})).structured_content
    assert {name for name, _ in SENDS} <= tools
    for (name, _), result in zip(SENDS, results, strict=True):
        text = text_of(result)
        assert result.is_error, f"{name} answered {text}"
        assert "TELEGRAM_BOT_TOKEN" in text and "TELEGRAM_ALLOWED_USERS" in text and "delivered" not in text.lower()
    assert status is not None and health is not None
    assert status["delivery"] == "telegram" and status["configured"] is False and status["ready"] is False
    assert status["overall"] == "unhealthy" and "TELEGRAM_BOT_TOKEN" in status["verdict_reason"]
    assert health["configured"] is False and health["ready"] is False
    assert (health["overall"], health["verdict_reason"]) == (status["overall"], status["verdict_reason"])
    # nothing was written anywhere a bridge might (or might never) read it
    assert not (tmp_path / ".cc_telegram" / "events").exists() or not any(
        (tmp_path / ".cc_telegram" / "events").iterdir()
    )


async def test_check_without_a_token_exits_non_zero_naming_what_is_missing(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "cctg_mcp", "check"], env=bare_env(tmp_path), check=False
        )
    out = result.stdout.decode()
    assert result.returncode != 0, out
    assert "TELEGRAM_BOT_TOKEN" in out and "TELEGRAM_ALLOWED_USERS" in out and "OK:" not in out


async def test_bridge_delivery_only_when_asked_for(tmp_path: Path) -> None:
    async with connected(make_settings(None, tmp_path / "t")) as client:
        status = (await client.call_tool("get_resilience_status", {})).structured_content
    async with connected(
        make_settings(
            None, tmp_path / "b", CCTG_DELIVERY="bridge", CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/h"
        )
    ) as client:
        bridge = (await client.call_tool("get_resilience_status", {})).structured_content
    assert status is not None and (status["delivery"], status["configured"]) == ("telegram", False)
    assert bridge is not None and (bridge["delivery"], bridge["configured"]) == ("bridge", True)


async def test_status_and_health_report_share_one_verdict_from_unknown_to_unhealthy(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """Before the first checks both say unknown; after them both say the same thing, also
    when Telegram fails and when it is back."""
    config = fast_config(health={"interval": 600_000, "gracePeriod": 600_000, "failureThreshold": 1})

    async def both(client: Client, refresh: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        health = (await client.call_tool("get_health_report", {"refresh": refresh})).structured_content
        status = (await client.call_tool("get_resilience_status", {})).structured_content
        assert health is not None and status is not None
        return status, health

    async with connected(make_settings(standin, tmp_path), config) as client:
        with anyio.fail_after(30):
            first = await both(client)
            checked = await both(client, refresh=True)
            standin.set_fault(FaultMode.SERVER_ERROR, methods={"getMe"}, status=502)
            failing = await both(client, refresh=True)
            standin.clear_fault()
            back = await both(client, refresh=True)
            back = await both(client, refresh=True)  # recovery threshold: two successes
    seen = []
    for status, health in (first, checked, failing, back):
        assert status["overall"] == health["overall"] and status["ready"] == health["ready"]
        assert status["verdict_reason"] == health["verdict_reason"]
        assert status["health"]["overall"] == status["overall"]
        seen.append(status["overall"])
    assert seen == ["unknown", "healthy", "unhealthy", "healthy"]
    assert "first health checks have not run" in first[0]["verdict_reason"]
    assert "telegram" in failing[0]["verdict_reason"]
