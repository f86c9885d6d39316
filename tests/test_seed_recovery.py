"""Seed recovery knobs through the running service: restartDelay before a restart, the bridge's
own health check deciding a bridge recovery (never a success by default)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers import fast_config, make_settings, present

from cctg_mcp.app import open_service
from cctg_mcp.resilience.errors import RecoveryStrategy
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_a_restart_waits_restart_delay_first(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = fast_config(
        health={"enabled": False}, recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1, "restartDelay": 300}
    )
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        service = runtime.service
        assert present(service.supervisor).kill(hold=True)
        with anyio.fail_after(10):
            await present(service.supervisor).wait_stopped()
        session = await present(runtime.recovery).recover("dispatcher")
        telegram = await present(runtime.recovery).recover("telegram", strategy=RecoveryStrategy.RESTART)
    (attempt,) = session.attempts
    assert attempt.strategy == RecoveryStrategy.RESTART and session.status == "succeeded"
    assert "after restartDelay 0.3s" in attempt.detail and attempt.duration_s >= 0.3
    (rebuilt,) = telegram.attempts
    assert telegram.status == "succeeded" and "rebuilt after restartDelay 0.3s" in rebuilt.detail
    assert rebuilt.duration_s >= 0.3


async def test_bridge_recovery_is_decided_by_the_bridge_health_check(tmp_path: Path) -> None:
    settings = make_settings(
        None, tmp_path, CCTG_DELIVERY="bridge", CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health"
    )
    config = fast_config(
        health={"enabled": False},
        recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 2, "backupStrategies": []},
    )
    async with open_service(settings, resilience=config) as runtime:
        retried = await present(runtime.recovery).recover("bridge", strategy=RecoveryStrategy.RETRY)
    assert retried.status == "failed"  # nothing answers on the bridge's /health: not a success
    assert all("bridge check failed: BRIDGE_UNHEALTHY" in a.detail for a in retried.attempts), retried.attempts
