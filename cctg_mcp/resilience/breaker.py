"""Circuit breaker: our own small state machine, its settings, statistics and ``Permit``.

Why not a library: aiobreaker 1.2.0 (last release 2021) admits unlimited calls while
half-open, has no success threshold and no failure window, and mixes local time with UTC,
so reopen times are wrong outside UTC. pybreaker is thread-based. What we need is small:

* ``closed -> open`` when, inside the sliding ``monitoring_window`` (bucketed, 10 buckets),
  at least ``minimum_throughput`` calls were seen (the seed's ``volumeThreshold``) and
  either at least ``failure_threshold`` of them were counted failures (a success in
  between does not wipe them), or ``failures / calls >= failure_ratio`` (when set), or
  ``slow / calls >= slow_call_rate`` (when set).
* ``open -> half_open`` lazily: the first call after the break duration is admitted as the
  probe; at most ``half_open_max_calls`` probes in flight, others are rejected at once;
  ``success_threshold`` successes close it, one counted failure re-opens it (for
  ``break_duration_fn(n)`` seconds after the n-th consecutive half-open failure).
* A bulkhead: at most ``max_concurrent`` admitted calls in flight; the excess is rejected at
  once with ``BulkheadFullError`` (never a failure of the dependency).
* Manual ``isolated`` (forced open) and ``disabled`` (admit everything, record nothing; also
  the initial state when ``enabled`` is false). ``forced_by`` says who forced the state.
* Every state change bumps an epoch; a ``Permit`` remembers the epoch it was issued in, so
  late results from an older state change nothing (they only feed the lifetime totals).
* Errors whose ``counts_as_failure`` is false (400, 403, 429, validation) are neutral.
* Time is the injected monotonic ``Clock`` only: immune to time zones and wall-clock jumps.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar, cast

from .clock import SYSTEM_CLOCK, Clock
from .errors import BulkheadFullError, CircuitOpenError, IsolatedCircuitError, classify, redact

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
_BUCKETS = 10  # sliding window granularity: outcomes expire 0.9..1.0 window after they happen


class BreakerState(StrEnum):
    """The states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    ISOLATED = "isolated"
    DISABLED = "disabled"


@dataclass(frozen=True)
class BreakerSettings:
    """When a breaker opens, how long it stays open, and what closes it again."""

    enabled: bool = True  # False: the breaker starts (and stays, unless forced) DISABLED
    failure_threshold: int = 5  # counted failures inside the window that open it
    success_threshold: int = 2  # half-open successes that close it
    open_timeout: float = 30.0  # seconds open before a probe (seed "timeout", ms there)
    monitoring_window: float = 60.0  # seconds, the sliding window every opening rule looks at
    minimum_throughput: int = 1  # calls in the window before any rule applies (seed volumeThreshold)
    failure_ratio: float | None = None  # also open when failures/calls >= ratio in the window
    max_concurrent: int | None = None  # bulkhead (seed maxConcurrentRequests); None = unlimited
    half_open_max_calls: int = 1  # probes in flight at once
    half_open_max_wait: float | None = None  # all permits held, no probe finished this long -> OPEN
    slow_call_threshold: float | None = None  # seconds; successful calls slower than this are slow
    slow_call_rate: float | None = None  # open when slow/calls >= rate (with minimum_throughput)
    break_duration_fn: Callable[[int], float] | None = None  # n-th half-open failure -> open seconds

    def __post_init__(self) -> None:
        for name, low in (
            ("failure_threshold", 1),
            ("success_threshold", 1),
            ("minimum_throughput", 0),
            ("half_open_max_calls", 1),
            ("max_concurrent", 1),
        ):
            value = getattr(self, name)
            if value is None and name == "max_concurrent":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("open_timeout", "monitoring_window", "half_open_max_wait", "slow_call_threshold"):
            value = getattr(self, name)
            if value is None and name in ("half_open_max_wait", "slow_call_threshold"):
                continue
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if not math.isfinite(self.monitoring_window):
            raise ValueError(f"monitoring_window must be finite, got {self.monitoring_window!r}")
        for name in ("failure_ratio", "slow_call_rate"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not 0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if self.slow_call_rate is not None and self.slow_call_threshold is None:
            raise ValueError("slow_call_threshold must be set when slow_call_rate is set")


@dataclass(frozen=True)
class BreakerTransition:
    """One change of a breaker's state, with its reason and whether it was forced."""

    breaker: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float
    manual: bool


@dataclass(frozen=True)
class BreakerStatistics:
    """A breaker's state and counts at one moment."""

    name: str
    state: BreakerState
    retry_after: float | None  # None while isolated (no automatic probe will ever come)
    forced_by: str | None  # who forced the current state (None: reached automatically)
    consecutive_failures: int
    window_calls: int
    window_failures: int
    window_slow: int
    in_flight: int
    max_concurrent: int | None
    total_calls: int
    successes: int
    failures: int
    rejections: int
    bulkhead_rejections: int
    ignored: int
    transitions: int
    opened_at: float | None
    last_failure: str | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


class Permit:
    """One admitted call. Exactly one of the three methods should be called; later calls are no-ops."""

    __slots__ = ("_breaker", "epoch", "probe")

    def __init__(self, breaker: CircuitBreaker | None, epoch: int, probe: bool) -> None:
        self._breaker = breaker  # None once settled (or for the DISABLED permit)
        self.epoch = epoch
        self.probe = probe

    def record_success(self, duration: float = 0.0, result: Any = None) -> None:
        breaker, self._breaker = self._breaker, None
        if breaker is not None:
            breaker._settle_success(self, duration, result)

    def record_failure(self, exc: BaseException, duration: float = 0.0) -> None:
        breaker, self._breaker = self._breaker, None
        if breaker is not None:
            breaker._settle_failure(self, exc)

    def release(self) -> None:
        breaker, self._breaker = self._breaker, None
        if breaker is not None:
            breaker._settle_release(self)


_NOOP_PERMIT = Permit(None, -1, False)


def _default_is_failure(exc: BaseException) -> bool:
    return classify(exc).counts_as_failure


class CircuitBreaker:
    """A circuit breaker: stops calls to a failing component and lets a probe through later."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        is_failure: Callable[[BaseException], bool] | None = None,
        result_is_failure: Callable[[Any], bool] | None = None,
        fallback: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.name = name
        self.settings = s = settings or BreakerSettings()
        self._clock = clock
        self._is_failure = is_failure or _default_is_failure
        self._result_is_failure = result_is_failure
        self._fallback = fallback
        self._listeners: list[Callable[[BreakerTransition], object]] = []
        self._pending: deque[Awaitable[object]] = deque()
        self._state = BreakerState.CLOSED if s.enabled else BreakerState.DISABLED
        self.forced_by: str | None = None if s.enabled else "configuration (enabled: false)"
        self._epoch = 0
        self._active = 0  # admitted calls not settled yet (the bulkhead's count)
        self._max_active = s.max_concurrent if s.max_concurrent is not None else sys.maxsize
        self._in_flight = 0  # half-open permits in use
        self._ho_successes = 0
        self._ho_progress_at = 0.0  # entering half-open or the last finished probe
        self._width = s.monitoring_window / _BUCKETS
        self._slow_threshold = s.slow_call_threshold
        self._zero_totals()
        self._reset_metrics()

    # -- bookkeeping ---------------------------------------------------------------------

    def _zero_totals(self) -> None:
        self._calls = self._successes = self._failures = self._rejections = self._ignored = 0
        self._bulkhead_rejections = self._transitions = 0
        self._opened_at: float | None = None
        self._open_until = 0.0
        self._last_failure: str | None = None

    def _reset_metrics(self) -> None:
        self._consecutive = 0
        self._ho_failures = 0  # consecutive half-open failures (break_duration_fn argument)
        self._clear_window()

    def _clear_window(self) -> None:
        self._w_calls = [0] * _BUCKETS
        self._w_fail = [0] * _BUCKETS
        self._w_slow = [0] * _BUCKETS
        self._wc = self._wf = self._ws = 0
        self._head = math.floor(self._clock.monotonic() / self._width)
        self._slot = self._head % _BUCKETS
        self._bucket_end = (self._head + 1) * self._width

    def _roll(self, now: float) -> int:
        """Advance the window to ``now``; return the slot of the current bucket."""
        if now < self._bucket_end:
            return self._slot
        idx = math.floor(now / self._width)
        head = self._head
        if idx - head >= _BUCKETS:
            self._clear_window()
        else:
            for i in range(head + 1, idx + 1):
                slot = i % _BUCKETS
                self._wc -= self._w_calls[slot]
                self._wf -= self._w_fail[slot]
                self._ws -= self._w_slow[slot]
                self._w_calls[slot] = self._w_fail[slot] = self._w_slow[slot] = 0
        self._head = max(head, idx)
        self._slot = self._head % _BUCKETS
        self._bucket_end = (self._head + 1) * self._width
        return self._slot

    # -- public API ----------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The committed state. OPEN stays OPEN until a call is admitted as the probe."""
        return self._state

    def retry_after(self) -> float:
        """Seconds until a probe is allowed: 0 when closed/half-open/disabled, inf when isolated."""
        if self._state is BreakerState.OPEN:
            return max(0.0, self._open_until - self._clock.monotonic())
        if self._state is BreakerState.ISOLATED:
            return math.inf
        return 0.0

    def acquire(self) -> Permit:
        """Admit one call or raise ``CircuitOpenError`` / ``IsolatedCircuitError`` /
        ``BulkheadFullError``."""
        if self._state is BreakerState.CLOSED and self._active < self._max_active:
            self._calls += 1
            self._active += 1
            return Permit(self, self._epoch, False)
        return self._acquire_slow()

    def _acquire_slow(self) -> Permit:
        state = self._state
        if state is BreakerState.DISABLED:
            return _NOOP_PERMIT
        if state is BreakerState.ISOLATED:
            self._rejections += 1
            raise IsolatedCircuitError(
                f"circuit {self.name!r} is isolated by {self.forced_by or 'an operator'}; close it to resume"
            )
        now = self._clock.monotonic()
        if state is BreakerState.OPEN and now < self._open_until:
            self._reject(now)
        if self._active >= self._max_active:
            self._bulkhead_rejections += 1
            raise BulkheadFullError(
                f"{self.name}: {self._active} calls already in flight (maxConcurrentRequests "
                f"{self._max_active}); this one was not made"
            )
        if state is BreakerState.OPEN:
            self._transition(BreakerState.HALF_OPEN, "open_timeout_elapsed", now)
        s = self.settings
        if self._in_flight >= s.half_open_max_calls:
            wait = s.half_open_max_wait
            if wait is not None and now - self._ho_progress_at >= wait:
                self._open(now, "half_open_max_wait", escalate=True)
            self._reject(now)
        self._in_flight += 1
        self._calls += 1
        self._active += 1
        return Permit(self, self._epoch, True)

    def _reject(self, now: float) -> None:
        self._rejections += 1
        retry_after = max(0.0, self._open_until - now) if self._state is BreakerState.OPEN else 0.0
        raise CircuitOpenError(
            f"circuit {self.name!r} is {self._state.value}; retry in {retry_after:.3f}s",
            retry_after=retry_after,
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Acquire, await ``fn``, record. A rejection goes to ``fallback(exc, *args, **kwargs)``
        when one was given; a tripping call re-raises its own exception."""
        try:
            permit = self.acquire()
        except (CircuitOpenError, IsolatedCircuitError, BulkheadFullError) as exc:
            if self._pending:
                await self._drain()
            if self._fallback is None:
                raise
            return cast(T, await self._fallback(exc, *args, **kwargs))
        clock = self._clock
        start = clock.monotonic()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            permit.record_failure(exc, clock.monotonic() - start)
            if self._pending:
                await self._drain()
            raise
        except BaseException:  # cancellation, KeyboardInterrupt: says nothing about the dependency
            permit.release()
            raise
        permit.record_success(clock.monotonic() - start, result)
        if self._pending:
            await self._drain()
        return result

    # -- manual control: ``by`` names who forced it (shown in the status) -------------------

    def isolate(self, by: str = "api") -> None:
        """Forced open: every call is rejected until ``close``/``reset``."""
        self._manual(BreakerState.ISOLATED, "manual_isolate", by)

    def close(self, by: str = "api") -> None:
        self._reset_metrics()
        self._manual(BreakerState.CLOSED, "manual_close", by)

    def disable(self, by: str = "api") -> None:
        self._manual(BreakerState.DISABLED, "manual_disable", by)

    def reset(self, by: str = "api") -> None:
        """Back to a fresh CLOSED breaker: metrics and lifetime totals zeroed."""
        self._reset_metrics()
        self._manual(BreakerState.CLOSED, "manual_reset", by)
        self.forced_by = None
        self._zero_totals()

    def probe_now(self) -> None:
        """If OPEN, admit the next call as a probe without waiting for the break to end."""
        if self._state is BreakerState.OPEN:
            self._open_until = min(self._open_until, self._clock.monotonic())

    @property
    def listeners(self) -> tuple[Callable[[BreakerTransition], object], ...]:
        return tuple(self._listeners)

    def add_listener(self, fn: Callable[[BreakerTransition], object]) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[BreakerTransition], object]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def statistics(self) -> BreakerStatistics:
        self._roll(self._clock.monotonic())
        retry_after = self.retry_after()
        return BreakerStatistics(
            name=self.name,
            state=self._state,
            retry_after=None if math.isinf(retry_after) else retry_after,
            forced_by=self.forced_by,
            consecutive_failures=self._consecutive,
            window_calls=self._wc,
            window_failures=self._wf,
            window_slow=self._ws,
            in_flight=self._active,
            max_concurrent=self.settings.max_concurrent,
            total_calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            rejections=self._rejections,
            bulkhead_rejections=self._bulkhead_rejections,
            ignored=self._ignored,
            transitions=self._transitions,
            opened_at=self._opened_at,
            last_failure=self._last_failure,
        )

    async def aclose(self) -> None:
        """Await every async listener call still pending."""
        await self._drain()

    # -- outcomes (called by Permit) --------------------------------------------------------

    def _settle_success(self, permit: Permit, duration: float, result: Any) -> None:
        self._active -= 1
        if self._result_is_failure is not None:
            try:
                bad = self._result_is_failure(result)
            except Exception:
                logger.exception("breaker %s: result_is_failure raised; counting a success", self.name)
                bad = False
            if bad:
                self._count_failure(permit, "result: " + repr(result)[:200])
                return
        self._successes += 1
        if permit.epoch != self._epoch:
            return  # late result from an older state: inert
        now = self._clock.monotonic()
        if permit.probe:
            self._in_flight -= 1
            self._ho_progress_at = now
            self._ho_successes += 1
            if self._ho_successes >= self.settings.success_threshold:
                self._reset_metrics()
                self._transition(BreakerState.CLOSED, "success_threshold", now)
            return
        self._consecutive = 0
        slot = self._slot if now < self._bucket_end else self._roll(now)
        self._w_calls[slot] += 1
        self._wc += 1
        threshold = self._slow_threshold
        if threshold is not None and duration > threshold:
            self._w_slow[slot] += 1
            self._ws += 1
            s = self.settings
            rate = s.slow_call_rate
            if rate is not None and self._wc >= s.minimum_throughput and self._ws / self._wc >= rate:
                self._open(now, "slow_call_rate")

    def _settle_failure(self, permit: Permit, exc: BaseException) -> None:
        try:
            counts = self._is_failure(exc)
        except Exception:
            logger.exception("breaker %s: is_failure predicate raised; counting the error", self.name)
            counts = True
        if counts:
            self._active -= 1
            self._count_failure(permit, f"{type(exc).__name__}: {exc}")
            return
        self._ignored += 1
        self._settle_release(permit)

    def _settle_release(self, permit: Permit) -> None:
        self._active -= 1
        if permit.probe and permit.epoch == self._epoch:
            self._in_flight -= 1
            self._ho_progress_at = self._clock.monotonic()

    def _count_failure(self, permit: Permit, description: str) -> None:
        self._failures += 1
        self._last_failure = redact(description)
        if permit.epoch != self._epoch:
            return  # late result from an older state: inert
        now = self._clock.monotonic()
        if permit.probe:
            self._in_flight -= 1
            self._open(now, "half_open_probe_failed", escalate=True)
            return
        self._consecutive += 1
        slot = self._roll(now)
        self._w_calls[slot] += 1
        self._w_fail[slot] += 1
        self._wc += 1
        self._wf += 1
        s = self.settings
        if self._wc < s.minimum_throughput:
            return
        if self._wf >= s.failure_threshold:
            self._open(now, "failure_threshold")
        elif s.failure_ratio is not None and self._wf / self._wc >= s.failure_ratio:
            self._open(now, "failure_ratio")

    # -- transitions ---------------------------------------------------------------------

    def _open(self, now: float, reason: str, *, escalate: bool = False) -> None:
        duration = self.settings.open_timeout
        if escalate:
            self._ho_failures += 1
            fn = self.settings.break_duration_fn
            if fn is not None:
                try:
                    duration = max(0.0, float(fn(self._ho_failures)))
                except Exception:
                    logger.exception("breaker %s: break_duration_fn raised; using open_timeout", self.name)
        self._opened_at = now
        self._open_until = now + duration
        self.forced_by = None
        self._transition(BreakerState.OPEN, reason, now)

    def _manual(self, to: BreakerState, reason: str, by: str) -> None:
        self.forced_by = by
        if self._state is not to:
            self._transition(to, reason, self._clock.monotonic(), manual=True)

    def _transition(self, to: BreakerState, reason: str, now: float, *, manual: bool = False) -> None:
        from_state = self._state
        if not manual:
            self.forced_by = None
        # Commit everything before anyone is told.
        self._state = to
        self._epoch += 1
        self._transitions += 1
        if to is BreakerState.HALF_OPEN:
            self._in_flight = 0
            self._ho_successes = 0
            self._ho_progress_at = now
        log = logger.warning if to in (BreakerState.OPEN, BreakerState.ISOLATED) else logger.info
        log("breaker %s: %s -> %s (%s)", self.name, from_state.value, to.value, reason)
        if self._listeners:
            event = BreakerTransition(self.name, from_state, to, reason, now, manual)
            for listener in tuple(self._listeners):
                try:
                    outcome = listener(event)
                except Exception:
                    logger.exception("breaker %s: listener %r raised", self.name, listener)
                    continue
                if inspect.isawaitable(outcome):
                    self._pending.append(outcome)

    async def _drain(self) -> None:
        while self._pending:
            awaitable = self._pending.popleft()
            try:
                await awaitable
            except Exception:
                logger.exception("breaker %s: async listener raised", self.name)
