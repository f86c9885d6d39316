"""The breaker's configuration, live through the running server (a real mcp.Client, the stand-in):
the monitoring window, the bulkhead, ``enabled: false``, manual force from the tool and the
library client, per-operation breakers and per-event priority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import FAST, USERS, call, connected, fast_config, make_settings, text_of
from inprocess import in_virtual_time
from mcp import Client

from cctg_mcp import ResilientBridgeClient
from cctg_mcp.resilience.config import parse_resilience_config
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

ONE_USER = {"TELEGRAM_ALLOWED_USERS": str(USERS[0])}
SLOW = {"timeout": 600_000, "monitoringWindow": 600_000}  # nothing heals or slides out during a test
NO_RETRY = {"telegram": {"maxAttempts": 1}}


async def breaker(client: Client, name: str = "telegram") -> dict[str, Any]:
    status = await call(client, "get_resilience_status")
    found: dict[str, Any] = next(b for b in status["breakers"] if b["name"] == name)
    return found


async def background_done(client: Client) -> None:
    """Wait (bounded) until the background loop has retried every queued row: after a success
    the failed rows are due at once, and their outcomes must not land inside the next fault
    (on a slow runner two late retries there made three failures in a row)."""
    with anyio.fail_after(15):
        # (the server's worker thread and the stand-in change what is polled)
        while (box := (await call(client, "get_resilience_status"))["outbox"])["pending"] + box["in_flight"]:  # noqa: ASYNC110
            await anyio.sleep(0.2)


async def test_intermittent_failures_inside_the_window_open_the_breaker(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """F S F S F: never three failures in a row, yet 3 failures inside the window open it.
    (A failed row is retried in the background once a send succeeds; each round waits for
    that retry, a success, before the next fault.)"""
    config = fast_config(
        circuitBreaker={"telegram": {"failureThreshold": 3, "volumeThreshold": 3, **SLOW}}, retry=NO_RETRY
    )
    async with connected(make_settings(standin, tmp_path, **ONE_USER), config) as client:
        for round_ in range(3):
            standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
            failed = await call(client, "send_telegram_message", {"message": f"fails {round_}"})
            standin.clear_fault()
            assert failed["status"] == "queued"
            if (await breaker(client))["state"] == "open":
                break
            sent = await call(client, "send_telegram_message", {"message": f"works {round_}"})
            assert sent["status"] == "delivered"
            await background_done(client)
        tg = await breaker(client)
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
        rejected = await call(client, "send_telegram_message", {"message": "after"})
    assert tg["state"] == "open" and tg["window_failures"] >= 3 and tg["successes"] >= 1
    assert tg["consecutive_failures"] < 3  # the old consecutive rule would not have tripped
    assert rejected["status"] == "queued" and "circuit" in rejected["reason"]


async def test_bulkhead_rejects_the_excess_at_once_without_counting_a_failure(tmp_path: Path) -> None:
    """maxConcurrentRequests 1, two recipients: one send hangs in flight, the other is refused.
    (In virtual time: the hanging send holds until its attempt timeout, which costs no wall time.)"""
    config = fast_config(circuitBreaker={"telegram": {"maxConcurrentRequests": 1, "failureThreshold": 1, **SLOW}})
    async with in_virtual_time(tmp_path, config) as w:
        client = w.client
        w.standin.set_fault(FaultMode.HANG, methods={"sendMessage"})
        result = await call(client, "send_telegram_message", {"message": "two recipients"})
        during = await breaker(client)
        metrics = await call(client, "get_metrics", {"component": "telegram"})
        w.standin.clear_fault()
    reasons = [r["reason"] or "" for r in result["recipients"]]
    assert result["status"] == "queued" and any("maxConcurrentRequests 1" in r for r in reasons), reasons
    assert during["max_concurrent"] == 1 and during["bulkhead_rejections"] >= 1
    # only a hanging send can fail (its read timeout); a refusal is never a failure
    assert "BULKHEAD" not in (during["last_failure"] or ""), during["last_failure"]
    ops = metrics["metrics"]["operations"]["telegram"]
    assert any((op.get("errors_by_code") or {}).get("BULKHEAD_FULL") for op in ops.values()), ops


async def test_enabled_false_disables_the_breaker(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = fast_config(circuitBreaker={"telegram": {"enabled": False, "failureThreshold": 1}}, retry=NO_RETRY)
    async with connected(make_settings(standin, tmp_path, **ONE_USER), config) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
        for i in range(3):
            assert (await call(client, "send_telegram_message", {"message": f"m{i}"}))["status"] == "queued"
        tg = await breaker(client)
    assert tg["state"] == "disabled" and tg["forced_by"] == "configuration (enabled: false)"
    assert sum(r.method == "sendMessage" for r in standin.requests) >= 3  # each attempted: none rejected


async def test_force_circuit_breaker_tool_and_status(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path, **ONE_USER)) as client:
        forced = await call(client, "force_circuit_breaker", {"component": "telegram", "state": "open"})
        assert {b["state"] for b in forced["breakers"]} == {"isolated"}
        tg = await breaker(client)
        held = await call(client, "send_telegram_message", {"message": "while isolated"})
        status = await call(client, "get_resilience_status")
        await call(client, "force_circuit_breaker", {"component": "telegram", "state": "closed"})
        sent = await call(client, "send_telegram_message", {"message": "closed again"})
        await call(client, "force_circuit_breaker", {"component": "telegram", "state": "disabled"})
        disabled = await breaker(client)
        await call(client, "force_circuit_breaker", {"component": "telegram", "state": "reset"})
        reset = await breaker(client)
        with anyio.fail_after(15):
            bad = await client.call_tool("force_circuit_breaker", {"component": "telegram", "state": "half_open"})
    assert tg["state"] == "isolated" and tg["forced_by"] == "tool force_circuit_breaker"
    assert held["status"] == "queued" and "isolated" in held["reason"]
    assert any("forced by tool force_circuit_breaker" in issue for issue in status["active_issues"])
    assert sent["status"] == "delivered"
    assert disabled["state"] == "disabled" and disabled["forced_by"] == "tool force_circuit_breaker"
    assert reset["state"] == "closed" and reset["forced_by"] is None and reset["transitions"] == 0
    assert bad.is_error and "state" in text_of(bad)


@pytest.mark.parametrize("component", ["filesystem", "network", "bridge"])
async def test_force_refuses_a_component_no_call_goes_through(
    standin: TelegramStandIn, tmp_path: Path, component: str
) -> None:
    """Direct mode: only telegram's breakers guard calls; forcing another would change nothing."""
    async with connected(make_settings(standin, tmp_path, **ONE_USER)) as client:
        with anyio.fail_after(15):
            bad = await client.call_tool("force_circuit_breaker", {"component": component, "state": "open"})
        status = await call(client, "get_resilience_status")
    assert bad.is_error and f"unknown component {component!r}; valid: telegram." in text_of(bad), text_of(bad)
    assert not any(b["state"] == "isolated" for b in status["breakers"])


async def test_library_client_forces_the_breaker(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with ResilientBridgeClient(environ=standin.server_env(tmp_path, USERS)) as client:
        stats = await client.force_circuit_breaker_state("telegram", "open")
        status = await client.get_resilience_status()
        queued = await client.send_message("held")
        await client.force_circuit_breaker_state("telegram", "closed")
        sent = await client.send_message("goes")
    assert {s.state.value for s in stats} == {"isolated"}
    tg = next(b for b in status.breakers if b.name == "telegram")
    assert (tg.state, tg.forced_by) == ("isolated", "library client")
    assert queued.status == "queued" and sent.status == "delivered"


async def test_operation_override_breaker_is_live(standin: TelegramStandIn, tmp_path: Path) -> None:
    """The seed's sendPerformanceAlert breaker (failureThreshold 2): its own breaker, tripped by alerts."""
    config = parse_resilience_config(
        {
            **FAST,
            "circuitBreaker": {"telegram": {"failureThreshold": 50, "volumeThreshold": 1, **SLOW}},
            "retry": NO_RETRY,
            "operations": {"sendPerformanceAlert": {"circuitBreaker": {"failureThreshold": 2}}},
        }
    )
    alert = {"title": "CPU", "current_value": 95, "threshold": 80}
    async with connected(make_settings(standin, tmp_path, **ONE_USER), config) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
        for _ in range(2):
            assert (await call(client, "send_performance_alert", alert))["status"] == "queued"
        alerts = await breaker(client, "telegram.sendPerformanceAlert")
        tg = await breaker(client)
        health = await call(client, "get_health_report", {"component": "telegram_breaker", "refresh": True})
        standin.clear_fault()
        run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "circuit_breaker"})
        after = await breaker(client, "telegram.sendPerformanceAlert")
    assert alerts["state"] == "open" and alerts["failures"] == 2
    assert tg["state"] == "closed" and tg["failures"] == 0
    # the component's health speaks for its worst breaker; recovery closes the operation's too
    (component,) = [c for c in health["components"] if c["name"] == "telegram_breaker"]
    assert component["status"] != "healthy" and "telegram.sendPerformanceAlert is open" in component["message"]
    assert "breaker telegram.sendPerformanceAlert open → closed" in run["sessions"][0]["attempts"][0]["detail"], run
    assert after["state"] == "closed" and after["forced_by"] == "recovery"


@pytest.mark.parametrize(("priority", "expected"), [(None, "queued"), ("critical", "delivered")])
async def test_event_priority_from_configuration_decides_degradation(
    standin: TelegramStandIn, tmp_path: Path, priority: str | None, expected: str
) -> None:
    """Degraded mode sends only high-priority events; events.info_notification.priority lifts a message."""
    events = {"info_notification": {"priority": priority}} if priority else {}
    config = fast_config(events=events)
    async with connected(make_settings(standin, tmp_path, **ONE_USER), config) as client:
        run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "graceful_degradation"})
        assert run["sessions"][0]["status"] == "mitigated", run  # the lever is on (never a success)
        result = await call(client, "send_telegram_message", {"message": "info"})
    assert result["status"] == expected


async def test_recovery_closes_every_open_breaker_of_the_component(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = parse_resilience_config(
        {
            **FAST,
            "circuitBreaker": {"telegram": {"failureThreshold": 1, "volumeThreshold": 1, **SLOW}},
            "retry": NO_RETRY,
            "operations": {"sendPerformanceAlert": {"circuitBreaker": {"successThreshold": 3}}},
        }
    )
    alert = {"title": "CPU", "current_value": 95, "threshold": 80}
    async with connected(make_settings(standin, tmp_path, **ONE_USER), config) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
        assert (await call(client, "send_telegram_message", {"message": "m"}))["status"] == "queued"
        assert (await call(client, "send_performance_alert", alert))["status"] == "queued"
        before = [(await breaker(client, n))["state"] for n in ("telegram", "telegram.sendPerformanceAlert")]
        standin.clear_fault()
        run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "circuit_breaker"})
        after = [(await breaker(client, n))["state"] for n in ("telegram", "telegram.sendPerformanceAlert")]
    assert before == ["open", "open"] and after == ["closed", "closed"]
    detail = run["sessions"][0]["attempts"][0]["detail"]
    assert "breaker telegram open → closed" in detail and "also closed telegram.sendPerformanceAlert" in detail
