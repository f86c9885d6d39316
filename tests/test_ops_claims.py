"""Operations answers say only what is true (review findings on ops/: verdict, health, status).

A real service over the loopback stand-in: with health monitoring disabled the verdict says
nothing is checked (not "the first checks have not run yet" forever); with resilience disabled
the breaker check says calls bypass the breakers instead of "closed"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import fast_config, make_settings

from cctg_mcp.app import open_service
from cctg_mcp.ops import status as status_module
from cctg_mcp.ops import verdict as verdict_module
from cctg_mcp.ops.chaos import ServiceProbe
from cctg_mcp.ops.preflight import network_cause
from cctg_mcp.ops.status import resilience_status
from cctg_mcp.ops.verdict import verdict
from cctg_mcp.resilience.errors import NetworkError, TelegramServerError
from cctg_mcp.resilience.health import HealthMonitor
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_health_disabled_says_nothing_is_checked(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = fast_config(health={"enabled": False})
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        assert isinstance(runtime.health, HealthMonitor) and not runtime.health.settings.enabled
        seen = verdict(runtime)
    assert seen.overall == "unknown" and seen.configured
    assert seen.reason == "health monitoring is not running, so nothing is checked"


async def test_health_enabled_before_the_first_checks_is_not_said_to_be_off(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    config = fast_config(health={"interval": 600_000, "gracePeriod": 600_000})
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        seen = verdict(runtime)
    assert "health monitoring is not running" not in seen.reason


async def test_resilience_disabled_breaker_check_is_degraded_not_closed(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    config = fast_config(enabled=False, health={"interval": 600_000, "gracePeriod": 600_000})
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        assert isinstance(runtime.health, HealthMonitor)
        with anyio.fail_after(15):
            report = await runtime.health.check_now("telegram_breaker")
    component = report.component("telegram_breaker")
    assert component.status.value == "degraded", component
    message = component.message or ""
    assert "resilience disabled" in message and "is closed" not in message


async def test_chaos_recovery_in_direct_mode_walks_every_breaker_of_the_component(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """A per-operation breaker left open (here isolated) is not "recovered"."""
    config = fast_config(
        health={"enabled": False},
        operations={"sendMessage": {"timeout": 2000, "circuitBreaker": {"failureThreshold": 7}}},
    )
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        service = runtime.service
        assert service.pipelines is not None and service.transport is not None
        found = service.pipelines.for_component("telegram").breakers
        probe = ServiceProbe(service, service.transport, service.supervisor)  # type: ignore[arg-type]
        with anyio.fail_after(15):
            ok_before, seen_before = await probe.recovered(0.0)
            found["telegram.sendMessage"].isolate(by="test")
            ok, seen = await probe.recovered(0.0)
    assert ok_before and "breakers closed" in seen_before
    assert not ok and "the telegram.sendMessage breaker is isolated" in seen, seen


async def test_status_retries_count_the_per_event_executors_too(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = fast_config(
        health={"enabled": False},
        events={"performance_alert": {"retry": {"maxAttempts": 3, "baseDelay": 1, "jitterEnabled": False}}},
    )
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        service = runtime.service
        assert service.pipelines is not None
        pipe = service.pipelines.for_component("telegram")
        calls = 0

        async def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise TelegramServerError("Telegram sendMessage failed: 502 Bad Gateway", error_code=502)
            return "ok"

        with anyio.fail_after(15):
            assert await pipe.call("sendMessage", flaky, event_type="performance_alert") == "ok"
            status = await resilience_status(runtime)
        assert len(pipe.retries) > 1 and pipe.retry.statistics.retries == 0  # the event's own executor retried
    (telegram,) = [r for r in status.retries if r.component == "telegram"]
    assert (telegram.operations, telegram.retried_operations, telegram.retries) == (1, 1, 1)


async def test_status_reads_the_report_and_the_answers_once(
    standin: TelegramStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"report": 0, "answers": 0}
    real_report, real_answers = HealthMonitor.report, status_module.answers_summary  # type: ignore[attr-defined]

    def report(self: HealthMonitor, component: str | None = None) -> Any:
        counts["report"] += 1
        return real_report(self, component)

    def answers(service: Any, issues: list[str]) -> Any:
        counts["answers"] += 1
        return real_answers(service, issues)

    monkeypatch.setattr(HealthMonitor, "report", report)
    monkeypatch.setattr(status_module, "answers_summary", answers)
    monkeypatch.setattr(verdict_module, "answers_summary", answers)
    config = fast_config(health={"interval": 600_000, "gracePeriod": 600_000})
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        with anyio.fail_after(15):
            status = await resilience_status(runtime)
    assert counts == {"report": 1, "answers": 1}
    assert status.health is not None and status.health.overall == status.overall


@pytest.mark.parametrize(
    "message",
    ["[Errno -2] Name or service not known", "lookup api.example: no such host", "getaddrinfo failed"],
)
async def test_preflight_names_an_unresolved_host_the_same_way_for_every_resolver(message: str) -> None:
    """One table of resolver words: a name that does not resolve is never tried as a connect."""
    with anyio.fail_after(15):
        cause = await network_cause(NetworkError(message), "https://api.example.invalid/bot")
    assert cause.startswith("cannot resolve api.example.invalid: "), cause
