"""Recovery answers say only what was observed (review findings on ops/recovery.py).

A real service over the loopback stand-in and a real SQLite outbox: the circuit_breaker
strategy is verified only when every breaker of the component ended closed; an outbox retry
with nothing dead is unverified; Telegram's 429 pause ends early only when someone asked; a
duplicate escalation says whether the first alert went out; details name what was there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, fast_config, make_settings, present

from cctg_mcp.app import open_service
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.ops.recovery import RecoveryActions
from cctg_mcp.resilience.breaker import BreakerState
from cctg_mcp.resilience.errors import RecoveryStrategy as S
from cctg_mcp.resilience.recovery import RecoveryRequest
from cctg_mcp.runtime import Runtime
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

#: sendMessage keeps a breaker of its own, so telegram has two breakers (component + operation).
OWN = {"failureThreshold": 2, "volumeThreshold": 2, "successThreshold": 1, "timeout": 600_000}


def config(**extra: Any) -> Any:
    operations = {"sendMessage": {"timeout": 2000, "circuitBreaker": {**OWN, "failureThreshold": 3}}}
    return fast_config(
        circuitBreaker={"telegram": OWN},
        operations=operations,
        health={"enabled": False},
        recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1, "backupStrategies": []},
        **extra,
    )


@pytest.fixture
async def runtime(standin: TelegramStandIn, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with open_service(make_settings(standin, tmp_path), resilience=config()) as runtime:
        yield runtime


@pytest.fixture
def service(runtime: Runtime) -> NotificationService:
    return runtime.service


def request(component: str, strategy: S, *, trigger: str = "tool") -> RecoveryRequest:
    return RecoveryRequest(component, None, 1, 0, "rec-test", strategy, None, None, trigger)


def breakers(service: NotificationService) -> dict[str, Any]:
    assert service.pipelines is not None
    return service.pipelines.for_component("telegram").breakers


async def test_circuit_breaker_is_not_verified_while_a_sibling_stays_isolated(service: NotificationService) -> None:
    found = breakers(service)
    assert "telegram.sendMessage" in found and len(found) >= 2
    for breaker in found.values():
        breaker.isolate(by="test")
    actions = RecoveryActions(service)
    with anyio.fail_after(10):
        # the chosen (worst) breaker was isolated: the person released it, so its isolated sibling goes too
        outcome = await actions.circuit_breaker(request("telegram", S.CIRCUIT_BREAKER))
    assert outcome.kind == "succeeded", outcome.detail
    assert {b.state for b in found.values()} == {BreakerState.CLOSED}
    assert "also closed" in outcome.detail and "telegram.sendMessage" in outcome.detail


async def test_circuit_breaker_fails_when_an_isolated_sibling_is_left(service: NotificationService) -> None:
    found = breakers(service)
    found["telegram.sendMessage"].isolate(by="test")
    actions = RecoveryActions(service)
    chosen = actions._breaker("telegram")
    assert chosen is not None and chosen.name == "telegram.sendMessage"  # the worst one is chosen
    # Choose the closed component breaker by hand: its check passes, but the sibling stays isolated.
    actions._breaker = lambda fam: found["telegram"]  # type: ignore[method-assign]
    with anyio.fail_after(10):
        outcome = await actions.circuit_breaker(request("telegram", S.CIRCUIT_BREAKER))
    assert outcome.kind == "failed", outcome.detail
    assert "still not closed: telegram.sendMessage isolated" in outcome.detail
    assert found["telegram.sendMessage"].state is BreakerState.ISOLATED


async def test_outbox_retry_with_nothing_dead_is_unverified(service: NotificationService) -> None:
    assert service.outbox is not None and (await service.outbox.counts()).dead == 0
    with anyio.fail_after(10):
        outcome = await RecoveryActions(service).retry(request("outbox", S.RETRY))
    assert outcome.kind == "unverified", outcome.detail
    assert "requeued 0 dead" in outcome.detail and "nothing was dead" in outcome.detail


async def test_outbox_retry_that_requeues_dead_rows_is_verified(
    service: NotificationService, standin: TelegramStandIn
) -> None:
    standin.set_fault(FaultMode.FORBIDDEN)
    with pytest.raises(Exception, match="press Start"):
        await service.submit(service.build_event(type="info_notification", title="t", description="d"))
    standin.clear_fault()
    with anyio.fail_after(10):
        outcome = await RecoveryActions(service).retry(request("outbox", S.RETRY))
    assert outcome.kind == "succeeded" and f"requeued {len(USERS)} dead" in outcome.detail


async def test_a_health_triggered_retry_leaves_the_429_pause_and_says_how_long(service: NotificationService) -> None:
    assert service.dispatcher is not None
    pacer = service.dispatcher.pacer
    pacer.pause(120)
    with anyio.fail_after(10):
        outcome = await RecoveryActions(service).retry(request("telegram", S.RETRY, trigger="health"))
    assert pacer.paused_for() > 100  # still paused for every process
    assert "429 pause still has" in outcome.detail and "ended a 429 pause" not in outcome.detail


@pytest.mark.parametrize("trigger", ["tool", "api"])
async def test_a_retry_someone_asked_for_ends_the_429_pause(service: NotificationService, trigger: str) -> None:
    assert service.dispatcher is not None
    pacer = service.dispatcher.pacer
    pacer.pause(120)
    with anyio.fail_after(10):
        outcome = await RecoveryActions(service).retry(request("telegram", S.RETRY, trigger=trigger))
    assert pacer.paused_for() == 0
    assert "ended a 429 pause that had" in outcome.detail


async def test_the_manager_passes_who_asked_to_the_strategy(runtime: Runtime, service: NotificationService) -> None:
    assert service.dispatcher is not None
    service.dispatcher.pacer.pause(120)
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.RETRY, trigger="health")
    assert "429 pause still has" in session.attempts[0].detail
    assert service.dispatcher.pacer.paused_for() > 100


async def test_a_duplicate_escalation_of_a_dead_alert_does_not_claim_it_was_sent(
    service: NotificationService, standin: TelegramStandIn
) -> None:
    standin.set_fault(FaultMode.FORBIDDEN, methods={"sendMessage"})
    actions = RecoveryActions(service)
    with anyio.fail_after(10):
        first = await actions.escalate(request("telegram", S.ESCALATE))
        again = await actions.escalate(request("telegram", S.ESCALATE))
    assert first.kind == "failed" and first.detail.startswith("could not alert")
    assert again.kind == "failed", again.detail
    assert "not delivered to every recipient (dead)" in again.detail and "already sent" not in again.detail


async def test_a_duplicate_escalation_of_a_queued_alert_does_not_claim_it_was_sent(
    service: NotificationService, standin: TelegramStandIn
) -> None:
    assert service.dispatcher is not None
    service.dispatcher.paused = True  # hold the dispatcher so the queued rows stay queued
    standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
    actions = RecoveryActions(service)
    with anyio.fail_after(10):
        first = await actions.escalate(request("telegram", S.ESCALATE))
        again = await actions.escalate(request("telegram", S.ESCALATE))
    assert first.kind == "failed" and "queued" in first.detail
    assert again.kind == "failed", again.detail
    assert "not delivered to every recipient (queued)" in again.detail and "already sent" not in again.detail


async def test_a_duplicate_escalation_of_a_sent_alert_says_so(service: NotificationService) -> None:
    actions = RecoveryActions(service)
    with anyio.fail_after(10):
        first = await actions.escalate(request("telegram", S.ESCALATE))
        again = await actions.escalate(request("telegram", S.ESCALATE))
    assert first.kind == "succeeded" and "alert sent to 2" in first.detail
    assert again.kind != "failed" and f"already sent to {len(USERS)} recipient(s)" in again.detail


async def test_without_a_check_a_closed_breaker_is_not_said_to_probe(service: NotificationService) -> None:
    without = NotificationService(  # the same parts, but no Bot API client: telegram has no check now
        service.settings,
        service.outbox,
        service.dispatcher,
        clock=service.clock,
        pipelines=service.pipelines,
        metrics=service.metrics,
        resilience=service.resilience,
    )
    actions = RecoveryActions(without)
    with anyio.fail_after(10):
        outcome = await actions.circuit_breaker(request("telegram", S.CIRCUIT_BREAKER))
    assert "probe" not in outcome.detail and "closed → closed" in outcome.detail, outcome.detail


async def test_escalate_in_bridge_mode_names_bridge_delivery(tmp_path: Path) -> None:
    settings = make_settings(None, tmp_path, CCTG_DELIVERY="bridge")
    async with open_service(settings, resilience=config()) as runtime:
        service = runtime.service
        with anyio.fail_after(10):
            outcome = await RecoveryActions(service).escalate(request("telegram", S.ESCALATE))
    assert outcome.detail == "could not alert: bridge delivery: no direct Telegram transport"
