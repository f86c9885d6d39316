"""Retry executor: schedules, server-directed waits, deadlines, classification, severity, observers.

Everything runs in virtual time (FakeClock), on asyncio and trio, with seeded RNGs.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.errors import (
    AttemptTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
    IsolatedCircuitError,
    NetworkError,
    Severity,
    TelegramBadRequest,
    TelegramForbidden,
    TelegramRateLimited,
    TelegramServerError,
    TelegramUnauthorized,
    ValidationError,
)
from cctg_mcp.resilience.retry import (
    SEED_SEVERITY_ATTEMPTS,
    BackoffKind,
    RetryEvent,
    RetryExecutor,
    RetryPolicy,
)

pytestmark = pytest.mark.anyio

D16 = RetryPolicy(max_attempts=4, base_delay=0.1, exponential_base=2, max_delay=1.0, jitter=False)


class Script:
    """An async callable that raises (or returns) the scripted outcomes in order."""

    def __init__(self, *outcomes: BaseException | Callable[[], BaseException] | object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.raised: list[BaseException] = []

    async def __call__(self) -> Any:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if callable(outcome) and not isinstance(outcome, BaseException):
            outcome = outcome()
        if isinstance(outcome, BaseException):
            self.raised.append(outcome)
            raise outcome
        return outcome


def always(factory: Callable[[], BaseException]) -> Script:
    return Script(factory)


async def drive(
    executor: RetryExecutor, fn: Callable[[], Awaitable[Any]], **kwargs: Any
) -> tuple[Any, BaseException | None]:
    """Run in virtual time; return (result, error) so errors are not wrapped by task groups."""
    assert isinstance(executor.clock, FakeClock)
    async with executor.clock.autojump():
        with anyio.fail_after(10):
            try:
                return await executor.run(fn, **kwargs), None
            except Exception as exc:
                return None, exc


def notes(error: BaseException | None) -> list[str]:
    assert error is not None
    return list(getattr(error, "__notes__", []))


def make(policy: RetryPolicy, seed: int = 0, name: str = "t") -> tuple[RetryExecutor, FakeClock]:
    clock = FakeClock()
    return RetryExecutor(policy, clock=clock, rng=random.Random(seed), name=name), clock


# --- the first attempt ---------------------------------------------------------------


async def test_first_attempt_success_plans_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the retry planner ran on the success path")

    executor, clock = make(D16)
    monkeypatch.setattr(executor, "_plan", forbidden)
    result, error = await drive(executor, Script("ok"))
    assert (result, error) == ("ok", None)
    assert clock.sleeps == []
    assert executor.statistics.first_try_successes == 1
    assert executor.statistics.retries == 0


# --- schedules (D.16) ----------------------------------------------------------------


async def test_exponential_schedule_and_original_error_with_note() -> None:
    executor, clock = make(D16)
    fn = always(lambda: NetworkError("connection refused"))
    _, error = await drive(executor, fn)
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert fn.calls == 4
    assert type(error) is NetworkError
    assert error is fn.raised[-1]
    assert any("attempt 4 of 4" in note for note in notes(error))
    assert executor.statistics.to_dict() | {"last_delays": None} == {
        "operations": 1,
        "first_try_successes": 0,
        "retried_operations": 1,
        "retry_successes": 0,
        "retries": 3,
        "gave_up": 1,
        "non_retryable": 0,
        "retry_after_waits": 0,
        "deadline_give_ups": 0,
        "last_delays": None,
    }


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(5, 1.0, 5.0, 3.0, BackoffKind.EXPONENTIAL, jitter=False), [1.0, 3.0, 5.0, 5.0]),
        (RetryPolicy(5, 0.5, 1.2, backoff=BackoffKind.LINEAR, jitter=False), [0.5, 1.0, 1.2, 1.2]),
        (RetryPolicy(4, 0.5, 10.0, backoff=BackoffKind.FIXED, jitter=False), [0.5, 0.5, 0.5]),
        (RetryPolicy(4, 0.5, 10.0, backoff="linear", jitter=False), [0.5, 1.0, 1.5]),  # type: ignore[arg-type]
    ],
)
async def test_schedules(policy: RetryPolicy, expected: list[float]) -> None:
    executor, clock = make(policy)
    fn = always(lambda: TelegramServerError("502"))
    _, error = await drive(executor, fn)
    assert clock.sleeps == pytest.approx(expected)
    assert fn.calls == policy.max_attempts
    assert error is fn.raised[-1]


async def test_jitter_with_seed_stays_in_band_and_under_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=1.0, jitter=True, jitter_max=0.5)
    runs = []
    for _ in range(2):
        executor, clock = make(policy, seed=42)
        await drive(executor, always(lambda: NetworkError("reset")))
        runs.append(clock.sleeps)
    assert runs[0] == runs[1]  # seeded: reproducible
    sleeps = runs[0]
    assert len(sleeps) == 7
    for n, slept in enumerate(sleeps, start=1):
        d = min(0.1 * 2 ** (n - 1), 1.0)
        assert d <= slept <= d + 0.5
        assert slept <= 1.0
    assert any(slept > min(0.1 * 2 ** (n - 1), 1.0) for n, slept in enumerate(sleeps, 1))


@given(
    n=st.integers(1, 2000),
    base=st.floats(0.001, 5),
    extra=st.floats(0, 50),
    factor=st.floats(1.01, 10),
    jitter_max=st.floats(0, 3),
    kind=st.sampled_from(list(BackoffKind)),
    seed=st.integers(0, 2**32),
)
def test_delay_for_bounds(
    n: int, base: float, extra: float, factor: float, jitter_max: float, kind: BackoffKind, seed: int
) -> None:
    policy = RetryPolicy(
        base_delay=base, max_delay=base + extra, exponential_base=factor, backoff=kind, jitter_max=jitter_max
    )
    plain = RetryPolicy(base_delay=base, max_delay=base + extra, exponential_base=factor, backoff=kind, jitter=False)
    d = plain.delay_for(n, random.Random(seed))
    jittered = policy.delay_for(n, random.Random(seed))
    assert base <= d <= policy.max_delay
    assert d <= jittered <= min(d + jitter_max, policy.max_delay)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base_delay": 0}, "base_delay"),
        ({"base_delay": float("nan")}, "base_delay"),
        ({"base_delay": 5, "max_delay": 4}, "max_delay"),
        ({"exponential_base": 1.0}, "exponential_base"),
        ({"jitter_max": -1}, "jitter_max"),
    ],
)
def test_policy_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_exponential_base_is_free_for_other_kinds() -> None:
    assert RetryPolicy(exponential_base=1.0, backoff=BackoffKind.FIXED).backoff is BackoffKind.FIXED


# --- server-directed waits and the deadline (D.17) -------------------------------------


async def test_429_sleeps_exactly_retry_after_uncapped_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0, jitter=True, jitter_max=0.5)
    executor, clock = make(policy, seed=42)
    fn = Script(TelegramRateLimited("429", retry_after=7), "sent")
    result, error = await drive(executor, fn)
    assert (result, error) == ("sent", None)
    assert clock.sleeps == [7.0]
    assert executor.statistics.retry_after_waits == 1
    assert executor.statistics.retry_successes == 1


async def test_429_beyond_budget_fails_fast_with_original_error() -> None:
    executor, clock = make(D16)
    start = clock.monotonic()
    rate_limited = TelegramRateLimited("429", retry_after=7)
    fn = Script(rate_limited, "sent")
    _, error = await drive(executor, fn, deadline=start + 5)
    assert error is rate_limited
    assert fn.calls == 1
    assert clock.sleeps == []
    assert clock.monotonic() == start
    assert any("deadline" in note and "attempt 1 of 4" in note for note in notes(error))
    assert executor.statistics.deadline_give_ups == 1


async def test_computed_backoff_never_sleeps_past_the_deadline() -> None:
    executor, clock = make(RetryPolicy(max_attempts=10, base_delay=1, max_delay=60, jitter=False))
    start = clock.monotonic()
    fn = always(lambda: NetworkError("down"))
    _, error = await drive(executor, fn, deadline=start + 3.5)
    assert clock.sleeps == [1, 2]  # the next wait (4 s) would pass the deadline
    assert fn.calls == 3
    assert error is fn.raised[-1]
    assert clock.monotonic() - start <= 3.5


async def test_mixed_waits_stay_within_budget() -> None:
    executor, clock = make(RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=2, jitter_max=0.4), seed=7)
    start = clock.monotonic()
    fn = Script(
        NetworkError("a"),
        TelegramRateLimited("429", retry_after=3),
        NetworkError("b"),
        TelegramRateLimited("429", retry_after=4),
        NetworkError("c"),
    )
    await drive(executor, fn, deadline=start + 6)
    assert clock.monotonic() - start <= 6
    assert sum(clock.sleeps) <= 6
    assert 3 in clock.sleeps and 4 not in clock.sleeps


# --- classification (D.18) -----------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: TelegramBadRequest("400", error_code=400),
        lambda: TelegramUnauthorized("401", error_code=401),
        lambda: TelegramForbidden("403 blocked", error_code=403),
        lambda: ValidationError("bad input"),
        lambda: ValueError("plain bug"),
        lambda: IsolatedCircuitError("isolated"),
        lambda: DeadlineExceededError("out of time"),
    ],
)
async def test_permanent_errors_are_attempted_once(factory: Callable[[], BaseException]) -> None:
    executor, clock = make(D16)
    fn = always(factory)
    _, error = await drive(executor, fn)
    assert fn.calls == 1
    assert clock.sleeps == []
    assert error is fn.raised[0]
    assert any("not retryable" in note for note in notes(error))
    assert executor.statistics.non_retryable == 1


@pytest.mark.parametrize(
    "factory",
    [
        lambda: TelegramServerError("502", error_code=502),
        lambda: NetworkError("reset"),
        lambda: AttemptTimeoutError("slow"),
        lambda: ConnectionRefusedError(111, "refused"),
        lambda: TimeoutError(),
    ],
)
async def test_transient_errors_are_retried(factory: Callable[[], BaseException]) -> None:
    executor, clock = make(D16)
    fn = always(factory)
    _, error = await drive(executor, fn)
    assert fn.calls == 4
    assert len(clock.sleeps) == 3
    assert error is fn.raised[-1]


async def test_open_breaker_is_retried_only_within_budget() -> None:
    executor, clock = make(D16)
    start = clock.monotonic()
    fn = Script(CircuitOpenError("open", retry_after=2.0), "ok")
    assert await drive(executor, fn, deadline=start + 5) == ("ok", None)
    assert clock.sleeps == [2.0]

    executor, clock = make(D16)
    start = clock.monotonic()
    rejection = CircuitOpenError("open", retry_after=10.0)
    fn = Script(rejection, "ok")
    assert await drive(executor, fn, deadline=start + 5) == (None, rejection)
    assert fn.calls == 1
    assert clock.sleeps == []


async def test_cancellation_during_backoff_sleep_stops_at_once() -> None:
    executor = RetryExecutor(
        RetryPolicy(max_attempts=5, base_delay=10, max_delay=10, jitter=False), clock=(clock := FakeClock())
    )
    fn = always(lambda: NetworkError("down"))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def operation() -> None:
                await executor.run(fn)
                raise AssertionError("run() returned although it was cancelled")

            tg.start_soon(operation)
            await anyio.wait_all_tasks_blocked()
            assert fn.calls == 1
            assert clock.sleeps == [10]
            tg.cancel_scope.cancel()
        await clock.advance(100)
    assert fn.calls == 1
    assert clock.pending_timers == 0
    assert executor.statistics.gave_up == 0


async def test_code_overrides() -> None:
    server_once = RetryPolicy(max_attempts=3, jitter=False, non_retryable_codes=frozenset({"TELEGRAM_SERVER_ERROR"}))
    executor, _ = make(server_once)
    fn = always(lambda: TelegramServerError("502"))
    await drive(executor, fn)
    assert fn.calls == 1

    # Listed retryable codes win over .retryable=False; errors by other codes keep their own flag.
    listed = RetryPolicy(max_attempts=3, jitter=False, retryable_codes={"INVALID_INPUT"})  # type: ignore[arg-type]
    executor, _ = make(listed)
    fn = always(lambda: ValidationError("flaky validator"))
    await drive(executor, fn)
    assert fn.calls == 3
    fn = always(lambda: NetworkError("reset"))
    await drive(executor, fn)
    assert fn.calls == 3

    both = RetryPolicy(
        max_attempts=3,
        jitter=False,
        retryable_codes=frozenset({"ECONNREFUSED"}),
        non_retryable_codes=frozenset({"ECONNREFUSED"}),
    )
    executor, _ = make(both)
    fn = always(lambda: ConnectionRefusedError(111, "refused"))
    await drive(executor, fn)
    assert fn.calls == 1


async def test_max_attempts_one_means_no_retry() -> None:
    executor, clock = make(RetryPolicy(max_attempts=1))
    fn = always(lambda: NetworkError("down"))
    _, error = await drive(executor, fn)
    assert fn.calls == 1
    assert clock.sleeps == []
    assert any("attempt 1 of 1" in note for note in notes(error))


# --- observers ----------------------------------------------------------------------------


async def test_observers_see_every_retry() -> None:
    def broken(event: RetryEvent) -> None:
        raise RuntimeError("observer bug")

    executor, _ = make(D16, name="telegram")
    per_executor: list[RetryEvent] = []
    per_call: list[RetryEvent] = []
    executor.add_observer(per_executor.append)
    executor.add_observer(broken)  # a broken observer changes nothing
    fn = Script(NetworkError("a"), TelegramServerError("b"), NetworkError("c"), "done")
    assert await drive(executor, fn, on_retry=per_call.append) == ("done", None)
    assert per_call == per_executor
    assert [(e.attempt, e.max_attempts, e.code) for e in per_call] == [
        (1, 4, "NETWORK_ERROR"),
        (2, 4, "TELEGRAM_SERVER_ERROR"),
        (3, 4, "NETWORK_ERROR"),
    ]
    assert [e.delay for e in per_call] == pytest.approx([0.1, 0.2, 0.4])
    assert not any(e.server_directed for e in per_call)
    assert [e.error for e in per_call] == fn.raised


# --- attempts by severity (the seed's getDefaultMaxAttempts) --------------------------------

SEVERITY = RetryPolicy(
    max_attempts=6, base_delay=0.1, max_delay=1.0, jitter=False, severity_attempts=SEED_SEVERITY_ATTEMPTS
)


@pytest.mark.parametrize(
    ("severity", "attempts"), [("critical", 5), ("high", 3), ("medium", 2), ("low", 1)], ids=lambda v: str(v)
)
async def test_attempts_follow_the_error_severity(severity: str, attempts: int) -> None:
    executor, clock = make(SEVERITY)
    fn = always(lambda: NetworkError("down", severity=Severity(severity)))
    _, error = await drive(executor, fn)
    assert fn.calls == attempts
    assert len(clock.sleeps) == attempts - 1
    assert any(f"attempt {attempts} of 6" in note for note in notes(error))


async def test_severity_never_raises_max_attempts_and_429_is_exempt() -> None:
    executor, _ = make(
        RetryPolicy(max_attempts=2, base_delay=0.1, jitter=False, severity_attempts=SEED_SEVERITY_ATTEMPTS)
    )
    fn = always(lambda: NetworkError("down", severity=Severity.CRITICAL))
    await drive(executor, fn)
    assert fn.calls == 2  # critical allows 5, max_attempts says 2
    executor, clock = make(SEVERITY)
    fn = Script(*[TelegramRateLimited("429", error_code=429, retry_after=1) for _ in range(3)], "sent")
    assert await drive(executor, fn) == ("sent", None)  # a 429 is low severity, but the server said when
    assert clock.sleeps == [1.0, 1.0, 1.0]
