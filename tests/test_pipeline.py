"""Composition: deadline → retry → breaker → attempt timeout → call (REFERENCE D.19), in virtual time."""

from __future__ import annotations

import anyio
import pytest

from cctg_mcp.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.config import parse_resilience_config
from cctg_mcp.resilience.errors import (
    AttemptTimeoutError,
    CircuitOpenError,
    TelegramBadRequest,
    TelegramRateLimited,
    TelegramServerError,
)
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import Pipeline, PipelineSet
from cctg_mcp.resilience.retry import RetryExecutor, RetryPolicy

pytestmark = pytest.mark.anyio


def build(
    clock: FakeClock,
    *,
    fail_max: int = 2,
    attempts: int = 4,
    attempt_timeout: float | None = None,
    wait_for_open_breaker: bool = False,
    metrics: MetricsRegistry | None = None,
) -> Pipeline:
    settings = BreakerSettings(failure_threshold=fail_max, success_threshold=1, open_timeout=30)
    breaker = CircuitBreaker("telegram", settings, clock=clock)
    retry = RetryExecutor(RetryPolicy(max_attempts=attempts, base_delay=0.1, max_delay=1, jitter=False), clock=clock)
    return Pipeline(
        "telegram",
        breaker,
        retry,
        clock=clock,
        metrics=metrics,
        attempt_timeout=attempt_timeout,
        wait_for_open_breaker=wait_for_open_breaker,
    )


async def test_retry_outside_the_breaker_calls_the_dependency_at_most_fail_max_times() -> None:
    clock = FakeClock()
    pipe = build(clock)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TelegramServerError("502 Bad Gateway", error_code=502)

    async with clock.autojump():
        with pytest.raises(CircuitOpenError) as info:
            await pipe.call("sendMessage", down, deadline=clock.monotonic() + 10)
    assert calls == 2
    assert pipe.breaker.state is BreakerState.OPEN
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert clock.sleeps == [0.1, 0.2]  # two backoffs, then the open breaker ends it at once


async def test_an_open_breaker_is_waited_for_only_when_allowed_and_within_budget() -> None:
    clock = FakeClock()
    pipe = build(clock, fail_max=1, attempts=3, wait_for_open_breaker=True)
    outcomes = iter([TelegramServerError("503", error_code=503), None])

    async def flaky() -> str:
        err = next(outcomes)
        if err is not None:
            raise err
        return "ok"

    async with clock.autojump():
        start = clock.monotonic()
        assert await pipe.call("sendMessage", flaky, deadline=start + 60) == "ok"
    # 0.1 s backoff, then the breaker's 30 s break (minus that) was waited for, then the probe closed it.
    assert clock.monotonic() - start == pytest.approx(30.0)
    assert pipe.breaker.state is BreakerState.CLOSED


async def test_the_attempt_timeout_cancels_the_call_and_counts_as_a_failure() -> None:
    clock = FakeClock()
    metrics = MetricsRegistry(clock=clock)
    pipe = build(clock, fail_max=1, attempts=1, attempt_timeout=1.0, metrics=metrics)
    finished = False

    async def slow() -> None:
        nonlocal finished
        await clock.sleep(5)
        finished = True

    async with clock.autojump():
        start = clock.monotonic()
        with pytest.raises(AttemptTimeoutError):
            await pipe.call("sendMessage", slow)
        elapsed = clock.monotonic() - start
    assert elapsed == pytest.approx(1.0, abs=0.05)
    assert not finished and clock.pending_timers == 0  # the slow call was cancelled, nothing left behind
    assert pipe.breaker.state is BreakerState.OPEN
    op = metrics.operation("telegram", "sendMessage")
    assert op.calls == 1 and op.timeouts == 1


async def test_permanent_errors_are_attempted_once_and_do_not_trip_the_breaker() -> None:
    clock = FakeClock()
    pipe = build(clock, fail_max=1)
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise TelegramBadRequest("400 chat not found", error_code=400)

    for _ in range(3):
        with pytest.raises(TelegramBadRequest):
            await pipe.call("sendMessage", bad)
    assert calls == 3 and pipe.breaker.state is BreakerState.CLOSED


async def test_a_429_waits_exactly_retry_after_and_does_not_count() -> None:
    clock = FakeClock()
    pipe = build(clock, fail_max=1)
    answers = iter([TelegramRateLimited("429", error_code=429, retry_after=7), None])

    async def limited() -> int:
        err = next(answers)
        if err is not None:
            raise err
        return 42

    async with clock.autojump():
        assert await pipe.call("sendMessage", limited, deadline=clock.monotonic() + 10) == 42
    assert clock.sleeps == [7]
    assert pipe.breaker.state is BreakerState.CLOSED


async def test_cancelling_a_call_releases_the_probe_permit() -> None:
    clock = FakeClock()
    pipe = build(clock, fail_max=1, attempts=1)

    async def down() -> None:
        raise TelegramServerError("500", error_code=500)

    with pytest.raises(TelegramServerError):
        await pipe.call("sendMessage", down)
    await clock.advance(30)
    gate = anyio.Event()

    async def hang() -> None:
        await gate.wait()

    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def probe() -> None:
            with scope:
                await pipe.call("sendMessage", hang)

        tg.start_soon(probe)
        await anyio.wait_all_tasks_blocked()
        assert pipe.breaker.state is BreakerState.HALF_OPEN
        scope.cancel()

    async def ok() -> str:
        return "ok"

    assert await pipe.call("sendMessage", ok) == "ok"  # admitted as a new probe, not rejected
    assert pipe.breaker.state is BreakerState.CLOSED


async def test_pipelines_are_built_per_component_from_configuration() -> None:
    config = parse_resilience_config({"circuitBreaker": {"telegram": {"failureThreshold": 7, "timeout": 1234}}})
    pipes = PipelineSet(config, clock=FakeClock())
    assert set(pipes.pipelines) == {"telegram", "bridge", "filesystem", "network"}
    tg = pipes.for_component("telegram").breaker.settings
    assert (tg.failure_threshold, tg.open_timeout) == (7, 1.234)
    assert pipes.for_component("telegram").retry.policy.max_attempts == 5  # seed default for telegram
    assert pipes.for_component("bridge").breaker.settings.failure_threshold == 5


async def test_disabled_resilience_is_a_plain_call() -> None:
    config = parse_resilience_config({"enabled": False})
    pipe = PipelineSet(config, clock=FakeClock()).for_component("telegram")

    async def down() -> None:
        raise TelegramServerError("500", error_code=500)

    for _ in range(10):
        with pytest.raises(TelegramServerError):
            await pipe.call("sendMessage", down)
    assert pipe.breaker.statistics().total_calls == 0


# per-operation and per-event settings, at run time ------------------------------------------


async def test_operation_breaker_override_gets_its_own_breaker_with_its_threshold() -> None:
    """Seed default: sendPerformanceAlert's breaker (2 failures, 10 s) is its own, not telegram's."""
    clock = FakeClock()
    pipes = PipelineSet(parse_resilience_config({}), clock=clock)
    pipe = pipes.for_component("telegram")
    assert "telegram.sendPerformanceAlert" in pipes.breakers  # exists from start-up
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TelegramServerError("502", error_code=502)

    alert_breaker, _ = pipe.route("sendPerformanceAlert", "performance_alert")
    assert alert_breaker.name == "telegram.sendPerformanceAlert"
    assert (alert_breaker.settings.failure_threshold, alert_breaker.settings.open_timeout) == (2, 10.0)
    async with clock.autojump():
        for _ in range(4):
            with pytest.raises((TelegramServerError, CircuitOpenError)):
                await pipe.call(
                    "sendPerformanceAlert", down, deadline=clock.monotonic() + 0.001, event_type="performance_alert"
                )
    assert calls == 3  # volumeThreshold 3 (telegram's) calls, 2+ failures: open; the 4th rejected
    assert alert_breaker.state is BreakerState.OPEN
    assert pipe.breaker.state is BreakerState.CLOSED  # the component's breaker saw none of it
    assert pipe.route("sendMessage")[0] is pipe.breaker  # no override: the component's breaker


async def test_event_retry_override_applies_to_the_calls_it_names() -> None:
    """events.error_occurred retries 4 times from 100 ms; other events keep telegram's 2 x 2 s."""
    clock = FakeClock()
    config = parse_resilience_config(
        {
            "circuitBreaker": {"telegram": {"failureThreshold": 100}},
            "operations": {"sendEvent": {"circuitBreaker": None}},
            "retry": {"telegram": {"maxAttempts": 2, "jitterEnabled": False}},
            "events": {
                "error_occurred": {
                    "retry": {"maxAttempts": 4, "baseDelay": 100, "attemptsBySeverity": {"medium": 4}},
                    "priority": "critical",
                }
            },
        }
    )
    pipe = PipelineSet(config, clock=clock).for_component("telegram")

    async def waits(event_type: str) -> list[float]:
        start = len(clock.sleeps)

        async def down() -> None:
            raise TelegramServerError("502", error_code=502)

        async with clock.autojump():
            with pytest.raises(TelegramServerError):
                await pipe.call("sendEvent", down, deadline=clock.monotonic() + 60, event_type=event_type)
        return clock.sleeps[start:]

    assert await waits("task_started") == [2.0]
    assert await waits("error_occurred") == pytest.approx([0.1, 0.15, 0.225])  # telegram's base 1.5
    assert pipe.route("sendEvent", "error_occurred")[1].name == "telegram.sendEvent.error_occurred"
