"""Recovery end to end: a real mcp.Client against the server, the stand-in failing and recovering;
and a SIGTERM to ``cctg-mcp serve`` (a subprocess) that exits cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import INIT, USERS, call, connected, fast_config, make_settings, read_line, text_of

from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import Event
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

#: A breaker that stays open until someone acts (so recovery, not the clock, closes it).
CONFIG = fast_config(
    circuitBreaker={
        "telegram": {"failureThreshold": 2, "volumeThreshold": 2, "successThreshold": 2, "timeout": 600_000}
    },
    health={"enabled": False},
    recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 2},
)


async def test_tools_are_listed_with_honest_annotations(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    trigger, history = tools["trigger_recovery"], tools["get_recovery_history"]
    assert trigger.annotations is not None and history.annotations is not None
    a = trigger.annotations
    # Open world (it talks to Telegram or the bridge) and destructive (restart ends a process, outbox
    # retry resends dead deliveries); tests/test_toolsets.py pins every tool's hints.
    assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint) == (False, True, False, True)
    assert history.annotations.read_only_hint is True
    strategies = trigger.input_schema["properties"]["strategy"]
    assert "circuit_breaker" in json.dumps(strategies) and "graceful_degradation" in json.dumps(strategies)
    assert trigger.output_schema is not None and history.output_schema is not None


async def test_trigger_recovery_closes_an_open_breaker_after_the_fault_is_fixed(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502)
        queued = await call(client, "send_telegram_message", {"message": "during the outage"})
        assert queued["status"] == "queued"
        status = await call(client, "get_resilience_status")
        assert next(b for b in status["breakers"] if b["name"] == "telegram")["state"] == "open"
        standin.clear_fault()
        run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "circuit_breaker"})
        (session,) = run["sessions"]
        assert session["status"] == "succeeded" and session["attempts"][0]["strategy"] == "circuit_breaker"
        assert "open → closed" in session["attempts"][0]["detail"]
        sent = await call(client, "send_telegram_message", {"message": "after recovery"})
        assert sent["status"] == "delivered"
        await standin.await_messages(2 * len(USERS), timeout=10)  # the queued one followed
        history = await call(client, "get_recovery_history", {"limit": 5})
        status = await call(client, "get_resilience_status")
    assert [s["id"] for s in history["sessions"]] == [session["id"]]
    assert history["statistics"]["succeeded"] == 1 and history["statistics"]["success_rate"] == 1.0
    assert status["recovery"]["statistics"]["sessions"] == 1 and session["id"] in status["recovery"]["last_session"]


async def test_requeue_dead_letters_through_the_outbox_component(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        standin.set_fault(FaultMode.FORBIDDEN)
        with anyio.fail_after(15):
            blocked = await client.call_tool("send_telegram_message", {"message": "blocked"})
        assert blocked.is_error and "Start" in text_of(blocked)
        standin.clear_fault()
        run = await call(client, "trigger_recovery", {"component": "outbox", "strategy": "retry"})
        await standin.await_messages(len(USERS), timeout=10)
        status = await call(client, "get_resilience_status")
    assert run["sessions"][0]["status"] == "succeeded"
    outbox = status["outbox"]  # Telegram has both; a row may still be settling (in_flight -> delivered)
    assert outbox["dead"] == 0 and outbox["pending"] == 0 and outbox["delivered"] + outbox["in_flight"] == len(USERS)


@pytest.mark.parametrize("passes", [1, 2])
async def test_after_trigger_recovery_the_status_verdict_is_current_not_the_cached_one(
    standin: TelegramStandIn, tmp_path: Path, passes: int
) -> None:
    """The health report is cached between intervals (an hour here): a recovery that closed the
    breaker must not leave get_resilience_status saying unhealthy from the report before it.
    With recoveryThreshold 2 one passing check is not yet healthy: the verdict says recovering."""
    config = fast_config(
        circuitBreaker={
            "telegram": {"failureThreshold": 2, "volumeThreshold": 2, "successThreshold": 2, "timeout": 600_000}
        },
        health={"interval": 3_600_000, "gracePeriod": 0, "failureThreshold": 1, "recoveryThreshold": passes},
        recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 2, "autoRecoveryEnabled": False},
    )
    async with connected(make_settings(standin, tmp_path), config) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502)
        assert (await call(client, "send_telegram_message", {"message": "during the outage"}))["status"] == "queued"
        before = await call(client, "get_resilience_status", {"refresh": True})
        standin.clear_fault()
        run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "circuit_breaker"})
        after = await call(client, "get_resilience_status")  # no refresh: what the agent reads next
    assert before["overall"] == "unhealthy", before["verdict_reason"]
    assert run["sessions"][0]["status"] == "succeeded"
    if passes == 1:
        assert after["overall"] == "healthy", after["verdict_reason"]
    else:
        assert after["overall"] == "degraded"
        assert after["verdict_reason"] == (
            "a component is impaired: telegram (recovering: its last check passed, 1 of 2 in a row), "
            "telegram_breaker (recovering: its last check passed, 1 of 2 in a row)"
        )


async def test_manual_returns_steps_and_escalate_alerts_the_person(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        manual = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "manual"})
        manual = manual["sessions"][0]
        escalate = (await call(client, "trigger_recovery", {"strategy": "escalate"}))["sessions"][0]
    assert manual["status"] == "escalated" and manual["needs_person"] and manual["steps"]
    assert escalate["component"] == "telegram" and escalate["status"] == "escalated"
    assert sorted(m.chat_id for m in standin.sent) == sorted(USERS)
    assert all("needs attention" in m.text for m in standin.sent)


async def test_default_target_is_the_delivery_component_and_unknown_is_an_error(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        run = await call(client, "trigger_recovery")
        with anyio.fail_after(15):
            bad = await client.call_tool("trigger_recovery", {"component": "toaster"})
        with anyio.fail_after(15):
            bad_strategy = await client.call_tool("trigger_recovery", {"strategy": "pray"})
    (session,) = run["sessions"]
    assert (session["component"], session["strategy"], session["status"]) == ("telegram", "retry", "succeeded")
    assert bad.is_error and "toaster" in text_of(bad) and "telegram" in text_of(bad) and "outbox" in text_of(bad)
    assert bad_strategy.is_error and standin.sent == []


async def test_without_a_token_recovery_says_not_configured(tmp_path: Path) -> None:
    async with connected(make_settings(None, tmp_path, CCTG_DELIVERY="telegram"), CONFIG) as client:
        with anyio.fail_after(15):
            result = await client.call_tool("trigger_recovery", {})
    assert result.is_error and "not configured" in text_of(result) and "TELEGRAM_BOT_TOKEN" in text_of(result)


# ---- graceful shutdown ---------------------------------------------------------------------


def _rpc(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(message) + "\n").encode())
    proc.stdin.flush()


async def _seed_and_count(path: Path, seed: bool) -> Any:
    box = await Outbox.open(path)
    try:
        if seed:
            event = Event(event_id="queued-1", type="info_notification", title="t", description="queued", task_id="q1")
            await box.enqueue(event, [USERS[0]])
        return await box.counts()
    finally:
        await box.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_exits_zero_and_returns_in_flight_rows(tmp_path: Path, backend: str) -> None:
    outbox_path = tmp_path / "data" / "outbox.sqlite3"
    anyio.run(_seed_and_count, outbox_path, True)
    with TelegramStandIn(max_hang=60) as standin:
        standin.set_fault(FaultMode.HANG, methods={"sendMessage"})  # the dispatcher's send stays in flight
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "CCTG_ENVIRONMENT": "development",
            **standin.server_env(tmp_path / "data", [USERS[0]]),
            "CCTG_CONFIG": str(tmp_path / "resilience.json"),  # the drain waits at most this long
        }
        (tmp_path / "resilience.json").write_text(json.dumps({"recovery": {"gracefulShutdownTimeout": 1500}}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "cctg_mcp", "serve", "--backend", backend],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _rpc(proc, INIT)
            assert proc.stdout is not None and b'"id":1' in read_line(proc.stdout).replace(b" ", b"")
            assert standin.wait_until(lambda: standin.hanging >= 1, timeout=30), "the send never reached Telegram"
            assert anyio.run(_seed_and_count, outbox_path, False).in_flight == 1
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    assert code == 0, stderr[-2000:]
    assert took < 10 and "SIGTERM received" in stderr
    final = anyio.run(_seed_and_count, outbox_path, False)
    assert (final.pending, final.in_flight, final.delivered) == (1, 0, 0)
