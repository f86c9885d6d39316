"""Retry: a plain loop around the pure backoff function, waiting on the injected clock.

Why not stamina: stamina sleeps through its own ``asyncio.sleep``/``trio.sleep`` and measures
its ``timeout`` on the wall clock; neither can be injected, so it cannot give virtual-time
tests, a deadline on our ``Clock``, or a wait that is exactly a server's ``retry_after``
without replaying failures into it. What is left is a dozen lines: ask ``_plan`` whether
and how long to wait, sleep on the clock, call again.

Decisions
    * The first attempt is a plain ``await fn()``: the success path costs one ``try``.
    * Classification by ``classify(exc).code``: ``non_retryable_codes`` never retry;
      ``retryable_codes`` always retry (even when ``.retryable`` is False); any other code
      falls back to the error's ``.retryable``. A ``DeadlineExceededError`` is never retried
      unless listed. Cancellation and other non-``Exception`` errors are never retried.
    * Attempts by severity (the seed's ``getDefaultMaxAttempts``): an error of severity
      critical / high / medium / low allows at most 5 / 3 / 2 / 1 attempts
      (``severity_attempts``), never more than ``max_attempts``. A wait the error dictates
      (``retry_after``: Telegram 429, open breaker) is exempt: the server said when.
    * A dictated delay is used as is: no backoff, no jitter, no ``max_delay`` cap.
    * Computed backoff: ``min(max_delay, d + uniform(0, jitter_max))`` where ``d`` is the
      capped exponential/linear/fixed delay.
    * ``deadline`` is an absolute ``clock.monotonic()`` time. A retry whose delay exceeds
      the time left is not taken: the original error is re-raised at once (so a send goes
      to the outbox instead of sleeping). The pipeline's outer scope cancels a running attempt.
    * The error that ends the operation is re-raised as is (same object) with a note such
      as ``retry default: gave up after attempt 4 of 4 (attempts exhausted)``.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from .clock import SYSTEM_CLOCK, Clock
from .errors import DeadlineExceededError, classify

T = TypeVar("T")
log = logging.getLogger(__name__)

#: The seed's attempts per error severity (``BaseResilienceError.getDefaultMaxAttempts``).
SEED_SEVERITY_ATTEMPTS: Mapping[str, int] = MappingProxyType({"critical": 5, "high": 3, "medium": 2, "low": 1})


class BackoffKind(StrEnum):
    """How the wait between retries grows."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait between them."""

    max_attempts: int = 3  # total attempts including the first
    base_delay: float = 1.0  # seconds
    max_delay: float = 10.0  # cap for computed backoff (not for a server's retry_after)
    exponential_base: float = 2.0
    backoff: BackoffKind = BackoffKind.EXPONENTIAL
    jitter: bool = True
    jitter_max: float = 0.5  # seconds of additive jitter, uniform in [0, jitter_max]
    retryable_codes: frozenset[str] = frozenset()
    non_retryable_codes: frozenset[str] = frozenset()
    #: severity -> most attempts for an error of that severity; None = max_attempts for all
    severity_attempts: Mapping[str, int] | None = None

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
        if self.severity_attempts is not None:
            object.__setattr__(self, "severity_attempts", MappingProxyType(dict(self.severity_attempts)))
            for severity, n in self.severity_attempts.items():
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise ValueError(f"severity_attempts[{severity!r}] must be an integer >= 1, got {n!r}")

    def attempts_for(self, severity: str) -> int:
        """Most attempts for an error of ``severity`` (never above ``max_attempts``)."""
        table = self.severity_attempts
        if table is None or severity not in table:
            return self.max_attempts
        return min(self.max_attempts, table[severity])

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
    """Counts of operations, retries and their outcomes."""

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


class RetryExecutor:
    """Runs an operation with retries and backoff, honouring a server's retry_after."""

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
            error = exc
        else:
            stats.first_try_successes += 1
            return result
        attempt = 1
        while True:  # outside the except block, so later errors do not chain onto the first one
            event, reason = self._plan(attempt, error, deadline)
            if event is None:
                self._give_up(attempt, error, reason)
                raise error
            self._notify(event, on_retry)
            await self.clock.sleep(event.delay)
            attempt += 1
            try:
                result = await fn()
            except Exception as exc:
                error = exc
                continue
            stats.retry_successes += 1
            return result

    def _plan(self, attempt: int, exc: Exception, deadline: float | None) -> tuple[RetryEvent | None, str]:
        """Whether to try again after ``attempt`` failed with ``exc``, and after how long."""
        if not self.is_retryable(exc):
            return None, "not retryable"
        policy = self.policy
        err = classify(exc)
        retry_after = err.retry_after
        server_directed = retry_after is not None
        limit = policy.max_attempts if server_directed else policy.attempts_for(err.severity.value)
        if attempt >= limit:
            why = "attempts exhausted" if limit == policy.max_attempts else f"{err.severity.value}-severity limit"
            return None, why
        delay = max(0.0, float(retry_after)) if retry_after is not None else policy.delay_for(attempt, self.rng)
        if deadline is not None and delay > deadline - self.clock.monotonic():
            return None, f"next wait of {delay:.3g}s passes the deadline"
        return RetryEvent(self.name, attempt, limit, delay, exc, err.code, server_directed), ""

    def _notify(self, event: RetryEvent, on_retry: Callable[[RetryEvent], None] | None) -> None:
        stats = self.statistics
        stats.retries += 1
        if event.attempt == 1:
            stats.retried_operations += 1
        if event.server_directed:
            stats.retry_after_waits += 1
        stats.last_delays.append(event.delay)
        log.info(
            "retry %s: attempt %d of %d failed (%s); next in %.3fs",
            self.name,
            event.attempt,
            event.max_attempts,
            event.code,
            event.delay,
        )
        for observer in (*self._observers, on_retry):
            if observer is None:
                continue
            try:
                observer(event)
            except Exception:
                log.warning("retry observer %r failed", observer, exc_info=True)

    def _give_up(self, attempt: int, exc: Exception, reason: str) -> None:
        stats = self.statistics
        stats.gave_up += 1
        if reason == "not retryable":
            stats.non_retryable += 1
        elif reason.endswith("deadline"):
            stats.deadline_give_ups += 1
        exc.add_note(f"retry {self.name}: gave up after attempt {attempt} of {self.policy.max_attempts} ({reason})")
