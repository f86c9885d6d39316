"""In-process metrics: counters, latency histograms, gauges, alerts (Prometheus text: ``prometheus``).

Recording costs about 1 µs: no locks, no allocation beyond int/float updates, fixed
log-spaced buckets found with ``bisect`` (plain updates: safe on one event loop; a racing
worker thread can at worst lose an increment). Memory is flat whatever the volume: at most
``max_series`` component/operation pairs (then ``other/other``), 50 error codes each (then
``other``), ``max_labelled`` gauge/counter/breaker series (then dropped and counted), and a
history ring of ``retention / interval`` entries.

``calls = successes + failures + rejections + timeouts``; ``error_rate = (calls - successes)
/ calls``; latency is observed for every outcome but ``rejected``. Each ``sample()`` judges
error rate and p95 latency per operation over the interval since the previous sample (when
it saw at least ``min_calls`` calls; fewer leave the alert as it was), memory as RSS / system
memory and CPU as a share of all usable cores: an alert is raised above its threshold and
cleared once back at or below it.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from .clock import SYSTEM_CLOCK, Clock
from .histogram import BUCKETS as BUCKETS
from .histogram import Histogram as Histogram
from .histogram import bucket_quantile, to_ms
from .procstats import ProcessSampler as ProcessSampler
from .procstats import ProcessStats as ProcessStats
from .prometheus import prometheus_text
from .prometheus import serve_prometheus as serve_prometheus

log = logging.getLogger(__name__)
Outcome = Literal["success", "failure", "rejected", "timeout"]
MAX_ERROR_CODES = 50
OTHER = "other"
_NAME = re.compile(r"[^a-zA-Z0-9_]")


class OperationMetrics:
    """Calls, outcomes, retries and latency of one component's operation."""

    __slots__ = (
        "_mark",
        "by_error_code",
        "calls",
        "component",
        "failures",
        "latency",
        "operation",
        "rejections",
        "retries",
        "retry_delay_s",
        "successes",
        "timeouts",
    )

    def __init__(self, component: str, operation: str) -> None:
        self.component, self.operation = component, operation
        self.calls = self.successes = self.failures = self.rejections = self.timeouts = self.retries = 0
        self.retry_delay_s, self.latency, self.by_error_code = 0.0, Histogram(), dict[str, int]()
        self._mark: tuple[int, int, list[int]] = (0, 0, list(self.latency.counts))

    @property
    def error_rate(self) -> float:
        return (self.calls - self.successes) / self.calls if self.calls else 0.0

    def record(self, duration: float, outcome: Outcome, error_code: str | None) -> None:
        self.calls += 1
        if outcome == "success":
            self.successes += 1
        elif outcome == "failure":
            self.failures += 1
        elif outcome == "timeout":
            self.timeouts += 1
        else:
            self.rejections += 1
        if outcome != "rejected":
            self.latency.observe(duration)
        if error_code is not None:
            codes = self.by_error_code
            if error_code not in codes and len(codes) >= MAX_ERROR_CODES:
                error_code = OTHER
            codes[error_code] = codes.get(error_code, 0) + 1

    def take_interval(self) -> tuple[int, int, list[int]]:
        """Calls, errors and bucket deltas since the previous call; starts a new interval."""
        calls, successes, counts = self._mark
        now = list(self.latency.counts)
        self._mark = (self.calls, self.successes, now)
        done = self.calls - calls
        return done, done - (self.successes - successes), [a - b for a, b in zip(now, counts, strict=True)]

    def snapshot(self, uptime: float) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "rejections": self.rejections,
            "timeouts": self.timeouts,
            "retries": self.retries,
            "retry_delay_s": round(self.retry_delay_s, 6),
            "error_rate": round(self.error_rate, 6),
            "throughput_per_s": round(self.calls / uptime, 6) if uptime > 0 else None,
            "latency": self.latency.snapshot(),
            "errors_by_code": dict(self.by_error_code),
        }


@dataclass
class AlertThresholds:
    """The levels above which the metrics sampler raises an alert."""

    error_rate: float = 0.1  # fraction of calls in the interval that did not succeed
    response_time_ms: float = 5000.0  # p95 over the interval
    memory_usage: float = 0.8  # RSS / system memory (or the cgroup limit)
    cpu_usage: float = 0.8  # share of all usable cores (1.0 = every core busy)
    min_calls: int = 5  # calls an interval needs before error rate / response time are judged


@dataclass
class Alert:
    """An alert; ``alert_history`` keeps a copy at each change (``cleared_at`` set when cleared)."""

    name: str  # error_rate | response_time | memory_usage | cpu_usage
    metric: str  # "component/operation" or "process"
    value: float
    threshold: float
    since: float  # clock time raised
    message: str
    cleared_at: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """The totals of one sampling interval."""

    at: float
    interval_s: float
    calls: int
    errors: int
    error_rate: float | None
    p95_ms: float | None
    throughput_per_s: float | None
    cpu_percent: float | None
    rss_mb: float | None


Labels = tuple[tuple[str, str], ...]


class MetricsRegistry:
    """In-process metrics: per-operation calls and latency, gauges, counters, alerts."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        thresholds: AlertThresholds | None = None,
        history_retention: float = 86400.0,
        history_interval: float = 10.0,
        max_series: int = 200,
        max_labelled: int = 500,
        alert_history: int = 1000,
        process: ProcessSampler | None = None,
        disk_path: str | None = None,
    ) -> None:
        self.clock = clock
        self.thresholds = thresholds or AlertThresholds()
        self.history_retention, self.history_interval = history_retention, history_interval
        self.max_series, self.max_labelled = max_series, max_labelled
        #: ``disk_path``: where the data dir lives, so ``disk_free_mb`` is that volume's free space.
        self.process = process or ProcessSampler(clock, disk_path=disk_path)
        self.started = self._last_sample = clock.monotonic()
        self._series: dict[str, dict[str, OperationMetrics]] = {}
        self._n_series = 0
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._counters: dict[tuple[str, Labels], float] = {}
        self.dropped_series = 0
        self.breaker_transitions: dict[tuple[str, str, str], int] = {}
        self.breaker_states: dict[str, str] = {}
        self.history: deque[HistoryEntry] = deque(maxlen=max(1, math.ceil(history_retention / history_interval)))
        self._alerts: dict[tuple[str, str], Alert] = {}
        self.alert_history: deque[Alert] = deque(maxlen=alert_history)

    def record_call(
        self, component: str, operation: str, *, duration: float, outcome: Outcome, error_code: str | None = None
    ) -> None:
        ops = self._series.get(component)
        m = ops.get(operation) if ops is not None else None
        (m or self.operation(component, operation)).record(duration, outcome, error_code)

    def record_retry(self, component: str, operation: str, delay: float) -> None:
        m = self.operation(component, operation)
        m.retries += 1
        m.retry_delay_s += delay

    def observe_breaker(self, breaker: str, state: str) -> None:
        """A breaker's current state without a transition (its state gauge exists from start-up)."""
        if breaker in self.breaker_states or len(self.breaker_states) < self.max_labelled:
            self.breaker_states[breaker] = state

    def record_breaker_transition(self, breaker: str, from_state: str, to_state: str) -> None:
        key = (breaker, from_state, to_state)
        if key in self.breaker_transitions or len(self.breaker_transitions) < self.max_labelled:
            self.breaker_transitions[key] = self.breaker_transitions.get(key, 0) + 1
            self.breaker_states[breaker] = to_state
        else:
            self.dropped_series += 1

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        self._put(self._gauges, name, labels, value, add=False)

    def incr(self, name: str, value: float = 1, **labels: str) -> None:
        self._put(self._counters, name, labels, value, add=True)

    def _put(
        self, store: dict[tuple[str, Labels], float], name: str, labels: dict[str, str], value: float, *, add: bool
    ) -> None:
        key = (name, tuple(sorted((_NAME.sub("_", k), v) for k, v in labels.items())) if labels else ())
        old = store.get(key)
        if old is None and len(self._gauges) + len(self._counters) >= self.max_labelled:
            self.dropped_series += 1
            return
        store[key] = (old or 0.0) + value if add else value

    def operation(self, component: str, operation: str) -> OperationMetrics:
        """The series for this pair, created on first use; past ``max_series`` it is ``other/other``."""
        m = self._series.get(component, {}).get(operation)
        if m is None and self._n_series >= self.max_series:
            component = operation = OTHER
            m = self._series.get(OTHER, {}).get(OTHER)
        if m is None:
            self._n_series += 1
            m = self._series.setdefault(component, {})[operation] = OperationMetrics(component, operation)
        return m

    def series(self) -> Iterable[OperationMetrics]:
        for ops in self._series.values():
            yield from ops.values()

    @property
    def series_count(self) -> int:
        return self._n_series

    def process_stats(self) -> ProcessStats:
        """Current process figures; ``cpu_percent`` covers the time since the last ``sample()``."""
        return self.process.read()

    def sample(self) -> None:
        now = self.clock.monotonic()
        interval, self._last_sample = now - self._last_sample, now
        th, calls, errors = self.thresholds, 0, 0
        merged = [0] * (len(BUCKETS) + 1)
        for m in self.series():
            n, bad, deltas = m.take_interval()
            calls, errors = calls + n, errors + bad
            merged = [a + b for a, b in zip(merged, deltas, strict=True)]
            if n >= th.min_calls:
                metric = f"{m.component}/{m.operation}"
                self._judge("error_rate", metric, bad / n, th.error_rate, now)
                p95 = bucket_quantile(deltas, sum(deltas), 0.95, m.latency.min, m.latency.max)
                if p95 is not None:
                    self._judge("response_time", metric, p95 * 1000.0, th.response_time_ms, now)
        stats = self.process.read(rebase=True)
        if stats.memory_fraction is not None:
            self._judge("memory_usage", "process", stats.memory_fraction, th.memory_usage, now)
        if stats.cpu_percent is not None:
            self._judge("cpu_usage", "process", stats.cpu_percent / 100.0, th.cpu_usage, now)
        lo = min((m.latency.min for m in self.series()), default=math.inf)
        hi = max((m.latency.max for m in self.series()), default=-math.inf)
        self.history.append(
            HistoryEntry(
                at=now,
                interval_s=round(interval, 6),
                calls=calls,
                errors=errors,
                error_rate=round(errors / calls, 6) if calls else None,
                p95_ms=to_ms(bucket_quantile(merged, sum(merged), 0.95, lo, hi)),
                throughput_per_s=round(calls / interval, 6) if interval > 0 else None,
                cpu_percent=stats.cpu_percent,
                rss_mb=stats.rss_mb,
            )
        )
        self.purge_history(now)

    def _judge(self, name: str, metric: str, value: float, threshold: float, now: float) -> None:
        key, active = (name, metric), self._alerts.get((name, metric))
        if value > threshold and active is None:
            msg = f"{name.replace('_', ' ')} of {metric} is {value:.4g}, above {threshold:.4g}"
            self._alerts[key] = active = Alert(name, metric, value, threshold, now, msg)
            self.alert_history.append(replace(active))
            log.warning("alert raised: %s", msg)
        elif active is not None:
            active.value = value
            if value <= threshold:
                del self._alerts[key]
                self.alert_history.append(replace(active, cleared_at=now))
                log.info("alert cleared: %s of %s back to %.4g", name, metric, value)

    def alerts(self) -> list[Alert]:
        return list(self._alerts.values())

    def purge_history(self, now: float | None = None) -> int:
        """Drop history entries older than the retention; returns how many went."""
        cutoff = (self.clock.monotonic() if now is None else now) - self.history_retention
        dropped = 0
        while self.history and self.history[0].at < cutoff:
            self.history.popleft()
            dropped += 1
        return dropped

    async def run_sampler(self) -> None:
        """Sample every ``history_interval`` seconds until cancelled (for the server's lifespan)."""
        while True:
            await self.clock.sleep(self.history_interval)
            self.sample()

    def labelled(self, kind: Literal["counter", "gauge"]) -> dict[tuple[str, Labels], float]:
        """The ``incr`` counters or ``set_gauge`` gauges by (name, labels); read, do not modify."""
        return self._counters if kind == "counter" else self._gauges

    def snapshot(self, component: str | None = None, operation: str | None = None) -> dict[str, Any]:
        uptime = self.clock.monotonic() - self.started
        ops: dict[str, dict[str, Any]] = {}
        for m in self.series():
            if component in (None, m.component) and operation in (None, m.operation):
                ops.setdefault(m.component, {})[m.operation] = m.snapshot(uptime)
        picked = [o for c in ops.values() for o in c.values()]
        calls = sum(o["calls"] for o in picked)
        breakers: dict[str, dict[str, Any]] = {}
        for (b, frm, to), n in self.breaker_transitions.items():
            entry = breakers.setdefault(b, {"state": self.breaker_states.get(b), "transitions": {}})
            entry["transitions"][f"{frm}->{to}"] = n
        ok = sum(o["successes"] for o in picked)
        return {
            "uptime_s": round(uptime, 3),
            "totals": {
                "calls": calls,
                "successes": ok,
                "errors": calls - ok,
                "retries": sum(o["retries"] for o in picked),
                "throughput_per_s": round(calls / uptime, 6) if uptime > 0 else None,
            },
            "operations": ops,
            "last_interval": asdict(self.history[-1]) if self.history else None,
            "breakers": breakers,
            "dropped_series": self.dropped_series,
            **{
                k: [{"name": n, "labels": dict(lb), "value": v} for (n, lb), v in store.items()]
                for k, store in (("gauges", self._gauges), ("counters", self._counters))
            },
            "process": asdict(self.process_stats()),
            "alerts": [asdict(a) for a in self.alerts()],
        }

    def prometheus_text(self) -> str:
        """Prometheus text exposition format 0.0.4 (see ``prometheus``)."""
        return prometheus_text(self)
