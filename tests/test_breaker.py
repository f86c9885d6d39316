"""Circuit breaker behaviours (REFERENCE §D items 1-15), in virtual time on asyncio and trio.

"Rejected" always means the protected callable was not invoked: ``Dep.calls`` is asserted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cctg_mcp.resilience.breaker import (
    BreakerSettings,
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
)
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, FakeClock
from cctg_mcp.resilience.errors import (
    BulkheadFullError,
    CircuitOpenError,
    IsolatedCircuitError,
    NetworkError,
    TelegramBadRequest,
    TelegramForbidden,
    TelegramRateLimited,
    TelegramServerError,
    ValidationError,
)

pytestmark = pytest.mark.anyio

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Dep:
    """A protected dependency that counts its invocations."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0

    async def ok(self, value: Any = "ok", took: float = 0.0) -> Any:
        self.calls += 1
        if took:
            await self.clock.sleep(took)
        return value

    async def fail(self, exc: BaseException | None = None) -> Any:
        self.calls += 1
        raise exc if exc is not None else NetworkError("connection refused")

    async def gated(self, gate: anyio.Event, exc: BaseException | None = None) -> Any:
        self.calls += 1
        await gate.wait()
        if exc is not None:
            raise exc
        return "late"


def make(
    **settings: Any,
) -> tuple[CircuitBreaker, FakeClock, Dep, list[BreakerTransition]]:
    clock = FakeClock()
    kwargs = {k: settings.pop(k) for k in ("is_failure", "result_is_failure", "fallback") if k in settings}
    breaker = CircuitBreaker("telegram", BreakerSettings(**settings), clock=clock, **kwargs)
    events: list[BreakerTransition] = []
    breaker.add_listener(events.append)
    return breaker, clock, Dep(clock), events


async def fail(breaker: CircuitBreaker, dep: Dep, exc: BaseException | None = None) -> None:
    with pytest.raises(type(exc) if exc is not None else NetworkError):
        await breaker.call(dep.fail, exc)


async def trip(breaker: CircuitBreaker, dep: Dep) -> None:
    while breaker.state is CLOSED:
        await fail(breaker, dep)
    assert breaker.state is OPEN


def to(events: list[BreakerTransition], state: BreakerState) -> list[BreakerTransition]:
    return [e for e in events if e.to_state is state]


# 1. failures in the window, and neutral errors -------------------------------------------


async def test_failures_in_window_open_even_with_successes_between() -> None:
    """The seed's monitoringWindow: failures inside it count; a success does not wipe them."""
    breaker, _, dep, events = make(failure_threshold=3, monitoring_window=60.0)
    await fail(breaker, dep)
    await fail(breaker, dep)
    assert await breaker.call(dep.ok) == "ok"
    assert breaker.statistics().consecutive_failures == 0
    assert breaker.state is CLOSED
    await fail(breaker, dep)
    assert breaker.state is OPEN
    assert [(e.from_state, e.to_state, e.reason, e.manual) for e in events] == [
        (CLOSED, OPEN, "failure_threshold", False)
    ]


async def test_intermittent_failures_trip_the_breaker() -> None:
    """67 % failures (F, F, S repeated) over many calls: the old consecutive rule never tripped."""
    breaker, clock, dep, _ = make(failure_threshold=5, minimum_throughput=5, monitoring_window=30.0)
    calls = 0
    while breaker.state is CLOSED and calls < 300:
        for step in ("F", "F", "S"):
            await clock.advance(0.1)
            if breaker.state is not CLOSED:
                break
            calls += 1
            if step == "F":
                await fail(breaker, dep)
            else:
                await breaker.call(dep.ok)
    assert breaker.state is OPEN
    assert calls == 7  # F F S F F S F: the 5th failure in the window, 7 calls seen


async def test_failures_older_than_the_window_do_not_count() -> None:
    breaker, clock, dep, _ = make(failure_threshold=3, monitoring_window=10.0)
    await fail(breaker, dep)
    await fail(breaker, dep)
    await clock.advance(10.001)
    await fail(breaker, dep)
    assert breaker.state is CLOSED
    assert breaker.statistics().window_failures == 1
    await fail(breaker, dep)
    await fail(breaker, dep)
    assert breaker.state is OPEN


async def test_volume_threshold_gates_the_failure_count() -> None:
    breaker, _, dep, _ = make(failure_threshold=2, minimum_throughput=4)
    await fail(breaker, dep)
    await fail(breaker, dep)
    await fail(breaker, dep)
    assert breaker.state is CLOSED  # 3 failures but only 3 calls < volumeThreshold 4
    await fail(breaker, dep)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    "ignored",
    [
        TelegramBadRequest("400 chat not found", error_code=400),
        TelegramForbidden("403 bot was blocked", error_code=403),
        TelegramRateLimited("429", error_code=429, retry_after=7),
        ValidationError("text is empty"),
        ValueError("plain ValueError classifies as validation"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_ignored_errors_neither_add_nor_reset(ignored: Exception) -> None:
    breaker, _, dep, _ = make(failure_threshold=3)
    await fail(breaker, dep)
    await fail(breaker, dep)
    with pytest.raises(type(ignored)) as caught:
        await breaker.call(dep.fail, ignored)
    assert caught.value is ignored
    assert breaker.statistics().consecutive_failures == 2
    await fail(breaker, dep)
    assert breaker.state is OPEN
    stats = breaker.statistics()
    assert (stats.failures, stats.ignored, stats.total_calls) == (3, 1, 4)


async def test_custom_is_failure_predicate() -> None:
    breaker, _, dep, _ = make(failure_threshold=1, is_failure=lambda e: not isinstance(e, KeyError))
    with pytest.raises(KeyError):
        await breaker.call(dep.fail, KeyError("x"))
    assert breaker.state is CLOSED
    await fail(breaker, dep, RuntimeError("boom"))
    assert breaker.state is OPEN


# 2. ratio mode ---------------------------------------------------------------------------

RATIO = {"failure_ratio": 0.5, "minimum_throughput": 4, "monitoring_window": 10.0, "failure_threshold": 100}


async def test_minimum_throughput_gate() -> None:
    breaker, _, dep, events = make(**RATIO)
    for _ in range(3):
        await fail(breaker, dep)
    assert breaker.state is CLOSED
    await fail(breaker, dep)
    assert breaker.state is OPEN
    assert events[-1].reason == "failure_ratio"


async def test_ratio_comparison_is_greater_or_equal() -> None:
    breaker, _, dep, _ = make(**RATIO)
    await breaker.call(dep.ok)
    await breaker.call(dep.ok)
    await fail(breaker, dep)
    assert breaker.state is CLOSED
    await fail(breaker, dep)  # 2/4 = 0.5 >= 0.5
    assert breaker.state is OPEN


async def test_window_expiry() -> None:
    breaker, clock, dep, _ = make(**RATIO)
    for _ in range(3):
        await fail(breaker, dep)
    await clock.advance(10.001)
    await fail(breaker, dep)
    assert breaker.state is CLOSED
    assert breaker.statistics().window_calls == 1


async def test_outcomes_inside_the_window_still_count() -> None:
    breaker, clock, dep, _ = make(**RATIO)
    for _ in range(3):
        await fail(breaker, dep)
    await clock.advance(8.5)
    await fail(breaker, dep)
    assert breaker.state is OPEN


async def test_window_memory_is_bounded_and_counts_stay_exact() -> None:
    breaker, clock, dep, _ = make(**RATIO)
    for _ in range(1000):
        await breaker.call(dep.ok)
        await clock.advance(0.25)
    stats = breaker.statistics()
    assert 36 <= stats.window_calls <= 40  # buckets: 0.9..1.0 of the 10 s window at 4 calls/s
    assert stats.total_calls == 1000
    assert len(breaker._w_calls) == 10


# 3. the tripping call --------------------------------------------------------------------


async def test_tripping_call_reraises_its_own_exception() -> None:
    breaker, _, dep, events = make(failure_threshold=2)
    await fail(breaker, dep)
    original = TelegramServerError("502 bad gateway", error_code=502)
    with pytest.raises(TelegramServerError) as caught:
        await breaker.call(dep.fail, original)
    assert caught.value is original
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep.fail)
    assert dep.calls == 2
    assert len(to(events, OPEN)) == 1


# 4, 5. open rejection, retry_after and exact expiry --------------------------------------


async def test_open_rejection_carries_retry_after() -> None:
    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0)
    await fail(breaker, dep)
    dep.calls = 0
    before = breaker.statistics().rejections
    await clock.advance(2.0)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(dep.ok)
    assert caught.value.retry_after == pytest.approx(3.0, abs=1e-3)
    assert breaker.retry_after() == pytest.approx(3.0, abs=1e-3)
    assert dep.calls == 0
    stats = breaker.statistics()
    assert stats.rejections == before + 1
    assert stats.retry_after == pytest.approx(3.0, abs=1e-3)
    await clock.advance(100.0)
    assert breaker.retry_after() == 0.0  # never negative; state stays OPEN until a probe
    assert breaker.state is OPEN


async def test_break_expiry_is_exact() -> None:
    breaker, clock, dep, events = make(failure_threshold=1, open_timeout=5.0, success_threshold=1)
    await fail(breaker, dep)
    dep.calls = 0
    await clock.advance(4.999)
    with pytest.raises(CircuitOpenError):
        await breaker.call(dep.ok)
    assert dep.calls == 0
    await clock.advance(0.001)
    gate = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, dep.gated, gate)
        await anyio.wait_all_tasks_blocked()
        assert dep.calls == 1
        assert breaker.state is HALF_OPEN
        gate.set()
    assert len(to(events, HALF_OPEN)) == 1
    assert events[-1].to_state is CLOSED


# 6, 7. half-open permits ----------------------------------------------------------------


async def test_half_open_admits_one_probe_and_rejects_the_rest_at_once() -> None:
    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0, success_threshold=1)
    await fail(breaker, dep)
    dep.calls = 0
    await clock.advance(5.0)
    gate = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(breaker.call, dep.gated, gate)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(CircuitOpenError) as caught:
                await breaker.call(dep.ok)
            assert caught.value.retry_after == 0.0
            assert dep.calls == 1
            gate.set()
    assert breaker.state is CLOSED
    assert await breaker.call(dep.ok) == "ok"
    assert dep.calls == 2


async def test_success_threshold_with_several_permits() -> None:
    breaker, clock, dep, events = make(
        failure_threshold=1, open_timeout=5.0, half_open_max_calls=3, success_threshold=3
    )
    await fail(breaker, dep)
    dep.calls = 0
    await clock.advance(5.0)
    gates = [anyio.Event() for _ in range(3)]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for gate in gates:
                tg.start_soon(breaker.call, dep.gated, gate)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(CircuitOpenError):
                await breaker.call(dep.ok)
            assert dep.calls == 3
            gates[0].set()
            gates[1].set()
            await anyio.wait_all_tasks_blocked()
            assert breaker.state is HALF_OPEN
            gates[2].set()
    assert breaker.state is CLOSED
    stats = breaker.statistics()
    assert (stats.consecutive_failures, stats.window_failures, stats.window_calls) == (0, 0, 0)
    assert len(to(events, CLOSED)) == 1


# 8. escalating break --------------------------------------------------------------------


async def test_probe_failure_reopens_with_escalating_break() -> None:
    breaker, clock, dep, events = make(
        failure_threshold=1,
        open_timeout=5.0,
        success_threshold=1,
        break_duration_fn=lambda n: min(5 * 2 ** (n - 1), 60),
    )
    await fail(breaker, dep)
    durations = []
    for _ in range(3):
        await clock.advance(breaker.retry_after())
        await fail(breaker, dep)  # the probe fails
        assert events[-1].reason == "half_open_probe_failed"
        durations.append(breaker.retry_after())
    assert durations == [5.0, 10.0, 20.0]
    await clock.advance(20.0)
    await breaker.call(dep.ok)
    assert breaker.state is CLOSED
    await fail(breaker, dep)  # from closed: plain open_timeout
    await clock.advance(5.0)
    await fail(breaker, dep)
    assert breaker.retry_after() == 5.0  # n was reset by the close


# 9. permits are released on every exit path ---------------------------------------------


async def test_cancelled_probe_releases_its_permit() -> None:
    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0, success_threshold=1)
    await fail(breaker, dep)
    await clock.advance(5.0)
    scope = anyio.CancelScope()

    async def probe() -> None:
        with scope:
            await breaker.call(dep.gated, anyio.Event())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(probe)
            await anyio.wait_all_tasks_blocked()
            assert breaker.state is HALF_OPEN
            scope.cancel()
    assert scope.cancelled_caught
    assert breaker.state is HALF_OPEN
    stats = breaker.statistics()
    assert (stats.failures, stats.successes) == (1, 0)
    assert await breaker.call(dep.ok) == "ok"  # admitted as the new probe
    assert breaker.state is CLOSED


async def test_ignored_error_in_half_open_releases_permit_without_closing() -> None:
    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0, success_threshold=1)
    await fail(breaker, dep)
    await clock.advance(5.0)
    await fail(breaker, dep, TelegramBadRequest("400", error_code=400))
    assert breaker.state is HALF_OPEN
    assert await breaker.call(dep.ok) == "ok"
    assert breaker.state is CLOSED


async def test_half_open_max_wait_reopens_a_stuck_breaker() -> None:
    breaker, clock, dep, events = make(
        failure_threshold=1, open_timeout=5.0, success_threshold=1, half_open_max_wait=30.0
    )
    await fail(breaker, dep)
    await clock.advance(5.0)
    stuck = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(breaker.call, dep.gated, stuck)
            await anyio.wait_all_tasks_blocked()
            await clock.advance(29.999)
            with pytest.raises(CircuitOpenError):
                await breaker.call(dep.ok)
            assert breaker.state is HALF_OPEN
            await clock.advance(0.001)
            with pytest.raises(CircuitOpenError) as caught:
                await breaker.call(dep.ok)
            assert breaker.state is OPEN
            assert events[-1].reason == "half_open_max_wait"
            assert caught.value.retry_after == 5.0
            stuck.set()  # the stuck probe finally succeeds: too late, inert
    assert breaker.state is OPEN
    await clock.advance(5.0)
    await breaker.call(dep.ok)
    assert breaker.state is CLOSED


async def test_max_wait_applies_only_when_every_permit_is_held() -> None:
    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0, success_threshold=1, half_open_max_wait=30.0)
    await fail(breaker, dep)
    await clock.advance(5.0)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await breaker.call(dep.gated, anyio.Event())  # probe cancelled at once: permit freed
    await clock.advance(60.0)
    assert await breaker.call(dep.ok) == "ok"  # a free permit: admitted, not re-opened
    assert breaker.state is CLOSED


async def test_raising_result_predicate_counts_a_success() -> None:
    def broken(result: Any) -> bool:
        raise KeyError("predicate bug")

    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0, success_threshold=1, result_is_failure=broken)
    await fail(breaker, dep)
    await clock.advance(5.0)
    assert await breaker.call(dep.ok) == "ok"
    assert breaker.state is CLOSED


# 10. late results ------------------------------------------------------------------------


async def test_late_failure_from_closed_epoch_is_inert() -> None:
    breaker, clock, dep, events = make(failure_threshold=2, open_timeout=5.0)
    gate = anyio.Event()
    late = NetworkError("late reset")
    outcome: list[BaseException] = []

    async def slow_call() -> None:
        try:
            await breaker.call(dep.gated, gate, late)
        except NetworkError as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow_call)
            await anyio.wait_all_tasks_blocked()
            await trip(breaker, dep)
            opened_at = breaker.statistics().opened_at
            await clock.advance(1.0)
            gate.set()
    assert outcome == [late] and outcome[0] is late
    assert len(to(events, OPEN)) == 1
    assert breaker.statistics().opened_at == opened_at
    assert breaker.retry_after() == 4.0


async def test_late_success_from_older_half_open_epoch_does_not_close() -> None:
    breaker, clock, dep, events = make(
        failure_threshold=1, open_timeout=5.0, success_threshold=1, half_open_max_calls=2
    )
    await fail(breaker, dep)
    await clock.advance(5.0)
    old_gate, new_gate = anyio.Event(), anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(breaker.call, dep.gated, old_gate)  # probe of the first half-open epoch
            await anyio.wait_all_tasks_blocked()
            await fail(breaker, dep)  # a newer probe fails: re-opened
            assert breaker.state is OPEN
            old_gate.set()
            await anyio.wait_all_tasks_blocked()
            assert breaker.state is OPEN
            # Next half-open epoch: a success from the old epoch must not count there either.
            await clock.advance(breaker.retry_after())
            tg.start_soon(breaker.call, dep.gated, new_gate)
            await anyio.wait_all_tasks_blocked()
            assert breaker.state is HALF_OPEN
            new_gate.set()
    assert breaker.state is CLOSED
    assert len(to(events, CLOSED)) == 1


# 11. result-based failure ----------------------------------------------------------------


def server_error(r: Any) -> bool:
    return isinstance(r, dict) and r.get("ok") is False and r["error_code"] >= 500


async def test_result_predicate_counts_payloads_as_failures() -> None:
    breaker, _, dep, _ = make(failure_threshold=3, result_is_failure=server_error)
    bad_request = {"ok": False, "error_code": 400}
    for _ in range(5):
        assert await breaker.call(dep.ok, bad_request) is bad_request
    assert breaker.state is CLOSED
    for _ in range(3):
        await breaker.call(dep.ok, {"ok": False, "error_code": 502})
    assert breaker.state is OPEN
    assert "502" in (breaker.statistics().last_failure or "")


# 12. slow calls ---------------------------------------------------------------------------


@pytest.mark.parametrize(("took", "expected"), [(2.5, OPEN), (1.9, CLOSED)])
async def test_slow_call_rate(took: float, expected: BreakerState) -> None:
    breaker, clock, dep, events = make(slow_call_threshold=2.0, slow_call_rate=0.5, minimum_throughput=4)
    with anyio.fail_after(5):
        async with clock.autojump():
            for _ in range(4):
                await breaker.call(dep.ok, "ok", took)
    assert breaker.state is expected
    assert dep.calls == 4
    if expected is OPEN:
        assert events[-1].reason == "slow_call_rate"
        assert breaker.statistics().window_slow == 4


# 13. manual transitions -------------------------------------------------------------------


async def test_isolate_close_and_disable() -> None:
    breaker, clock, dep, events = make(failure_threshold=2, open_timeout=5.0)
    await fail(breaker, dep)
    dep.calls = 0
    breaker.isolate()
    assert breaker.state is BreakerState.ISOLATED
    await clock.advance(60.0)
    with pytest.raises(IsolatedCircuitError):
        await breaker.call(dep.ok)
    breaker.probe_now()  # no effect on a manual isolation
    with pytest.raises(IsolatedCircuitError):
        breaker.acquire()
    assert dep.calls == 0
    assert math.isinf(breaker.retry_after()) and breaker.statistics().retry_after is None
    breaker.close()
    assert breaker.state is CLOSED
    assert breaker.statistics().consecutive_failures == 0
    assert not to(events, HALF_OPEN)
    assert all(e.manual for e in events)
    breaker.disable()
    assert breaker.statistics().state is BreakerState.DISABLED
    before = breaker.statistics()
    for _ in range(10):
        await fail(breaker, dep)
    after = breaker.statistics()
    assert dep.calls == 10
    assert (after.failures, after.total_calls) == (before.failures, before.total_calls)
    assert [e.to_state for e in events] == [BreakerState.ISOLATED, CLOSED, BreakerState.DISABLED]


async def test_probe_now_and_reset() -> None:
    breaker, _, dep, events = make(failure_threshold=1, open_timeout=300.0, success_threshold=1)
    await fail(breaker, dep)
    breaker.probe_now()
    assert breaker.retry_after() == 0.0
    assert await breaker.call(dep.ok) == "ok"
    assert [e.to_state for e in events] == [OPEN, HALF_OPEN, CLOSED]
    await fail(breaker, dep)
    breaker.reset()
    stats = breaker.statistics()
    assert stats.state is CLOSED and events[-1].manual
    assert (stats.total_calls, stats.failures, stats.opened_at, stats.last_failure) == (0, 0, None, None)


# 14. listeners ----------------------------------------------------------------------------


async def test_listener_errors_are_swallowed_and_state_is_committed_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker, _, dep, events = make(failure_threshold=1)
    seen: list[BreakerState] = []

    def bad(t: BreakerTransition) -> None:
        seen.append(breaker.state)
        raise RuntimeError("listener bug")

    breaker.add_listener(bad)
    original = NetworkError("down")
    with (
        caplog.at_level(logging.ERROR, logger="cctg_mcp.resilience.breaker"),
        pytest.raises(NetworkError) as caught,
    ):
        await breaker.call(dep.fail, original)
    assert caught.value is original
    assert seen == [OPEN]
    assert breaker.state is OPEN and len(events) == 1
    assert "listener" in caplog.text
    breaker.remove_listener(bad)
    breaker.close()
    assert seen == [OPEN]


async def test_async_listeners_are_awaited() -> None:
    breaker, _, dep, _ = make(failure_threshold=1)
    done: list[tuple[BreakerState, BreakerState]] = []

    async def listener(t: BreakerTransition) -> None:
        await anyio.lowlevel.checkpoint()
        done.append((t.to_state, breaker.state))

    async def broken(t: BreakerTransition) -> None:
        raise RuntimeError("async listener bug")

    breaker.add_listener(listener)
    breaker.add_listener(broken)
    await fail(breaker, dep)  # awaited before the tripping call returns
    assert done == [(OPEN, OPEN)]
    breaker.isolate()  # manual, synchronous: pending until aclose()
    assert len(done) == 1
    await breaker.aclose()
    assert done[-1] == (BreakerState.ISOLATED, BreakerState.ISOLATED)


# fallback, permits, statistics, settings --------------------------------------------------


async def test_fallback_receives_rejection_and_arguments() -> None:
    got: list[Any] = []

    async def fallback(exc: BaseException, *args: Any) -> str:
        got.append((type(exc), args))
        return "queued"

    breaker, _, dep, _ = make(failure_threshold=1, fallback=fallback)
    await fail(breaker, dep)
    assert await breaker.call(dep.ok, "hello") == "queued"
    assert got == [(CircuitOpenError, ("hello",))]
    assert dep.calls == 1


async def test_permit_api_is_one_shot() -> None:
    breaker, clock, _, _ = make(failure_threshold=1, open_timeout=5.0, success_threshold=2)
    permit = breaker.acquire()
    permit.record_failure(NetworkError("down"))
    permit.record_failure(NetworkError("down"))  # second call is a no-op
    assert breaker.statistics().failures == 1
    await clock.advance(5.0)
    probe = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    probe.release()
    probe.record_success()  # no-op after release
    assert breaker.state is HALF_OPEN and breaker.statistics().successes == 0
    breaker.acquire().record_success(0.1)
    breaker.acquire().record_success(0.1)
    assert breaker.state is CLOSED


async def test_statistics_to_dict() -> None:
    breaker, _, dep, _ = make(failure_threshold=1)
    await fail(breaker, dep, NetworkError("GET https://api.telegram.org/bot123456:" + "A" * 35 + "/x"))
    data = breaker.statistics().to_dict()
    assert data["state"] == "open" and data["name"] == "telegram"
    assert data["failures"] == 1 and data["transitions"] == 1
    assert "AAAAAAAAAA" not in data["last_failure"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("success_threshold", 0),
        ("minimum_throughput", -1),
        ("max_concurrent", 0),
        ("half_open_max_calls", 0),
        ("open_timeout", 0),
        ("monitoring_window", -1.0),
        ("half_open_max_wait", 0.0),
        ("slow_call_threshold", -2.0),
        ("failure_ratio", 0.0),
        ("failure_ratio", 1.5),
        ("slow_call_rate", 2.0),
    ],
)
def test_settings_validation_names_the_field(field: str, value: Any) -> None:
    extra = {"slow_call_threshold": 1.0} if field == "slow_call_rate" else {}
    with pytest.raises(ValueError, match=field):
        BreakerSettings(**{field: value, **extra})


# bulkhead, disabled, manual force ---------------------------------------------------------


async def test_bulkhead_rejects_the_excess_at_once_and_is_not_a_failure() -> None:
    breaker, _, dep, events = make(failure_threshold=1, max_concurrent=2)
    gate = anyio.Event()
    results: list[Any] = []

    async def hold() -> None:
        results.append(await breaker.call(dep.gated, gate))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            tg.start_soon(hold)
            await anyio.wait_all_tasks_blocked()
            assert breaker.statistics().in_flight == 2
            with pytest.raises(BulkheadFullError) as caught:
                await breaker.call(dep.ok)
            assert caught.value.code == "BULKHEAD_FULL"
            assert dep.calls == 2  # the third was never invoked
            gate.set()
    assert results == ["late", "late"]
    stats = breaker.statistics()
    assert (stats.bulkhead_rejections, stats.failures, stats.in_flight) == (1, 0, 0)
    assert breaker.state is CLOSED and events == []
    assert await breaker.call(dep.ok) == "ok"  # the slots came back


async def test_bulkhead_slot_returns_on_failure_and_cancellation() -> None:
    breaker, _, dep, _ = make(failure_threshold=10, max_concurrent=1)
    await fail(breaker, dep)
    with anyio.fail_after(5):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(breaker.call, dep.gated, anyio.Event())
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
    assert breaker.statistics().in_flight == 0
    assert await breaker.call(dep.ok) == "ok"


async def test_disabled_by_settings_admits_everything() -> None:
    breaker, _, dep, _ = make(enabled=False, failure_threshold=1, max_concurrent=1)
    assert breaker.state is BreakerState.DISABLED
    assert breaker.statistics().forced_by == "configuration (enabled: false)"
    for _ in range(5):
        await fail(breaker, dep)
    assert breaker.state is BreakerState.DISABLED and dep.calls == 5


async def test_manual_force_records_who() -> None:
    breaker, _, dep, events = make(failure_threshold=1)
    breaker.isolate(by="client")
    assert (breaker.state, breaker.statistics().forced_by) == (BreakerState.ISOLATED, "client")
    with pytest.raises(IsolatedCircuitError, match="isolated by client"):
        await breaker.call(dep.ok)
    breaker.disable(by="tool")
    assert (breaker.state, breaker.statistics().forced_by) == (BreakerState.DISABLED, "tool")
    await fail(breaker, dep)
    assert breaker.state is BreakerState.DISABLED
    breaker.close(by="tool")
    await fail(breaker, dep)  # closed again: the failure opens it, and nobody forced that
    assert (breaker.state, breaker.statistics().forced_by) == (OPEN, None)
    breaker.reset(by="tool")
    assert breaker.state is CLOSED and breaker.statistics().forced_by is None
    assert [e.manual for e in events] == [True, True, True, False, True]


def test_slow_rate_needs_a_threshold() -> None:
    with pytest.raises(ValueError, match="slow_call_threshold"):
        BreakerSettings(slow_call_rate=0.5)


# 15. monotonic only, whatever the time zone ----------------------------------------------


@pytest.fixture(params=["UTC", "America/New_York", "Europe/Berlin"])
def timezone(request: pytest.FixtureRequest) -> Iterator[str]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield str(request.param)
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


async def test_retry_after_ignores_time_zone(timezone: str) -> None:
    breaker, clock, dep, _ = make(failure_threshold=1, open_timeout=5.0)
    await fail(breaker, dep)
    await clock.advance(2.0)
    with pytest.raises(CircuitOpenError) as caught:
        await breaker.call(dep.ok)
    assert caught.value.retry_after == pytest.approx(3.0, abs=1e-3)
    # And on the real monotonic clock: within (0, 5], never negative, never hours off.
    real = CircuitBreaker("real", BreakerSettings(failure_threshold=1, open_timeout=5.0), clock=SYSTEM_CLOCK)
    with pytest.raises(NetworkError):
        await real.call(dep.fail)
    assert 0.0 < real.retry_after() <= 5.0
