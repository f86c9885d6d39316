"""The circuit breaker's values: its states, settings, transitions, statistics, and ``Permit``.

The state machine that uses them is ``breaker.CircuitBreaker``; everything here is
re-exported from ``breaker``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .breaker import CircuitBreaker


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    ISOLATED = "isolated"
    DISABLED = "disabled"


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5  # consecutive counted failures that open it (seed failureThreshold)
    success_threshold: int = 2  # half-open successes that close it
    open_timeout: float = 30.0  # seconds open before a probe (seed "timeout", ms there)
    monitoring_window: float = 60.0  # seconds, sliding window for the ratio rules
    failure_ratio: float | None = None  # open when failures/calls >= ratio in window; None = off
    minimum_throughput: int = 10  # calls in window before a ratio rule applies (seed volumeThreshold)
    half_open_max_calls: int = 1  # probes in flight at once
    half_open_max_wait: float | None = None  # all permits held, no probe finished this long -> OPEN
    slow_call_threshold: float | None = None  # seconds; successful calls slower than this are slow
    slow_call_rate: float | None = None  # open when slow/calls >= rate (with minimum_throughput)
    break_duration_fn: Callable[[int], float] | None = None  # n-th half-open failure -> open seconds

    def __post_init__(self) -> None:
        for name in ("failure_threshold", "success_threshold", "minimum_throughput", "half_open_max_calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
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
    breaker: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float
    manual: bool


@dataclass(frozen=True)
class BreakerStatistics:
    name: str
    state: BreakerState
    retry_after: float | None  # None while isolated (no automatic probe will ever come)
    consecutive_failures: int
    window_calls: int
    window_failures: int
    window_slow: int
    total_calls: int
    successes: int
    failures: int
    rejections: int
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

    __slots__ = ("_breaker", "_done", "_epoch", "_probe")

    def __init__(self, breaker: CircuitBreaker | None, epoch: int, probe: bool) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._probe = probe
        self._done = breaker is None  # the DISABLED permit records nothing

    def record_success(self, duration: float = 0.0, result: Any = None) -> None:
        if not self._done:
            self._done = True
            assert self._breaker is not None
            self._breaker._on_success(self, duration, result)

    def record_failure(self, exc: BaseException, duration: float = 0.0) -> None:
        if not self._done:
            self._done = True
            assert self._breaker is not None
            self._breaker._on_failure(self, exc)

    def release(self) -> None:
        if not self._done:
            self._done = True
            assert self._breaker is not None
            self._breaker._on_release(self)
