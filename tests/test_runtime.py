"""The runtime app.py builds is whole and frozen: nothing can be attached or swapped later."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import fast_config, make_settings

from cctg_mcp.app import open_service
from cctg_mcp.delivery.service import NotConfiguredError
from cctg_mcp.resilience.chaos import ChaosController
from cctg_mcp.resilience.health import HealthMonitor
from cctg_mcp.resilience.recovery import RecoveryManager
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_a_configured_runtime_has_every_part_and_refuses_changes(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with open_service(make_settings(standin, tmp_path), resilience=fast_config()) as runtime:
        service = runtime.service
        parts = (service.outbox, service.dispatcher, service.transport, service.coordinator, service.supervisor)
        assert all(part is not None for part in parts)
        assert service.answers is not None and service.mode is not None and service.bridge is not None
        assert isinstance(runtime.health, HealthMonitor) and isinstance(runtime.recovery, RecoveryManager)
        assert isinstance(runtime.chaos, ChaosController)  # development: chaos runs
        with pytest.raises(dataclasses.FrozenInstanceError):
            runtime.health = None  # type: ignore[misc]
        with pytest.raises(AttributeError, match=r"built whole by app\.py; transport cannot be assigned"):
            service.transport = None
        with pytest.raises(AttributeError, match="cannot be assigned"):
            service.answers = None


async def test_an_unconfigured_runtime_runs_nothing_and_says_so_for_every_use_case(tmp_path: Path) -> None:
    async with open_service(make_settings(None, tmp_path), resilience=fast_config()) as runtime:
        service = runtime.service
        assert (runtime.health, runtime.recovery, runtime.chaos) == (None, None, None)
        assert (service.outbox, service.dispatcher, service.answers) == (None, None, None)
        with pytest.raises(NotConfiguredError) as sent:
            await service.submit(service.message_event("hello"))
    assert str(sent.value) == str(service.not_configured())
    assert str(sent.value).startswith("cctg-mcp is not configured, so nothing was sent or stored.")
