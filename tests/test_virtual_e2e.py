"""Outage, recovery and drain through the whole server, in virtual time.

The server is the real one (``open_service``: outbox on a SQLite file, dispatcher and its
supervisor, pipeline, pacer, coordinator, health monitor, recovery manager) behind a real
in-memory ``mcp.Client``; Telegram is the stand-in's Bot API in this process
(``tests/inprocess.py``), and everything waits on one ``FakeClock`` under ``autojump()``. So
the timings are the production ones (a 30-second breaker timeout, exponential retry backoff,
a 30-second health interval, a 429's retry_after) and each test asserts *when* things
happened, to the virtual second, in no wall time. The loopback tests keep what needs a socket.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from helpers import USERS, call
from inprocess import World, in_virtual_time

from cctg_mcp.resilience.config import parse_resilience_config
from cctg_mcp.resilience.config_tables import DEFAULTS as SEED
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

#: The production defaults (the seed's tables), in development (chaos on) and without retry
#: jitter, so every run takes the same virtual path.
DEFAULTS: dict[str, Any] = {"environment": "development", "retry": {"telegram": {"jitterEnabled": False}}}
#: The telegram breaker's open timeout, from the seed's table (15 s).
BREAKER_TIMEOUT_S = SEED["circuitBreaker"]["telegram"]["timeout"] / 1000


def world(tmp_path: Path, config: dict[str, Any] | None = None, **env: str) -> AbstractAsyncContextManager[World]:
    return in_virtual_time(tmp_path, parse_resilience_config({**DEFAULTS, **(config or {})}), **env)


async def test_an_outage_opens_the_breaker_queues_every_send_and_the_backlog_drains_after_it_heals(
    tmp_path: Path,
) -> None:
    """Production timings: the breaker opens after its failure threshold, nothing is attempted
    while it is open, its timeout lets a probe through, and the backlog drains, each message once."""
    async with world(tmp_path) as w:
        w.standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
        results = [await call(w.client, "send_telegram_message", {"message": f"outage {i}"}) for i in range(3)]
        assert [r["status"] for r in results] == ["queued"] * 3
        assert all(r["next_attempt_at"] for r in results)
        opened_after = await w.until("the breaker opens", lambda: _state(w, "open"), within=120)
        tg = await w.breaker()
        assert tg["state"] == "open" and 0 < tg["retry_after_s"] <= BREAKER_TIMEOUT_S
        assert await w.backlog() == 3 * len(USERS)
        attempts_when_open = _sends(w.standin)
        await w.clock.sleep(tg["retry_after_s"] - 1.0)  # still inside its timeout: nothing reaches Telegram
        assert _sends(w.standin) == attempts_when_open
        w.standin.clear_fault()
        healed_at = w.clock.monotonic()
        drained = await w.until("the backlog drains", lambda: _delivered(w.standin, 3), within=180)
        assert await w.backlog() == 0
        tg = await w.breaker()
    assert opened_after == 0.0  # the third failure opened it while the sends were answered
    assert tg["state"] == "closed"
    assert drained <= 10.0, drained
    for user in USERS:
        said = sorted(m.plain_text.split("\n")[2] for m in w.standin.messages_for(user))
        assert said == [f"outage {i}" for i in range(3)], said  # each once, none lost
    # Healed with one second of the breaker's timeout left: nothing went out before it ran
    # out, and the backlog followed the probe at once (not at the next idle poll).
    first = min(m.at for m in w.standin.sent)
    assert 0.95 <= first - healed_at <= 1.5, first - healed_at


async def test_trigger_recovery_drains_the_backlog_long_before_the_breaker_would_heal(tmp_path: Path) -> None:
    # ten minutes open, and no automatic recovery (the health test shows that one)
    config = {"circuitBreaker": {"telegram": {"timeout": 600_000}}, "recovery": {"autoRecoveryEnabled": False}}
    async with world(tmp_path, config) as w:
        w.standin.set_fault(FaultMode.SERVER_ERROR, status=503, methods={"sendMessage"})
        for i in range(2):
            assert (await call(w.client, "send_telegram_message", {"message": f"m{i}"}))["status"] == "queued"
        assert (await w.breaker())["state"] == "open"
        await w.clock.sleep(60.0)
        w.standin.clear_fault()
        await w.clock.sleep(60.0)  # healed, but the breaker still holds for eight more minutes
        assert not w.standin.sent and await w.backlog() == 2 * len(USERS)
        asked = w.clock.monotonic()
        run = await call(w.client, "trigger_recovery", {"component": "telegram", "strategy": "circuit_breaker"})
        drained = await w.until("the backlog drains", lambda: _delivered(w.standin, 2), within=60)
        status = await w.status()
    (session,) = run["sessions"]
    assert session["status"] == "succeeded", session  # a check of its effect passed (getMe)
    assert drained <= 0.5 and min(m.at for m in w.standin.sent) - asked <= 0.5  # at once (one poll step)
    assert status["overall"] != "unhealthy" and status["outbox"]["pending"] == 0


async def test_a_429_retry_after_is_honoured_to_the_second(tmp_path: Path) -> None:
    async with world(tmp_path, TELEGRAM_ALLOWED_USERS=str(USERS[0])) as w:
        w.standin.set_fault(FaultMode.RATE_LIMIT, retry_after=45, methods={"sendMessage"}, count=1)
        told = w.clock.monotonic()
        result = await call(w.client, "send_telegram_message", {"message": "slow down"})
        paused = (await w.status())["sending_paused_for_s"]
        await w.until("it is delivered", lambda: _delivered_to(w.standin, USERS[0], 1), within=120)
    assert result["status"] == "queued" and result["retry_in_seconds"] == pytest.approx(45.0, abs=0.5), result
    assert paused == pytest.approx(45.0, abs=0.5), paused
    (message,) = w.standin.messages_for(USERS[0])
    assert 45.0 <= message.at - told <= 45.5, message.at - told  # not before Telegram allowed, nor later
    assert sum(r.method == "sendMessage" for r in w.standin.requests) == 2  # the refused one and the delivery


async def test_the_health_monitor_finds_the_outage_and_its_end_on_its_own_interval(tmp_path: Path) -> None:
    """No refresh: the monitor's own 30 s interval after its 10 s grace period. getMe fails from
    the start; telegram is unhealthy after failureThreshold (3) checks and healthy again after
    recoveryThreshold (2) passing ones; automatic recovery runs when it turns unhealthy."""
    async with world(tmp_path) as w:
        w.standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"getMe"})
        down = await w.until("telegram is unhealthy", lambda: _health(w, "telegram", "unhealthy"), within=300)
        report = await call(w.client, "get_health_report", {"component": "telegram"})
        status = await w.status()
        w.standin.clear_fault()
        up = await w.until("telegram is healthy", lambda: _health(w, "telegram", "healthy"), within=300)
        history = await call(w.client, "get_recovery_history", {})
    (tg,) = report["components"]
    assert tg["consecutive_failures"] == 3 and "502" in (tg["last_error"] or "")
    # grace 10 s, then checks at 10, 40 and 70 s: unhealthy at the third failure
    assert down == pytest.approx(70.0, abs=0.5), down
    # a critical component unhealthy: the one verdict says so and the channel is not ready
    assert status["overall"] == "unhealthy" and status["ready"] is False, status["verdict_reason"]
    # two passing checks in a row: at 100 and 130 s
    assert up == pytest.approx(60.0, abs=0.5), up
    sessions = history["sessions"] + history["active"]
    assert any(s["component"] == "telegram" and s["trigger"] == "health" for s in sessions), sessions


def _sends(standin: TelegramStandIn) -> int:
    return sum(r.method == "sendMessage" for r in standin.requests)


def _delivered(standin: TelegramStandIn, per_user: int) -> bool:
    return all(len(standin.messages_for(u)) >= per_user for u in USERS)


def _delivered_to(standin: TelegramStandIn, user: int, n: int) -> bool:
    return len(standin.messages_for(user)) >= n


async def _health(w: World, component: str, status: str) -> bool:
    report = await call(w.client, "get_health_report", {"component": component})
    found: str = report["components"][0]["status"]
    return found == status


async def _state(w: World, state: str) -> bool:
    found: str = (await w.breaker())["state"]
    return found == state
