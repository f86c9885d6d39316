"""Issue 13, item 8: an unknown component, operation or experiment is a tool error listing
the valid names, in every tool that takes one; a known name with no calls answers zeros."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import connected, make_settings, text_of

from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

UNKNOWN: list[tuple[str, dict[str, Any], list[str]]] = [
    ("get_metrics", {"component": "bogus"}, ["bogus", "telegram"]),
    ("get_metrics", {"operation": "bogusOp"}, ["bogusOp", "sendMessage", "sendEvent"]),
    ("get_metrics", {"component": "telegram", "operation": "bogusOp"}, ["bogusOp", "sendApprovalRequest"]),
    ("get_health_report", {"component": "bogus"}, ["bogus", "telegram", "outbox", "dispatcher"]),
    ("trigger_recovery", {"component": "bogus"}, ["bogus", "telegram", "outbox"]),
    ("run_chaos_experiment", {"experiment": "bogus"}, ["bogus", "network_partition", "high_latency"]),
]


async def test_unknown_names_are_errors_that_list_the_valid_ones(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        with anyio.fail_after(30):
            results = [(tool, await client.call_tool(tool, args), needles) for tool, args, needles in UNKNOWN]
            empty = await client.call_tool("get_metrics", {"component": "telegram", "operation": "sendApprovalRequest"})
    for tool, result, needles in results:
        text = text_of(result)
        assert result.is_error, f"{tool} answered {text}"
        assert all(n in text for n in needles), (tool, text)
    assert not empty.is_error and empty.structured_content is not None
    assert (empty.structured_content["calls"], empty.structured_content["error_rate"]) == (0, None)


async def test_the_metrics_resource_rejects_unknown_names_too(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        with anyio.fail_after(30):
            ok = await client.read_resource("cctg://metrics?component=telegram")
            with pytest.raises(Exception, match="Valid components"):
                await client.read_resource("cctg://metrics?component=bogus")
    assert ok.contents


async def test_status_lists_only_components_that_guard_real_calls(standin: TelegramStandIn, tmp_path: Path) -> None:
    """Item 6: no filesystem/network (or, in direct delivery, bridge) breaker with zero calls forever."""
    async with connected(make_settings(standin, tmp_path / "t")) as client:
        with anyio.fail_after(30):
            sent = await client.call_tool("send_telegram_message", {"message": "counted"})
            status = (await client.call_tool("get_resilience_status", {})).structured_content
            bogus = await client.call_tool("trigger_recovery", {"component": "filesystem"})
    async with connected(
        make_settings(
            None, tmp_path / "b", CCTG_DELIVERY="bridge", CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/h"
        )
    ) as client:
        bridge = (await client.call_tool("get_resilience_status", {})).structured_content
    assert not sent.is_error and status is not None and bridge is not None

    def components(doc: dict[str, Any]) -> set[str]:  # "telegram.sendPerformanceAlert" is telegram's
        return {b["name"].split(".")[0] for b in doc["breakers"]} | {
            r["component"].split(".")[0] for r in doc["retries"]
        }

    assert components(status) == {"telegram"} and components(bridge) == {"bridge"}
    telegram = next(b for b in status["breakers"] if b["name"] == "telegram")
    assert telegram["successes"] > 0
    assert bogus.is_error and "filesystem" in text_of(bogus) and "telegram" in text_of(bogus)
