"""Retry with our schedule and our clock; stamina drives the retries.

How stamina is used
    stamina's ``retry_context`` always sleeps through its own ``asyncio.sleep``/``trio.sleep``
    (no injectable clock) and measures ``timeout`` on the wall clock, so it cannot give us
    virtual time or a deadline on the injected ``Clock``. We therefore run
    ``stamina.retry_context(on=<hook>, attempts=max_attempts, timeout=None, wait_*=0)``:

    * stamina owns the loop: the attempt count, the stop decision, re-raising the last
      error unchanged, its global switches (``set_active(False)`` disables retries,
      ``set_testing(True, attempts=n)`` caps them and we then skip the backoff sleeps) and
      its instrumentation: every scheduled retry calls stamina's on-retry hooks with a
      ``RetryDetails`` (``name="cctg_mcp.retry.<executor name>"``, ``retry_num``,
      ``caused_by``). Its own waits are 0 (a bare checkpoint), so ``RetryDetails.wait_for``
      is 0; the real delay is in our ``RetryEvent`` (``add_observer`` / ``on_retry``).
    * the ``on`` hook is ours: it classifies the error, computes the delay (backoff, or a
      server-directed ``retry_after``) and checks the deadline; the body sleeps that delay
      on the injected clock, outside stamina's attempt block, so a cancellation during a
      backoff sleep propagates at once.
    * the first attempt is a plain ``await fn()`` (success costs < 1 µs, never touches
      stamina). After a failure, stamina's first "attempt" re-raises that failure without
      calling ``fn`` again, so stamina's attempt numbers and hook calls match ours.

Decisions
    * Classification by ``classify(exc).code``: ``non_retryable_codes`` never retry;
      ``retryable_codes`` always retry (even when ``.retryable`` is False); any other code
      falls back to the error's ``.retryable``. A ``DeadlineExceededError`` is never retried
      unless listed. Cancellation and other non-``Exception`` errors are never retried.
    * A delay the error dictates (``retry_after``: Telegram 429, open breaker) is used as
      is: no backoff, no jitter, no ``max_delay`` cap. It still uses up an attempt.
    * Computed backoff: ``min(max_delay, d + uniform(0, jitter_max))`` where ``d`` is the
      capped exponential/linear/fixed delay: every sleep is in ``[d, d + jitter_max]`` and
      never above ``max_delay`` (as stamina does).
    * ``deadline`` is an absolute ``clock.monotonic()`` time. A retry whose delay exceeds
      the time left is not taken: the original error is re-raised at once. The retry layer
      never cancels a running attempt; the pipeline's outer deadline scope does that.
    * The error that ends the operation is re-raised as is (same object) with a note such
      as ``retry default: gave up after attempt 4 of 4 (attempts exhausted)``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

import stamina
from stamina.instrumentation import RetryHook, get_on_retry_hooks, set_on_retry_hooks

from .clock import SYSTEM_CLOCK, Clock
from .errors import DeadlineExceededError, classify

T = TypeVar("T")
log = logging.getLogger(__name__)

STAMINA_NAME_PREFIX = "cctg_mcp.retry."


class BackoffKind(StrEnum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3  # total attempts including the first
    base_delay: float = 1.0  # seconds
    max_delay: float = 10.0  # cap for computed backoff (not for a server's retry_after)
    exponential_base: float = 2.0
    backoff: BackoffKind = BackoffKind.EXPONENTIAL
    jitter: bool = True
    jitter_max: float = 0.5  # seconds of additive jitter, uniform in [0, jitter_max]
    retryable_codes: frozenset[str] = frozenset()
    non_retryable_codes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Accept plain strings and iterables from config files.
        object.__setattr__(self, "backoff", BackoffKind(self.backoff))
        object.__setattr__(self, "retryable_codes", frozenset(self.retryable_codes))
        object.__setattr__(self, "non_retryable_codes", frozenset(self.non_retryable_codes))
        if not self.max_attempts >= 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if not self.base_delay > 0:
            raise ValueError(f"base_delay must be > 0, got {self.base_delay!r}")
        if not self.max_delay >= self.base_delay:
            raise ValueError(f"max_delay must be >= base_delay, got {self.max_delay!r}")
        if self.backoff is BackoffKind.EXPONENTIAL and not self.exponential_base > 1:
            raise ValueError(f"exponential_base must be > 1, got {self.exponential_base!r}")
        if not self.jitter_max >= 0:
            raise ValueError(f"jitter_max must be >= 0, got {self.jitter_max!r}")

    def delay_for(self, retry_number: int, rng: random.Random) -> float:
        """Backoff before retry ``retry_number`` (1 = the first retry), jitter included."""
        n = max(1, retry_number)
        if self.backoff is BackoffKind.EXPONENTIAL:
            try:
                delay = self.base_delay * self.exponential_base ** (n - 1)
            except OverflowError:
                delay = self.max_delay
        elif self.backoff is BackoffKind.LINEAR:
            delay = self.base_delay * n
        else:
            delay = self.base_delay
        delay = min(delay, self.max_delay)
        if self.jitter and self.jitter_max > 0:
            delay = min(delay + rng.uniform(0.0, self.jitter_max), self.max_delay)
        return delay


@dataclass(frozen=True)
class RetryEvent:
    """A retry about to happen: ``attempt`` failed and we wait ``delay`` seconds."""

    name: str
    attempt: int
    max_attempts: int
    delay: float
    error: Exception
    code: str
    server_directed: bool  # the delay is the error's retry_after (429, open breaker)


@dataclass
class RetryStatistics:
    operations: int = 0
    first_try_successes: int = 0
    retried_operations: int = 0  # operations that slept at least once
    retry_successes: int = 0  # operations that succeeded on a retry
    retries: int = 0  # total backoff sleeps
    gave_up: int = 0  # operations that ended with an error
    non_retryable: int = 0  # ... because the error is not retryable
    retry_after_waits: int = 0  # sleeps dictated by the error's retry_after
    deadline_give_ups: int = 0  # ... because the next wait would pass the deadline
    last_delays: deque[float] = field(default_factory=lambda: deque(maxlen=32))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["last_delays"] = list(self.last_delays)
        return out


def add_stamina_hook(hook: RetryHook) -> Callable[[], None]:
    """Add ``hook`` to stamina's global on-retry hooks (keeping the others); returns an undo.

    The hook receives ``stamina.instrumentation.RetryDetails`` for every retry any executor
    schedules; ``details.name`` is ``STAMINA_NAME_PREFIX + executor name``.
    """
    set_on_retry_hooks((*get_on_retry_hooks(), hook))

    def remove() -> None:
        set_on_retry_hooks(tuple(h for h in get_on_retry_hooks() if h is not hook))

    return remove


def _add_note(exc: BaseException, note: str) -> None:
    add = getattr(exc, "add_note", None)  # Python 3.11+
    if add is not None:
        add(note)
        return
    with contextlib.suppress(AttributeError, TypeError):  # Python 3.10
        exc.__notes__ = [*getattr(exc, "__notes__", ()), note]


class _Run:
    """Per-operation state shared by stamina's hook and the loop body."""

    __slots__ = ("attempt", "pending", "reason")

    def __init__(self) -> None:
        self.attempt = 1
        self.pending: RetryEvent | None = None
        self.reason = ""


class RetryExecutor:
    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        name: str = "default",
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.name = name
        self.statistics = RetryStatistics()
        self._observers: list[Callable[[RetryEvent], None]] = []

    def add_observer(self, observer: Callable[[RetryEvent], None]) -> None:
        """Call ``observer`` before every backoff sleep of this executor (exact delays)."""
        self._observers.append(observer)

    def remove_observer(self, observer: Callable[[RetryEvent], None]) -> None:
        self._observers.remove(observer)

    def is_retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):
            return False
        err = classify(exc)
        if err.code in self.policy.non_retryable_codes:
            return False
        if err.code in self.policy.retryable_codes:
            return True
        return err.retryable and not isinstance(err, DeadlineExceededError)

    async def run(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> T:
        """Await ``fn()``, retrying per the policy; ``deadline`` is on ``clock.monotonic()``."""
        stats = self.statistics
        stats.operations += 1
        try:
            result = await fn()
        except Exception as exc:
            first = exc
        else:
            stats.first_try_successes += 1
            return result
        # Outside the except block, so later errors do not chain onto the first one.
        if self.policy.max_attempts <= 1 or not self.is_retryable(first):
            # Nothing to retry (an open breaker's rejection, a 400...): give up here, without
            # stamina's machinery (~150 µs); stamina would stop at once and call no hook.
            run = _Run()
            run.reason = "attempts exhausted" if self.is_retryable(first) else "not retryable"
            self._give_up(run, first)
            raise first
        return await self._retry(fn, first, deadline, on_retry)

    def _plan(self, run: _Run, exc: BaseException, deadline: float | None) -> bool:
        """stamina's ``on`` hook: decide whether and how long to wait before the next try."""
        if not isinstance(exc, Exception):
            run.reason = "cancelled"
            return False
        if not self.is_retryable(exc):
            run.reason = "not retryable"
            return False
        policy = self.policy
        if run.attempt >= policy.max_attempts:
            run.reason = "attempts exhausted"
            return False
        err = classify(exc)
        server_directed = err.retry_after is not None
        if err.retry_after is not None:
            delay = max(0.0, float(err.retry_after))
        else:
            delay = policy.delay_for(run.attempt, self.rng)
        if stamina.is_testing():
            delay = 0.0
        if deadline is not None and delay > deadline - self.clock.monotonic():
            run.reason = f"next wait of {delay:.3g}s passes the deadline"
            return False
        run.pending = RetryEvent(self.name, run.attempt, policy.max_attempts, delay, exc, err.code, server_directed)
        return True

    def _notify(self, event: RetryEvent, on_retry: Callable[[RetryEvent], None] | None) -> None:
        stats = self.statistics
        stats.retries += 1
        if event.attempt == 1:
            stats.retried_operations += 1
        if event.server_directed:
            stats.retry_after_waits += 1
        stats.last_delays.append(event.delay)
        for observer in (*self._observers, on_retry):
            if observer is None:
                continue
            try:
                observer(event)
            except Exception:
                log.warning("retry observer %r failed", observer, exc_info=True)

    async def _retry(
        self,
        fn: Callable[[], Awaitable[T]],
        first: Exception,
        deadline: float | None,
        on_retry: Callable[[RetryEvent], None] | None,
    ) -> T:
        run = _Run()

        def on(exc: Exception) -> bool:
            return self._plan(run, exc, deadline)

        attempts = stamina.retry_context(
            on=on,
            attempts=self.policy.max_attempts,
            timeout=None,
            wait_initial=0.0,
            wait_max=0.0,
            wait_jitter=0.0,
        ).with_name(STAMINA_NAME_PREFIX + self.name, (), {})
        try:
            async for attempt in attempts:
                if attempt.num > 1:
                    event, run.pending = run.pending, None
                    if event is None:  # pragma: no cover - stamina retried without asking us
                        raise AssertionError("stamina scheduled a retry our hook did not plan")
                    self._notify(event, on_retry)
                    if not stamina.is_testing():
                        await self.clock.sleep(event.delay)
                    run.attempt = attempt.num
                with attempt:
                    if attempt.num == 1:
                        raise first  # replay the plain first attempt's failure for stamina
                    result = await fn()
                    self.statistics.retry_successes += 1
                    return result
        except Exception as exc:
            self._give_up(run, exc)
            raise
        raise AssertionError("unreachable: stamina ended without a result or an error")

    def _give_up(self, run: _Run, exc: Exception) -> None:
        stats = self.statistics
        stats.gave_up += 1
        reason = run.reason or "retries stopped by stamina (inactive or testing mode)"
        if reason == "not retryable":
            stats.non_retryable += 1
        elif reason.endswith("deadline"):
            stats.deadline_give_ups += 1
        _add_note(
            exc,
            f"retry {self.name}: gave up after attempt {run.attempt} of {self.policy.max_attempts} ({reason})",
        )
