"""Issue 13, item 4: a recovery is `succeeded` only when a check of its effect passed.

Through the real server (in memory) and the loopback stand-in: fallback while Telegram fails
is `mitigated` and stays open until the health monitor sees Telegram healthy again; an act
nothing can check is `unverified`; the bridge's retry checks the bridge's /health; the success
rate and the time to recover count verified recoveries only."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers import call, connected, fast_config, make_settings

from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

#: Health checks only on demand (refresh), one failure is unhealthy, one success healthy again.
HEALTH = {"interval": 600_000, "gracePeriod": 600_000, "failureThreshold": 1, "recoveryThreshold": 1}
CONFIG = fast_config(health=HEALTH, recovery={"recoveryDelay": 0, "autoRecoveryEnabled": False})


async def test_fallback_while_telegram_fails_is_mitigated_until_health_sees_it_healthy(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        with anyio.fail_after(30):
            standin.set_fault(FaultMode.SERVER_ERROR, status=502)
            await call(client, "get_health_report", {"refresh": True})  # telegram: unhealthy
            run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "fallback"})
            during = await call(client, "get_recovery_history", {})
            standin.clear_fault()
            await call(client, "get_health_report", {"refresh": True})  # telegram: healthy again
            while True:  # the monitor's listener closes the open session in the background
                after = await call(client, "get_recovery_history", {})
                if after["sessions"]:
                    break
                await anyio.sleep(0.1)
    (session,) = run["sessions"]
    assert session["status"] == "mitigated" and session["ended_at"] is None
    assert session["attempts"][-1]["outcome"] == "mitigated" and "mitigated" in run["message"]
    stats = during["statistics"]
    assert (stats["mitigated"], stats["in_progress"], stats["succeeded"]) == (1, 1, 0)
    assert stats["success_rate"] is None and stats["mean_time_to_recover_s"] is None
    assert [s["id"] for s in during["active"]] == [session["id"]] and during["sessions"] == []
    (closed,) = after["sessions"]
    assert (closed["id"], closed["status"]) == (session["id"], "succeeded")
    assert "health monitor reports telegram healthy again" in closed["summary"]
    stats = after["statistics"]
    assert (stats["succeeded"], stats["mitigated"], stats["success_rate"]) == (1, 0, 1.0)
    assert stats["mean_time_to_recover_s"] is not None and stats["mean_time_to_recover_s"] >= 0


async def test_an_act_nothing_checks_is_unverified_and_not_counted_as_success(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path), CONFIG) as client:
        with anyio.fail_after(30):
            run = await call(client, "trigger_recovery", {"component": "telegram", "strategy": "ignore"})
    (session,) = run["sessions"]
    assert session["status"] == "unverified" and session["attempts"][0]["outcome"] == "unverified"
    stats = run["statistics"]
    assert (stats["succeeded"], stats["unverified"], stats["success_rate"]) == (0, 1, 0.0)
    assert stats["mean_time_to_recover_s"] is None


async def test_bridge_retry_checks_the_bridge_health_and_fails_when_it_is_down(tmp_path: Path) -> None:
    settings = make_settings(
        None,
        tmp_path,
        CCTG_DELIVERY="bridge",
        CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health",  # nothing listens on the discard port
    )
    config = fast_config(health=HEALTH, recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1, "backupStrategies": []})
    async with connected(settings, config) as client:
        with anyio.fail_after(30):
            run = await call(client, "trigger_recovery", {"component": "bridge", "strategy": "retry"})
    (session,) = run["sessions"]
    assert session["status"] == "failed", session
    assert "check failed" in session["attempts"][0]["detail"] and "127.0.0.1:9" in session["attempts"][0]["detail"]
    assert run["statistics"]["success_rate"] == 0.0
