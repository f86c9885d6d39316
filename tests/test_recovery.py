"""Recovery manager (virtual time, scripted strategies) and the real recovery actions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, fast_config, make_settings, present

from cctg_mcp.app import open_service
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.events.catalogue import Event
from cctg_mcp.ops.recovery import RecoveryActions, family
from cctg_mcp.resilience.breaker import BreakerState
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.config import parse_resilience_config
from cctg_mcp.resilience.errors import (
    RecoveryStrategy,
    ResourceError,
    TelegramServerError,
    TelegramUnauthorized,
)
from cctg_mcp.resilience.health import CheckResult, HealthMonitor, HealthSettings, HealthStatus
from cctg_mcp.resilience.recovery import (
    RecoveryManager,
    RecoveryRequest,
    RecoverySettings,
    StrategyFn,
    StrategyOutcome,
    backup_strategy_of,
)
from cctg_mcp.runtime import Runtime
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio
S = RecoveryStrategy


class Script:
    """Strategy functions that answer from a script and record what they were asked."""

    def __init__(self, **script: list[bool]) -> None:
        self.script = {S(k): list(v) for k, v in script.items()}
        self.calls: list[RecoveryRequest] = []

    def fn(self, strategy: RecoveryStrategy) -> StrategyFn:
        async def run(req: RecoveryRequest) -> StrategyOutcome:
            self.calls.append(req)
            queue = self.script.get(strategy, [])
            ok = queue.pop(0) if queue else False
            return StrategyOutcome(ok, f"{strategy.value} {'ok' if ok else 'failed'}", verified=ok)

        return run

    def strategies(self) -> dict[RecoveryStrategy, StrategyFn]:
        return {s: self.fn(s) for s in RecoveryStrategy}

    @property
    def order(self) -> list[str]:
        return [c.strategy.value for c in self.calls]


def manager(script: Script, clock: FakeClock, **settings: Any) -> RecoveryManager:
    return RecoveryManager(RecoverySettings(**settings), clock=clock, strategies=script.strategies())


async def run_session(m: RecoveryManager, clock: FakeClock, component: str = "telegram", **kw: Any) -> Any:
    with anyio.fail_after(5):
        async with clock.autojump():
            return await m.recover(component, **kw)


def test_settings_from_config_are_the_seeds_defaults_in_seconds() -> None:
    s = RecoverySettings.from_config(parse_resilience_config({}).recovery)
    assert (s.max_recovery_attempts, s.recovery_delay, s.escalation_threshold) == (5, 5.0, 3)
    assert (s.graceful_shutdown_timeout, s.restart_delay, s.auto_recovery_enabled) == (30.0, 2.0, True)
    assert [(b.name, b.priority, b.strategy, b.timeout, b.max_attempts) for b in s.backup_strategies] == [
        ("bridge-restart", 1, S.RESTART, 15.0, 3),
        ("process-restart", 2, S.RESTART, 30.0, 2),
        ("fallback-mode", 3, S.FALLBACK, 5.0, 1),
    ]
    assert backup_strategy_of("graceful_degradation") is S.GRACEFUL_DEGRADATION
    assert backup_strategy_of("page-the-oncall") is None


async def test_fail_fail_succeed_stays_on_one_strategy_with_the_delay_between() -> None:
    clock, script = FakeClock(), Script(retry=[False, False, True])
    session = await run_session(manager(script, clock), clock)
    assert session.status == "succeeded"
    assert script.order == ["retry"] * 3
    assert [a.outcome for a in session.attempts] == ["failed", "failed", "succeeded"]
    assert [a.escalation_level for a in session.attempts] == [0, 0, 0]
    assert clock.sleeps == [5.0, 5.0]
    assert session.duration_s == pytest.approx(10.0)


async def test_escalates_along_the_order_after_the_threshold() -> None:
    clock, script = FakeClock(), Script(circuit_breaker=[False, True])
    session = await run_session(manager(script, clock, max_recovery_attempts=8), clock)
    assert script.order == ["retry", "retry", "retry", "circuit_breaker", "circuit_breaker"]
    assert [a.escalation_level for a in session.attempts] == [0, 0, 0, 1, 1]
    assert session.status == "succeeded" and session.escalation_level == 1
    assert [r.attempt for r in script.calls] == [1, 2, 3, 4, 5]
    assert clock.sleeps == [5.0] * 4


async def test_threshold_one_walks_the_whole_order_and_ends_escalated() -> None:
    clock, script = FakeClock(), Script()
    session = await run_session(
        manager(script, clock, escalation_threshold=1, max_recovery_attempts=10, recovery_delay=0.5), clock
    )
    assert script.order == [
        "retry",
        "circuit_breaker",
        "restart",
        "fallback",
        "graceful_degradation",
        "escalate",
        "manual",
        "manual",
        "manual",
        "manual",
    ]
    assert session.status == "escalated"  # ended on manual: a person has it now
    assert session.escalation_level == 6


async def test_a_successful_escalate_ends_the_session_as_escalated() -> None:
    clock, script = FakeClock(), Script(escalate=[True])
    session = await run_session(manager(script, clock), clock, strategy=S.ESCALATE)
    assert session.status == "escalated" and script.order == ["escalate"]


async def test_manual_needs_a_person_at_once_with_steps() -> None:
    clock = FakeClock()

    async def manual(req: RecoveryRequest) -> StrategyOutcome:
        return StrategyOutcome(False, "fix the token", needs_person=True, steps=["set TELEGRAM_BOT_TOKEN"])

    m = RecoveryManager(RecoverySettings(), clock=clock, strategies={S.MANUAL: manual})
    session = await run_session(m, clock, error=TelegramUnauthorized("401"))
    assert session.strategy is S.MANUAL  # the error's own strategy
    assert session.status == "escalated" and session.needs_person
    assert session.steps == ["set TELEGRAM_BOT_TOKEN"] and len(session.attempts) == 1
    assert session.error_code == "TELEGRAM_INVALID_TOKEN" and session.severity == "critical"


async def test_start_strategy_comes_from_the_error_then_the_component_default() -> None:
    clock, script = FakeClock(), Script(graceful_degradation=[True], restart=[True])
    m = RecoveryManager(
        RecoverySettings(),
        clock=clock,
        strategies=script.strategies(),
        default_strategy=lambda component, code: S.RESTART,
    )
    first = await run_session(m, clock, "a", error=ResourceError("queue full"))
    second = await run_session(m, clock, "b")
    assert (first.strategy, second.strategy) == (S.GRACEFUL_DEGRADATION, S.RESTART)
    assert first.category == "resource"


async def test_backups_run_by_priority_when_the_primary_chain_fails() -> None:
    clock, script = FakeClock(), Script(fallback=[True])
    settings = RecoverySettings.from_config(parse_resilience_config({}).recovery, recovery_delay=1.0)
    m = RecoveryManager(settings, clock=clock, strategies=script.strategies())
    session = await run_session(m, clock, "bridge", error_code="BRIDGE_UNHEALTHY", trigger="health")
    # primary: retry x3, circuit_breaker x2; then bridge-restart (3 tries), fallback-mode.
    assert script.order == ["retry"] * 3 + ["circuit_breaker"] * 2 + ["restart"] * 3 + ["fallback"]
    assert [a.backup for a in session.attempts][-4:] == ["bridge-restart"] * 3 + ["fallback-mode"]
    assert session.status == "succeeded" and "backup fallback-mode" in session.summary


async def test_all_failing_including_backups_is_failed() -> None:
    clock, script = FakeClock(), Script()
    settings = RecoverySettings.from_config(parse_resilience_config({}).recovery)
    session = await run_session(
        RecoveryManager(settings, clock=clock, strategies=script.strategies()), clock, error=TelegramServerError("502")
    )
    assert script.order == ["retry"] * 3 + ["circuit_breaker"] * 2 + ["fallback"]  # bridge backups don't match
    assert session.status == "failed"


async def test_a_raising_or_hanging_action_is_a_failed_attempt() -> None:
    clock = FakeClock()

    async def boom(req: RecoveryRequest) -> StrategyOutcome:
        raise RuntimeError("kaput")

    async def hang(req: RecoveryRequest) -> StrategyOutcome:
        await anyio.sleep_forever()
        raise AssertionError

    m = RecoveryManager(
        RecoverySettings(max_recovery_attempts=2, escalation_threshold=1, attempt_timeout=7.0),
        clock=clock,
        strategies={S.RETRY: boom, S.CIRCUIT_BREAKER: hang},
    )
    session = await run_session(m, clock)
    assert [a.detail for a in session.attempts] == [
        "retry raised RuntimeError: kaput",
        "circuit_breaker took longer than 7.0s",
    ]
    assert session.attempts[1].duration_s == pytest.approx(7.0)


async def test_one_session_per_component_a_second_request_joins() -> None:
    clock, gate, calls = FakeClock(), anyio.Event(), []

    async def slow(req: RecoveryRequest) -> StrategyOutcome:
        calls.append(req.component)
        await gate.wait()
        return StrategyOutcome(True, "done")

    m = RecoveryManager(RecoverySettings(), clock=clock, strategies={S.RETRY: slow})
    got: list[Any] = []

    async def ask(component: str) -> None:
        got.append(await m.recover(component))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "telegram")
            tg.start_soon(ask, "telegram")
            tg.start_soon(ask, "outbox")
            await anyio.wait_all_tasks_blocked()
            assert sorted(s.component for s in m.active()) == ["outbox", "telegram"]
            assert m.statistics().in_progress == 2
            gate.set()
    assert sorted(calls) == ["outbox", "telegram"]
    telegram = [s for s in got if s.component == "telegram"]
    assert len(telegram) == 2 and telegram[0].id == telegram[1].id


async def test_canonical_names_share_one_session() -> None:
    clock, script = FakeClock(), Script(retry=[True])
    m = RecoveryManager(RecoverySettings(), clock=clock, strategies=script.strategies(), canonical=family)
    session = await run_session(m, clock, "telegram_breaker")
    assert session.component == "telegram"


async def test_history_is_bounded_and_statistics_count_everything() -> None:
    clock, script = FakeClock(), Script(retry=[False, True, True, True, False, False])
    m = manager(script, clock, history_size=3, max_recovery_attempts=2, escalation_threshold=5)
    sessions = [await run_session(m, clock, f"c{i}") for i in range(4)]
    assert [s.status for s in sessions] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert [s.id for s in m.history()] == [s.id for s in reversed(sessions[1:])]
    assert m.history(limit=1)[0].id == sessions[-1].id
    stats = m.statistics()
    assert (stats.sessions, stats.succeeded, stats.failed, stats.escalated) == (4, 3, 1, 0)
    assert stats.success_rate == 0.75
    assert stats.mean_time_to_recover_s == pytest.approx(5.0 / 3, abs=1e-3)  # one took 5 s (a delay), two 0


async def test_unhealthy_transition_starts_a_background_session_and_healthy_undoes() -> None:
    clock, script, healed = FakeClock(), Script(circuit_breaker=[True]), []
    verdict = [CheckResult.unhealthy("getMe failed", error_code="TELEGRAM_SERVER_ERROR")]

    async def on_healthy(component: str) -> None:
        healed.append(component)

    m = RecoveryManager(
        RecoverySettings(),
        clock=clock,
        strategies=script.strategies(),
        canonical=family,
        default_strategy=lambda c, code: S.CIRCUIT_BREAKER,
        on_healthy=on_healthy,
    )
    monitor = HealthMonitor(HealthSettings(failure_threshold=1, recovery_threshold=1, grace_period=0), clock)

    async def check() -> CheckResult:
        return verdict[0]

    monitor.add_check("telegram_breaker", check, critical=True)
    monitor.add_listener(m.on_health_change)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(m.run)
            await monitor.check_now("telegram_breaker")
            assert monitor.status_of("telegram_breaker") is HealthStatus.UNHEALTHY
            while not m.history():  # the session runs in the manager's task group
                await anyio.wait_all_tasks_blocked()
            verdict[0] = CheckResult.healthy()
            await monitor.check_now("telegram_breaker")
            while not healed:
                await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    (session,) = m.history()
    assert (session.component, session.trigger, session.status) == ("telegram", "health", "succeeded")
    assert session.error_code == "TELEGRAM_SERVER_ERROR" and script.order == ["circuit_breaker"]
    assert healed == ["telegram"]


async def test_no_background_session_when_auto_recovery_is_off() -> None:
    clock, script = FakeClock(), Script()
    m = RecoveryManager(RecoverySettings(auto_recovery_enabled=False), clock=clock, strategies=script.strategies())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(m.run)
            m.on_health_change("telegram", HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, CheckResult.unhealthy("x"))
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert m.history() == [] and script.calls == []
    assert not m.request("telegram")  # not running any more


# ---- the real actions on a running service ------------------------------------------------


SLOW_BREAKER = {"telegram": {"failureThreshold": 2, "volumeThreshold": 2, "successThreshold": 2, "timeout": 600_000}}


async def runtime_for(standin: TelegramStandIn, tmp_path: Path) -> AsyncIterator[Runtime]:
    config = fast_config(
        circuitBreaker=SLOW_BREAKER,
        health={"enabled": False},
        recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1, "backupStrategies": []},
    )
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        yield runtime


@pytest.fixture
async def runtime(standin: TelegramStandIn, tmp_path: Path) -> AsyncIterator[Runtime]:
    async for r in runtime_for(standin, tmp_path):
        yield r


@pytest.fixture
def service(runtime: Runtime) -> NotificationService:
    return runtime.service


def msg(service: NotificationService, text: str, *, type: str = "info_notification", **kw: Any) -> Event:
    return service.build_event(type=type, title=text, description=text, **kw)


async def open_the_breaker(service: NotificationService, standin: TelegramStandIn) -> None:
    standin.set_fault(FaultMode.SERVER_ERROR, status=502)
    result = await service.submit(msg(service, "during outage", type="task_completion"))
    assert result.status == "queued"
    assert service.pipelines is not None
    assert service.pipelines.for_component("telegram").breaker.state is BreakerState.OPEN
    standin.clear_fault()


async def test_circuit_breaker_closes_an_open_breaker_and_the_next_send_goes_out(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    await open_the_breaker(service, standin)
    assert (await service.submit(msg(service, "still open"))).status == "queued"  # fault cleared, breaker open
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.CIRCUIT_BREAKER)
    assert session.status == "succeeded", session
    assert "breaker telegram open → closed" in session.attempts[0].detail and "getMe ok" in session.attempts[0].detail
    with anyio.fail_after(10):
        assert (await service.submit(msg(service, "after recovery"))).status == "delivered"
        await standin.await_messages(3 * len(USERS), timeout=10)  # the two queued ones went out too


async def test_circuit_breaker_fails_honestly_while_telegram_is_down(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    await open_the_breaker(service, standin)
    standin.set_fault(FaultMode.SERVER_ERROR, status=503)
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.CIRCUIT_BREAKER)
    assert session.status == "failed"
    assert "open → open" in session.attempts[0].detail and "503" in session.attempts[0].detail


async def test_restart_rebuilds_the_client_and_sends_still_work(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    before = present(service.transport).generation
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.RESTART)
        assert present(service.transport).generation == before + 1
        assert session.status == "succeeded" and f"generation {before} → {before + 1}" in session.summary
        assert (await service.submit(msg(service, "after restart"))).status == "delivered"


async def test_retry_makes_a_waiting_row_due_and_it_is_delivered(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    assert service.outbox is not None
    event = msg(service, "parked")
    # Leased at once: the running dispatcher must not grab the row before it is parked.
    parked = await service.outbox.enqueue(event, [USERS[0]], lease=("someone", 60))
    assert parked is not None
    (row,) = parked
    await service.outbox.release(row.id, "parked for an hour", time.time() + 3600)
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.RETRY)
        assert session.status == "succeeded" and "made 1 pending delivery(ies) due now" in session.summary
        await standin.await_messages(1, timeout=10)
    assert standin.sent[0].chat_id == USERS[0]


async def test_graceful_degradation_holds_low_priority_and_sends_critical(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.GRACEFUL_DEGRADATION)
        assert service.dispatcher is not None
        assert session.status == "mitigated" and service.dispatcher.min_priority == "high"
        assert session.attempts[-1].outcome == "mitigated" and session.ended_at is None
        stats = present(runtime.recovery).statistics()
        assert (stats.mitigated, stats.in_progress, stats.succeeded, stats.success_rate) == (1, 1, 0, None)
        low = await service.submit(msg(service, "low news"))
        critical = await service.submit(msg(service, "disk on fire", type="error_occurred"))
    assert (low.status, critical.status) == ("queued", "delivered")
    assert low.reason is not None and "degraded mode" in low.reason
    assert {m.text.count("disk on fire") > 0 for m in standin.sent} == {True}
    with anyio.fail_after(10):  # a verified recovery is the way back: the low one goes out
        fixed = await present(runtime.recovery).recover("telegram", strategy=S.RETRY)
        assert service.dispatcher.min_priority == "low"
        assert (fixed.id, fixed.status) == (session.id, "succeeded") and "getMe ok" in fixed.summary
        stats = present(runtime.recovery).statistics()
        assert (stats.mitigated, stats.in_progress, stats.succeeded, stats.success_rate) == (0, 0, 1, 1.0)
        await standin.await_messages(2 * len(USERS), timeout=10)
    assert any("low news" in m.text for m in standin.sent)


async def test_fallback_queues_without_attempts_until_a_recovery_resumes(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.FALLBACK)
        assert service.dispatcher is not None
        assert session.status == "mitigated" and service.dispatcher.paused
        result = await service.submit(msg(service, "held back", type="performance_alert"))
        assert result.status == "queued" and "paused" in (result.reason or "")
        await anyio.wait_all_tasks_blocked()
        assert not [r for r in standin.requests if r.method == "sendMessage"]
        resumed = await present(runtime.recovery).recover("telegram", strategy=S.CIRCUIT_BREAKER)
        assert "direct delivery resumed" in resumed.summary and not service.dispatcher.paused
        assert (resumed.id, resumed.status) == (session.id, "succeeded")  # the open session, now verified
        await standin.await_messages(len(USERS), timeout=10)


async def test_escalate_sends_an_alert_the_person_sees(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover(
            "telegram", strategy=S.ESCALATE, error=TelegramServerError("502")
        )
    assert session.status == "escalated" and "alert sent to 2 recipient(s)" in session.summary
    assert {m.chat_id for m in standin.sent} == set(USERS)
    assert all(
        "recovery of telegram needs attention" in m.text and "TELEGRAM_SERVER_ERROR" in m.text for m in standin.sent
    )


async def test_escalate_records_that_it_could_not_alert(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    standin.set_fault(FaultMode.SERVER_ERROR, status=502)
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", strategy=S.ESCALATE)
    assert session.status == "escalated"  # ended on escalate, a person must look
    assert session.attempts[0].outcome == "failed"
    assert session.attempts[0].detail.startswith("could not alert: getMe failed: TELEGRAM_SERVER_ERROR")
    assert standin.sent == []


async def test_manual_gives_steps_for_the_error_and_dead_rows(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    standin.set_fault(FaultMode.FORBIDDEN)
    with pytest.raises(Exception, match="press Start"):
        await service.submit(msg(service, "blocked"))
    standin.clear_fault()
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("telegram", error=TelegramUnauthorized("401"))
    assert session.status == "escalated" and session.needs_person
    assert "TELEGRAM_BOT_TOKEN" in session.steps[0]
    assert any("requeue" in step for step in session.steps)


async def test_retry_on_the_outbox_requeues_dead_letters(
    runtime: Runtime, service: NotificationService, standin: TelegramStandIn
) -> None:
    standin.set_fault(FaultMode.FORBIDDEN)
    with pytest.raises(Exception, match="press Start"):
        await service.submit(msg(service, "was blocked"))
    standin.clear_fault()
    assert service.outbox is not None and (await service.outbox.counts()).dead == len(USERS)
    with anyio.fail_after(10):
        session = await present(runtime.recovery).recover("outbox", strategy=S.RETRY)
        assert session.status == "succeeded" and "requeued 2 dead" in session.summary
        await standin.await_messages(len(USERS), timeout=10)


def test_default_strategy_follows_the_breaker_and_the_error_code() -> None:
    class Fake:
        settings = make_settings(None, Path("/tmp/unused"), CCTG_DELIVERY="telegram")
        pipelines = None
        dispatcher = outbox = transport = None

    actions = RecoveryActions(Fake())  # type: ignore[arg-type]
    assert actions.default_strategy("telegram") is S.RETRY
    assert actions.default_strategy("telegram", "TELEGRAM_INVALID_TOKEN") is S.MANUAL
    assert actions.default_strategy("disk") is S.MANUAL
    assert family("telegram_breaker") == "telegram" and family("bridge-health") == "bridge"
