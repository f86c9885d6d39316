"""Health monitor: periodic checks, thresholds, trends, served from cache.

Generic: a check is any ``async () -> CheckResult``; this module knows nothing of Telegram,
HTTP or MCP (``cctg_mcp.ops.health`` builds the real checks).

* Each check runs under its own timeout (``clock.timeout_scope``): a hanging check is cut
  and counts as a failure. Checks run concurrently, every ``interval`` after ``grace_period``.
* ``check_now()`` is single-flight per component: concurrent callers share one probe.
* ``report()`` is synchronous and reads cached results only, so it answers at once even
  while a probe hangs.
* Status per component, from the results' own status and two thresholds:

  - before the first check: ``unknown``;
  - a failure (``unhealthy`` result, exception or timeout) adds to the consecutive failures;
    at ``failure_threshold`` the component is ``unhealthy``, below it ``degraded``;
  - a success (``healthy`` result): a component that was unknown or healthy is ``healthy``;
    one that was degraded or unhealthy is ``healthy`` again after ``recovery_threshold``
    consecutive successes and ``degraded`` until then;
  - a ``degraded`` result ends a success streak, leaves the failure count as it is, and
    makes the component ``degraded`` (an ``unhealthy`` one stays unhealthy: recovery needs
    real successes).
* Overall: any critical component unhealthy, or half or more of the HTTP endpoint checks
  (``kind="http"``) unhealthy (the seed's rule) → unhealthy; any component unhealthy or
  degraded → degraded; every component unknown (or none), or a critical component not checked
  yet → unknown; else healthy. ``ready`` is "no
  critical component unhealthy"; ``live`` is "the monitor loop is running".
* Listeners ``fn(component, old, new, result)`` hear every status change (the recovery
  manager reacts to them); sync or async, errors are logged and swallowed.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc

from .clock import SYSTEM_CLOCK, Clock
from .errors import ValidationError, classify, redact

if TYPE_CHECKING:
    from .config import HealthConfig

log = logging.getLogger(__name__)

CheckKind = Literal["http", "component"]
Trend = Literal["improving", "stable", "degrading"]
CheckFn = Callable[[], Awaitable["CheckResult"]]
Listener = Callable[[str, "HealthStatus", "HealthStatus", "CheckResult"], object]
#: Results the trend looks at (the newest ones), and the score shift that counts as a trend.
TREND_WINDOW = 10
TREND_MIN_SHIFT = 0.15


class HealthStatus(StrEnum):
    """The health of a component, or of the whole system."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


_SCORE = {HealthStatus.HEALTHY: 1.0, HealthStatus.DEGRADED: 0.5, HealthStatus.UNHEALTHY: 0.0}


@dataclass(frozen=True)
class CheckResult:
    """What one health check found."""

    status: HealthStatus
    message: str = ""
    latency_s: float = 0.0  # set by the monitor (time the check took)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def healthy(cls, message: str = "ok", **details: Any) -> CheckResult:
        return cls(HealthStatus.HEALTHY, message, details=details)

    @classmethod
    def degraded(cls, message: str, **details: Any) -> CheckResult:
        return cls(HealthStatus.DEGRADED, message, details=details)

    @classmethod
    def unhealthy(cls, message: str, **details: Any) -> CheckResult:
        return cls(HealthStatus.UNHEALTHY, message, details=details)


@dataclass(frozen=True)
class HealthSettings:
    """Seconds throughout (the config file and environment speak milliseconds)."""

    enabled: bool = True
    interval: float = 30.0
    timeout: float = 5.0
    failure_threshold: int = 3
    recovery_threshold: int = 2
    grace_period: float = 10.0
    history_size: int = 50

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not isinstance(self.grace_period, (int, float)) or not 0 <= self.grace_period < math.inf:
            raise ValueError(f"grace_period must be a finite number of seconds >= 0, got {self.grace_period!r}")
        for name in ("failure_threshold", "recovery_threshold", "history_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    @classmethod
    def from_config(cls, config: HealthConfig) -> HealthSettings:
        return cls(
            enabled=config.enabled,
            interval=config.seconds("interval"),
            timeout=config.seconds("timeout"),
            failure_threshold=config.failure_threshold,
            recovery_threshold=config.recovery_threshold,
            grace_period=config.seconds("grace_period"),
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One past health check result of a component."""

    at: float  # clock time
    status: HealthStatus  # the result's own status
    latency_s: float


@dataclass(frozen=True)
class ComponentReport:
    """One component's health, its last check and its counters."""

    name: str
    kind: CheckKind
    critical: bool
    status: HealthStatus
    message: str | None
    last_check_at: float | None  # epoch seconds (for display), derived from the clock
    last_check_age_s: float | None
    latency_s: float | None
    consecutive_failures: int
    consecutive_successes: int
    last_error: str | None
    trend: Trend
    checks: int
    failures: int
    details: dict[str, Any]


@dataclass(frozen=True)
class HealthReport:
    """Every component's health and the overall verdict."""

    overall: HealthStatus
    ready: bool
    live: bool
    components: list[ComponentReport]
    generated_at: float  # epoch seconds

    def component(self, name: str) -> ComponentReport:
        return next(c for c in self.components if c.name == name)

    @property
    def unhealthy(self) -> list[str]:
        return [c.name for c in self.components if c.status is HealthStatus.UNHEALTHY]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (statuses as strings), for the library client and logs."""
        data = asdict(self)
        data["overall"] = self.overall.value
        for part in data["components"]:
            part["status"] = part["status"].value
        return data


class _Component:
    def __init__(
        self, name: str, fn: CheckFn, *, critical: bool, kind: CheckKind, timeout: float | None, history_size: int
    ) -> None:
        self.name, self.fn, self.critical, self.kind, self.timeout = name, fn, critical, kind, timeout
        self.status = HealthStatus.UNKNOWN
        self.last: CheckResult | None = None
        self.last_at: float | None = None
        self.consecutive_failures = self.consecutive_successes = 0
        self.checks = self.failures = 0
        self.last_error: str | None = None
        self.history: deque[HistoryEntry] = deque(maxlen=history_size)
        self.inflight: anyio.Event | None = None

    def trend(self) -> Trend:
        recent = [_SCORE[h.status] for h in list(self.history)[-TREND_WINDOW:] if h.status in _SCORE]
        if len(recent) < 4:
            return "stable"
        half = len(recent) // 2
        older, newer = recent[:half], recent[half:]
        shift = sum(newer) / len(newer) - sum(older) / len(older)
        if shift >= TREND_MIN_SHIFT:
            return "improving"
        if shift <= -TREND_MIN_SHIFT:
            return "degrading"
        return "stable"


class HealthMonitor:
    """Checks registered components periodically and tells listeners when their status changes."""

    def __init__(self, settings: HealthSettings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings or HealthSettings()
        self.clock = clock
        self._components: dict[str, _Component] = {}
        self._listeners: list[Listener] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._live = False
        #: Completed check rounds of the background loop (for tests and diagnostics).
        self.rounds = 0

    # -- registration ----------------------------------------------------------------------

    def add_check(
        self,
        name: str,
        fn: CheckFn,
        *,
        critical: bool = False,
        kind: CheckKind = "component",
        timeout: float | None = None,
    ) -> None:
        if name in self._components:
            raise ValueError(f"a health check named {name!r} is already registered")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._components[name] = _Component(
            name, fn, critical=critical, kind=kind, timeout=timeout, history_size=self.settings.history_size
        )

    def remove_check(self, name: str) -> None:
        self._components.pop(name, None)

    @property
    def components(self) -> list[str]:
        return list(self._components)

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    @property
    def live(self) -> bool:
        return self._live

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check every component every ``interval`` after ``grace_period``, until cancelled."""
        s = self.settings
        async with anyio.create_task_group() as tg:
            self._tg, self._live = tg, True
            task_status.started()
            try:
                if s.grace_period > 0:
                    await self.clock.sleep(s.grace_period)
                while True:
                    started = self.clock.monotonic()
                    await self._check_all(self._components.values())
                    self.rounds += 1
                    await self.clock.sleep(max(0.0, s.interval - (self.clock.monotonic() - started)))
            finally:
                self._live, self._tg = False, None
                tg.cancel_scope.cancel()

    async def check_now(self, name: str | None = None) -> HealthReport:
        """Probe one component (or all, concurrently) now; concurrent callers share a probe."""
        if name is None:
            await self._check_all(self._components.values())
        else:
            await self._probe(self._get(name))
        return self.report(name)

    def _get(self, name: str) -> _Component:
        comp = self._components.get(name)
        if comp is None:
            known = ", ".join(sorted(self._components)) or "none"
            raise ValidationError(f"unknown health component {name!r}; known components: {known}")
        return comp

    async def _check_all(self, comps: Iterable[_Component]) -> None:
        async with anyio.create_task_group() as tg:
            for comp in list(comps):
                tg.start_soon(self._probe, comp)

    async def _probe(self, comp: _Component) -> None:
        """Single flight: if a probe of ``comp`` is running, wait for it instead of starting one."""
        if comp.inflight is not None:
            await comp.inflight.wait()
            return
        done = comp.inflight = anyio.Event()
        try:
            result = await self._run_check(comp)
            await self._record(comp, result)
        finally:
            comp.inflight = None
            done.set()

    async def _run_check(self, comp: _Component) -> CheckResult:
        timeout = comp.timeout if comp.timeout is not None else self.settings.timeout
        start = self.clock.monotonic()
        result: CheckResult | None = None
        try:
            with self.clock.timeout_scope(timeout) as scope:
                result = await comp.fn()
            if scope.cancelled_caught or result is None:
                result = CheckResult.unhealthy(f"check timed out after {timeout:g}s", timeout_s=timeout)
            elif not isinstance(result, CheckResult):
                result = CheckResult.unhealthy(f"check returned {type(result).__name__}, not a CheckResult")
        except Exception as exc:
            error = classify(exc)
            result = CheckResult.unhealthy(f"{error.code}: {redact(str(error))}", error_code=error.code)
        return replace(result, latency_s=max(0.0, self.clock.monotonic() - start))

    async def _record(self, comp: _Component, result: CheckResult) -> None:
        s, old = self.settings, comp.status
        comp.checks += 1
        comp.last, comp.last_at = result, self.clock.monotonic()
        comp.history.append(HistoryEntry(comp.last_at, result.status, result.latency_s))
        if result.status is HealthStatus.HEALTHY:
            comp.consecutive_successes += 1
            comp.consecutive_failures = 0
            if old in (HealthStatus.UNKNOWN, HealthStatus.HEALTHY):
                new = HealthStatus.HEALTHY
            else:
                ok = comp.consecutive_successes >= s.recovery_threshold
                new = HealthStatus.HEALTHY if ok else HealthStatus.DEGRADED
        elif result.status is HealthStatus.DEGRADED:
            comp.consecutive_successes = 0
            comp.last_error = redact(result.message) or "degraded"
            new = HealthStatus.UNHEALTHY if old is HealthStatus.UNHEALTHY else HealthStatus.DEGRADED
        else:  # UNHEALTHY or UNKNOWN from a check: a failure
            comp.failures += 1
            comp.consecutive_failures += 1
            comp.consecutive_successes = 0
            comp.last_error = redact(result.message) or "check failed"
            bad = comp.consecutive_failures >= s.failure_threshold or old is HealthStatus.UNHEALTHY
            new = HealthStatus.UNHEALTHY if bad else HealthStatus.DEGRADED
        comp.status = new
        if new is not old:
            level = logging.WARNING if new is HealthStatus.UNHEALTHY else logging.INFO
            log.log(level, "health %s: %s -> %s (%s)", comp.name, old.value, new.value, redact(result.message))
            await self._notify(comp.name, old, new, result)

    async def _notify(self, name: str, old: HealthStatus, new: HealthStatus, result: CheckResult) -> None:
        for listener in tuple(self._listeners):
            try:
                outcome = listener(name, old, new, result)
            except Exception:
                log.exception("health listener %r raised", listener)
                continue
            if inspect.isawaitable(outcome):
                if self._tg is not None:  # do not hold the probe (and its waiters) for a slow listener
                    self._tg.start_soon(self._await_listener, outcome)
                else:
                    await self._await_listener(outcome)

    @staticmethod
    async def _await_listener(outcome: Awaitable[object]) -> None:
        try:
            await outcome
        except Exception:
            log.exception("async health listener raised")

    # -- reading ---------------------------------------------------------------------------

    def status_of(self, name: str) -> HealthStatus:
        return self._get(name).status

    def history(self, name: str) -> list[HistoryEntry]:
        """The last ``history_size`` results of ``name``, oldest first."""
        return list(self._get(name).history)

    def report(self, component: str | None = None) -> HealthReport:
        """The cached picture; never awaits a probe."""
        comps = list(self._components.values()) if component is None else [self._get(component)]
        now, wall = self.clock.monotonic(), self.clock.time()
        parts = [self._component_report(c, now, wall) for c in comps]
        everything = list(self._components.values())
        return HealthReport(
            overall=aggregate(everything),
            ready=is_ready(everything),
            live=self._live,
            components=parts,
            generated_at=wall,
        )

    @staticmethod
    def _component_report(c: _Component, now: float, wall: float) -> ComponentReport:
        age = None if c.last_at is None else max(0.0, now - c.last_at)
        last = c.last
        return ComponentReport(
            name=c.name,
            kind=c.kind,
            critical=c.critical,
            status=c.status,
            message=None if last is None else redact(last.message),
            last_check_at=None if age is None else wall - age,
            last_check_age_s=age,
            latency_s=None if last is None else last.latency_s,
            consecutive_failures=c.consecutive_failures,
            consecutive_successes=c.consecutive_successes,
            last_error=c.last_error,
            trend=c.trend(),
            checks=c.checks,
            failures=c.failures,
            details={} if last is None else dict(last.details),
        )


def aggregate(components: Iterable[Any]) -> HealthStatus:
    """Overall status of objects with ``status``, ``critical`` and ``kind`` attributes."""
    comps = list(components)
    if any(c.critical and c.status is HealthStatus.UNHEALTHY for c in comps):
        return HealthStatus.UNHEALTHY
    endpoints = [c for c in comps if c.kind == "http"]
    down = sum(c.status is HealthStatus.UNHEALTHY for c in endpoints)
    if endpoints and down and 2 * down >= len(endpoints):  # the seed: half or more endpoints down
        return HealthStatus.UNHEALTHY
    if any(c.status in (HealthStatus.UNHEALTHY, HealthStatus.DEGRADED) for c in comps):
        return HealthStatus.DEGRADED
    if all(c.status is HealthStatus.UNKNOWN for c in comps):
        return HealthStatus.UNKNOWN
    if any(c.critical and c.status is HealthStatus.UNKNOWN for c in comps):
        return HealthStatus.UNKNOWN  # "healthy" only once every critical component was seen working
    return HealthStatus.HEALTHY


def is_ready(components: Iterable[Any]) -> bool:
    return not any(c.critical and c.status is HealthStatus.UNHEALTHY for c in components)
