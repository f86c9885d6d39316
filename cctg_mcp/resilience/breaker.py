"""Circuit breaker: our own small state machine.

Why not a library: aiobreaker 1.2.0 (last release 2021) admits unlimited calls while
half-open, has no success threshold and no failure window, and mixes local time with UTC,
so reopen times are wrong outside UTC. pybreaker is thread-based. What we need is small:

* ``closed -> open`` on ``failure_threshold`` consecutive counted failures, or (when
  ``failure_ratio`` / ``slow_call_rate`` is set) on a ratio over a bucketed sliding window of
  ``monitoring_window`` seconds once ``minimum_throughput`` calls were seen (``>=``).
* ``open -> half_open`` lazily: the first call after the break duration is admitted as the
  probe; at most ``half_open_max_calls`` probes in flight, others are rejected at once;
  ``success_threshold`` successes close it, one counted failure re-opens it (for
  ``break_duration_fn(n)`` seconds after the n-th consecutive half-open failure).
* Manual ``isolated`` (forced open) and ``disabled`` (admit everything, record nothing).
* Every state change bumps an epoch; a ``Permit`` remembers the epoch it was issued in, so
  late results from an older state change nothing (they only feed the lifetime totals).
* Errors whose ``counts_as_failure`` is false (400, 403, 429, validation) are neutral.
* Time is the injected monotonic ``Clock`` only: immune to time zones and wall-clock jumps.

The closed path (``acquire`` + ``record_success``) is a handful of attribute updates and one
small slotted object; nothing awaits between a state check and the state update.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from .breaker_types import BreakerSettings as BreakerSettings
from .breaker_types import BreakerState as BreakerState
from .breaker_types import BreakerStatistics as BreakerStatistics
from .breaker_types import BreakerTransition as BreakerTransition
from .breaker_types import Permit as Permit
from .clock import SYSTEM_CLOCK, Clock
from .errors import CircuitOpenError, IsolatedCircuitError, classify, redact

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
_BUCKETS = 10  # sliding window granularity: outcomes expire 0.9..1.0 window after they happen


_NOOP_PERMIT = Permit(None, -1, False)


def _default_is_failure(exc: BaseException) -> bool:
    return classify(exc).counts_as_failure


class CircuitBreaker:
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
        self._state = BreakerState.CLOSED
        self._epoch = 0
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
        self._transitions = 0
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
        """Admit one call or raise ``CircuitOpenError`` / ``IsolatedCircuitError``."""
        if self._state is BreakerState.CLOSED:
            self._calls += 1
            return Permit(self, self._epoch, False)
        return self._acquire_slow()

    def _acquire_slow(self) -> Permit:
        state = self._state
        if state is BreakerState.DISABLED:
            return _NOOP_PERMIT
        if state is BreakerState.ISOLATED:
            self._rejections += 1
            raise IsolatedCircuitError(f"circuit {self.name!r} is isolated (manual); close() it to resume")
        now = self._clock.monotonic()
        if state is BreakerState.OPEN:
            if now < self._open_until:
                self._reject(now)
            self._transition(BreakerState.HALF_OPEN, "open_timeout_elapsed", now)
        s = self.settings
        if self._in_flight >= s.half_open_max_calls:
            wait = s.half_open_max_wait
            if wait is not None and now - self._ho_progress_at >= wait:
                self._open(now, "half_open_max_wait", escalate=True)
            self._reject(now)
        self._in_flight += 1
        self._calls += 1
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
        except (CircuitOpenError, IsolatedCircuitError) as exc:
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

    def isolate(self) -> None:
        self._manual(BreakerState.ISOLATED, "manual_isolate")

    def close(self) -> None:
        self._reset_metrics()
        self._manual(BreakerState.CLOSED, "manual_close")

    def disable(self) -> None:
        self._manual(BreakerState.DISABLED, "manual_disable")

    def reset(self) -> None:
        """Back to a fresh CLOSED breaker: metrics and lifetime totals zeroed."""
        self._reset_metrics()
        self._manual(BreakerState.CLOSED, "manual_reset")
        self._zero_totals()

    def probe_now(self) -> None:
        """If OPEN, admit the next call as a probe without waiting for the break to end."""
        if self._state is BreakerState.OPEN:
            self._open_until = min(self._open_until, self._clock.monotonic())

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
            consecutive_failures=self._consecutive,
            window_calls=self._wc,
            window_failures=self._wf,
            window_slow=self._ws,
            total_calls=self._calls,
            successes=self._successes,
            failures=self._failures,
            rejections=self._rejections,
            ignored=self._ignored,
            transitions=self._transitions,
            opened_at=self._opened_at,
            last_failure=self._last_failure,
        )

    async def aclose(self) -> None:
        """Await every async listener call still pending."""
        await self._drain()

    # -- outcomes ------------------------------------------------------------------------

    def _on_success(self, permit: Permit, duration: float, result: Any) -> None:
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
        if permit._epoch != self._epoch:
            return  # late result from an older state: inert
        now = self._clock.monotonic()
        if permit._probe:
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

    def _on_failure(self, permit: Permit, exc: BaseException) -> None:
        try:
            counts = self._is_failure(exc)
        except Exception:
            logger.exception("breaker %s: is_failure predicate raised; counting the error", self.name)
            counts = True
        if counts:
            self._count_failure(permit, f"{type(exc).__name__}: {exc}")
            return
        self._ignored += 1
        self._on_release(permit)

    def _on_release(self, permit: Permit) -> None:
        if permit._probe and permit._epoch == self._epoch:
            self._in_flight -= 1
            self._ho_progress_at = self._clock.monotonic()

    def _count_failure(self, permit: Permit, description: str) -> None:
        self._failures += 1
        self._last_failure = redact(description)
        if permit._epoch != self._epoch:
            return  # late result from an older state: inert
        now = self._clock.monotonic()
        if permit._probe:
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
        if self._consecutive >= s.failure_threshold:
            self._open(now, "consecutive_failures")
            return
        ratio = s.failure_ratio
        if ratio is not None and self._wc >= s.minimum_throughput and self._wf / self._wc >= ratio:
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
        self._transition(BreakerState.OPEN, reason, now)

    def _manual(self, to: BreakerState, reason: str) -> None:
        if self._state is not to:
            self._transition(to, reason, self._clock.monotonic(), manual=True)

    def _transition(self, to: BreakerState, reason: str, now: float, *, manual: bool = False) -> None:
        from_state = self._state
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
