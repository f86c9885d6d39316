"""A hostile world, server-given waits: a 429 asking for 31 years is capped, logged, undone.

Telegram is the real stand-in over loopback HTTP; the outbox a real SQLite file."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import anyio
import pytest
from helpers import USERS, fast_config, make_settings

from cctg_mcp.app import open_service
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.errors import RecoveryStrategy
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

CONFIG = fast_config(health={"enabled": False}, recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1})
HUGE = 1_000_000_000  # ~31 years


def due_times(path: Path) -> list[float]:
    with sqlite3.connect(path) as conn:
        rows = [
            r[0] for r in conn.execute("SELECT next_attempt_at FROM deliveries WHERE status IN ('pending','in_flight')")
        ]
    conn.close()
    return rows


async def test_a_huge_retry_after_is_capped_logged_and_trigger_recovery_clears_the_pause(
    standin: TelegramStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(standin, tmp_path, CCTG_MAX_SERVER_WAIT="10m")
    assert settings.max_server_wait == 600
    with caplog.at_level(logging.WARNING, logger="cctg_mcp.transports.telegram"):
        async with open_service(settings, resilience=CONFIG) as runtime:
            service = runtime.service
            # One 429, to whichever send arrives first. (One per recipient raced: a copy held back
            # by the first pause met the second 429 after the recovery and paused again.)
            standin.set_fault(FaultMode.RATE_LIMIT, methods={"sendMessage"}, retry_after=HUGE, count=1)
            event = service.build_event(type="info_notification", title="t", description="after a huge 429")
            with anyio.fail_after(15):
                result = await service.submit(event)
            assert result.status == "queued"
            assert service.dispatcher is not None
            pacer = service.dispatcher.pacer
            assert 0 < pacer.paused_for() <= 600  # not 31 years
            # the refused copy is waiting (the other too if the pause held it back; either may be
            # leased by the background loop now); the pause holds them; no due time 31 years ahead
            dues = due_times(settings.outbox_path)
            assert 1 <= len(dues) <= len(USERS) and all(due <= time.time() + 600 + 1 for due in dues)
            assert runtime.recovery is not None
            with anyio.fail_after(15):
                session = await runtime.recovery.recover("telegram", strategy=RecoveryStrategy.RETRY)
                assert session.status == "succeeded", session
                assert pacer.paused_for() == 0
                assert "ended a 429 pause" in session.attempts[0].detail
                await standin.await_messages(len(USERS), timeout=10)
    capped = [r for r in caplog.records if "capped at 600 s" in r.getMessage()]
    assert len(capped) == 1 and "1e+09" in capped[0].getMessage()


async def test_a_due_time_years_ahead_is_brought_back_on_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    box = await Outbox.open(path)
    event = Event(event_id="ev-1", type="info_notification", title="t", description="d", task_id="t1")
    await box.enqueue(event, [USERS[0]])
    await box.close()
    with sqlite3.connect(path) as conn:  # what an older version stored after a 429 of 1e9 s
        conn.execute("UPDATE deliveries SET next_attempt_at=?", (time.time() + HUGE,))
    conn.close()
    box = await Outbox.open(path, max_due_s=3600)
    try:
        (due,) = due_times(path)
        assert due <= time.time() + 3600
        assert await box.retry_now() == 1  # what trigger_recovery does
        (claimed,) = await box.claim_due("t", 60)
        await box.release(claimed.id, "429 again", time.time() + HUGE)
        (due,) = due_times(path)
        assert due <= time.time() + 3600  # a new huge due time is capped when stored
    finally:
        await box.close()
