"""Health and metrics end to end: a real mcp.Client, the real server, the stand-in over real HTTP."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, connected, fast_config, make_settings, resource_text, text_of
from mcp import Client

from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

#: The background loop waits ten minutes before its first round, so every check in these
#: tests is one the test asked for (``refresh``): deterministic, no sleeps.
HEALTH = {"interval": 600_000, "timeout": 3000, "failureThreshold": 2, "recoveryThreshold": 1, "gracePeriod": 600_000}
DEFAULTS = ["disk", "dispatcher", "outbox", "telegram", "telegram_breaker"]


async def report(client: Client, **args: Any) -> dict[str, Any]:
    with anyio.fail_after(10):
        result = await client.call_tool("get_health_report", args)
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def comp(rep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in rep["components"] if c["name"] == name)


async def test_telegram_failing_and_recovering_shows_in_the_health_report(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), fast_config(health=HEALTH)) as client:
        before = await report(client)
        assert before["overall"] == "unknown" and before["live"] is True and before["ready"] is True
        assert sorted(c["name"] for c in before["components"]) == DEFAULTS
        assert {c["name"]: c["critical"] for c in before["components"]} == {
            "disk": False,
            "dispatcher": True,
            "outbox": False,
            "telegram": True,
            "telegram_breaker": True,
        }

        healthy = await report(client, refresh=True)
        assert healthy["overall"] == "healthy" and healthy["ready"] is True
        tg = comp(healthy, "telegram")
        assert tg["status"] == "healthy" and tg["kind"] == "http" and tg["consecutive_successes"] == 1
        assert tg["latency_ms"] is not None and tg["latency_ms"] >= 0
        assert datetime.fromisoformat(tg["last_check_at"].replace("Z", "+00:00"))

        standin.set_fault(FaultMode.SERVER_ERROR, methods={"getMe"}, status=502)
        first = await report(client, component="telegram", refresh=True)
        assert [c["name"] for c in first["components"]] == ["telegram"]
        assert comp(first, "telegram")["status"] == "degraded" and first["overall"] == "degraded"
        down = await report(client, refresh=True)
        tg = comp(down, "telegram")
        assert tg["status"] == "unhealthy" and tg["consecutive_failures"] == 2
        assert "502" in tg["last_error"] and standin.token not in json.dumps(down)
        assert down["overall"] == "unhealthy" and down["ready"] is False
        assert down["unhealthy_components"] == ["telegram"]

        status = (await client.call_tool("get_resilience_status", {})).structured_content
        assert status is not None and status["overall"] == "unhealthy"
        assert status["health"]["unhealthy"] == ["telegram"] and status["health"]["ready"] is False
        assert any("telegram" in issue and "502" in issue for issue in status["active_issues"])

        standin.clear_fault()
        back = await report(client, refresh=True)
        assert comp(back, "telegram")["status"] == "healthy" and back["overall"] == "healthy"
        cached = await report(client)  # without refresh: the same cached picture, no new probe
        assert comp(cached, "telegram")["checks"] == comp(back, "telegram")["checks"] == 4


async def test_a_revoked_token_makes_the_channel_not_ready_and_stays_redacted(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), fast_config(health=HEALTH)) as client:
        standin.set_fault(FaultMode.UNAUTHORIZED)
        await report(client, refresh=True)
        down = await report(client, refresh=True)
        with anyio.fail_after(10):
            resource = await client.read_resource("cctg://health")
    tg = comp(down, "telegram")
    assert tg["status"] == "unhealthy" and "TELEGRAM_INVALID_TOKEN" in tg["last_error"]
    assert down["ready"] is False
    body = json.loads(resource_text(resource))
    assert body["overall"] == "unhealthy" and comp(body, "telegram")["status"] == "unhealthy"
    assert standin.token not in json.dumps(down) + json.dumps(body)


async def test_an_unknown_component_is_a_tool_error_naming_the_known_ones(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), fast_config(health=HEALTH)) as client:
        result = await client.call_tool("get_health_report", {"component": "nope"})
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert result.is_error and "nope" in text_of(result)
    assert all(name in text_of(result) for name in DEFAULTS)
    for name in ("get_health_report", "get_metrics"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True
        assert tools[name].output_schema is not None


async def test_the_background_loop_checks_on_its_own(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = fast_config(health={**HEALTH, "gracePeriod": 0, "interval": 50})

    def probes() -> int:
        return sum(r.method == "getMe" for r in standin.requests)

    async with connected(make_settings(standin, tmp_path), config) as client:
        # A second round starts only after the first one recorded its results.
        seen = await anyio.to_thread.run_sync(standin.wait_until, lambda: probes() >= 2, 10.0)
        rep = await report(client)
    assert seen and rep["live"] is True
    assert comp(rep, "telegram")["checks"] >= 1 and comp(rep, "telegram")["status"] == "healthy"


async def test_get_metrics_shows_calls_and_latency_after_sends(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path), fast_config(health=HEALTH)) as client:
        for i in range(3):
            with anyio.fail_after(10):
                sent = await client.call_tool("send_telegram_message", {"message": f"m{i}"})
            assert sent.structured_content is not None and sent.structured_content["status"] == "delivered"
        with anyio.fail_after(10):
            everything = await client.call_tool("get_metrics", {})
            picked = await client.call_tool("get_metrics", {"component": "telegram", "operation": "sendMessage"})
            # a known operation with no calls yet answers zeros ("bridge" guards nothing in direct delivery)
            nothing = await client.call_tool(
                "get_metrics", {"component": "telegram", "operation": "sendApprovalRequest"}
            )
            resource = await client.read_resource("cctg://metrics?component=telegram")
    m = everything.structured_content
    assert m is not None and not everything.is_error
    assert m["calls"] == 3 * len(USERS) and m["successes"] == 3 * len(USERS) and m["error_rate"] == 0
    assert m["p95_ms"] is not None and m["p95_ms"] > 0
    op = m["metrics"]["operations"]["telegram"]["sendMessage"]
    assert op["calls"] == 3 * len(USERS) and op["latency"]["p95_ms"] == m["p95_ms"]
    p = picked.structured_content
    assert p is not None and p["calls"] == m["calls"] and list(p["metrics"]["operations"]) == ["telegram"]
    n = nothing.structured_content
    assert n is not None and n["calls"] == 0 and n["error_rate"] is None and n["p95_ms"] is None
    body = json.loads(resource_text(resource))
    assert body["calls"] == 3 * len(USERS)
    assert standin.token not in json.dumps(m)
