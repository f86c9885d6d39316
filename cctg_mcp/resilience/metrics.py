"""In-process metrics: counters, latency histograms, gauges, alerts, Prometheus text.

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

import contextlib
import logging
import math
import re
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import partial
from itertools import accumulate
from typing import Any, Literal

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from .clock import SYSTEM_CLOCK, Clock
from .procstats import ProcessSampler as ProcessSampler
from .procstats import ProcessStats as ProcessStats

log = logging.getLogger(__name__)
Outcome = Literal["success", "failure", "rejected", "timeout"]
_OUTCOMES = ("success", "failure", "rejected", "timeout")
#: Upper bounds in seconds, four per octave from 50 µs up to the first bound >= 120 s (86 bounds).
BUCKETS: tuple[float, ...] = tuple(float(f"{50e-6 * 2 ** (k / 4):.6g}") for k in range(86))
MAX_ERROR_CODES = 50
OTHER = "other"
_NAME = re.compile(r"[^a-zA-Z0-9_]")
#: Bounds exposed to Prometheus: every second one (two per octave) keeps scrapes half the size.
_EXPOSED = [(i, repr(BUCKETS[i])) for i in range(1, len(BUCKETS), 2)] + [(len(BUCKETS), "+Inf")]


def _quantile(counts: list[int], total: int, q: float, lo: float, hi: float) -> float | None:
    """Estimate a quantile from bucket counts, interpolating linearly inside the bucket."""
    if total <= 0 or lo > hi:
        return None
    rank, cum = min(max(q, 0.0), 1.0) * total, 0
    for i, n in enumerate(counts):
        if n and cum + n >= rank:
            low = max(BUCKETS[i - 1] if i else 0.0, lo)
            high = min(BUCKETS[i] if i < len(BUCKETS) else hi, hi)
            return min(max(low + (high - low) * max(rank - cum, 0.0) / n, lo), hi)
        cum += n
    return hi


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class Histogram:
    """Fixed log-spaced buckets (``BUCKETS``, plus +Inf), with count, sum, min and max."""

    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self) -> None:
        self.counts, self.count, self.sum = [0] * (len(BUCKETS) + 1), 0, 0.0
        self.min, self.max = math.inf, -math.inf

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float | None:
        return _quantile(self.counts, self.count, q, self.min, self.max)

    def snapshot(self) -> dict[str, Any]:
        n = self.count
        return {"count": n, "sum_seconds": round(self.sum, 6), "min_ms": _ms(self.min) if n else None,
                "max_ms": _ms(self.max) if n else None, "mean_ms": _ms(self.sum / n) if n else None,
                **{f"p{int(q * 100)}_ms": _ms(self.quantile(q)) for q in (0.5, 0.95, 0.99)}}


class OperationMetrics:
    __slots__ = ("_mark", "by_error_code", "calls", "component", "failures", "latency", "operation",
                 "rejections", "retries", "retry_delay_s", "successes", "timeouts")

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
            "calls": self.calls, "successes": self.successes, "failures": self.failures,
            "rejections": self.rejections, "timeouts": self.timeouts, "retries": self.retries,
            "retry_delay_s": round(self.retry_delay_s, 6), "error_rate": round(self.error_rate, 6),
            "throughput_per_s": round(self.calls / uptime, 6) if uptime > 0 else None,
            "latency": self.latency.snapshot(), "errors_by_code": dict(self.by_error_code),
        }


@dataclass
class AlertThresholds:
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
    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, thresholds: AlertThresholds | None = None,
                 history_retention: float = 86400.0, history_interval: float = 10.0,
                 max_series: int = 200, max_labelled: int = 500, alert_history: int = 1000,
                 process: ProcessSampler | None = None) -> None:
        self.clock = clock
        self.thresholds = thresholds or AlertThresholds()
        self.history_retention, self.history_interval = history_retention, history_interval
        self.max_series, self.max_labelled = max_series, max_labelled
        self.process = process or ProcessSampler(clock)
        self.started = self._last_sample = clock.monotonic()
        self._series: dict[str, dict[str, OperationMetrics]] = {}
        self._n_series = 0
        self._gauges: dict[tuple[str, Labels], float] = {}
        self._counters: dict[tuple[str, Labels], float] = {}
        self.dropped_series = 0
        self.breaker_transitions: dict[tuple[str, str, str], int] = {}
        self.breaker_states: dict[str, str] = {}
        self.history: deque[HistoryEntry] = deque(
            maxlen=max(1, math.ceil(history_retention / history_interval)))
        self._alerts: dict[tuple[str, str], Alert] = {}
        self.alert_history: deque[Alert] = deque(maxlen=alert_history)

    def record_call(self, component: str, operation: str, *, duration: float, outcome: Outcome,
                    error_code: str | None = None) -> None:
        ops = self._series.get(component)
        m = ops.get(operation) if ops is not None else None
        (m or self.operation(component, operation)).record(duration, outcome, error_code)

    def record_retry(self, component: str, operation: str, delay: float) -> None:
        m = self.operation(component, operation)
        m.retries += 1
        m.retry_delay_s += delay

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

    def _put(self, store: dict[tuple[str, Labels], float], name: str, labels: dict[str, str],
             value: float, *, add: bool) -> None:
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
                p95 = _quantile(deltas, sum(deltas), 0.95, m.latency.min, m.latency.max)
                if p95 is not None:
                    self._judge("response_time", metric, p95 * 1000.0, th.response_time_ms, now)
        stats = self.process.read(rebase=True)
        if stats.memory_fraction is not None:
            self._judge("memory_usage", "process", stats.memory_fraction, th.memory_usage, now)
        if stats.cpu_percent is not None:
            self._judge("cpu_usage", "process", stats.cpu_percent / 100.0, th.cpu_usage, now)
        lo = min((m.latency.min for m in self.series()), default=math.inf)
        hi = max((m.latency.max for m in self.series()), default=-math.inf)
        self.history.append(HistoryEntry(
            at=now, interval_s=round(interval, 6), calls=calls, errors=errors,
            error_rate=round(errors / calls, 6) if calls else None,
            p95_ms=_ms(_quantile(merged, sum(merged), 0.95, lo, hi)),
            throughput_per_s=round(calls / interval, 6) if interval > 0 else None,
            cpu_percent=stats.cpu_percent, rss_mb=stats.rss_mb))
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
            "totals": {"calls": calls, "successes": ok, "errors": calls - ok,
                       "retries": sum(o["retries"] for o in picked),
                       "throughput_per_s": round(calls / uptime, 6) if uptime > 0 else None},
            "operations": ops, "last_interval": asdict(self.history[-1]) if self.history else None,
            "breakers": breakers, "dropped_series": self.dropped_series,
            **{k: [{"name": n, "labels": dict(lb), "value": v} for (n, lb), v in store.items()]
               for k, store in (("gauges", self._gauges), ("counters", self._counters))},
            "process": asdict(self.process_stats()), "alerts": [asdict(a) for a in self.alerts()],
        }

    def prometheus_text(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        seen: set[str] = set()

        def fam(name: str, kind: str, help_: str, lines: Iterable[str]) -> None:
            lines = list(lines)
            if name not in seen and lines:
                seen.add(name)
                out.extend((f"# HELP {name} {_escape(help_, quote=False)}", f"# TYPE {name} {kind}", *lines))

        ms = [(m, _labels((("component", m.component), ("operation", m.operation)))) for m in self.series()]
        n = "cctg_operation_"
        fam(f"{n}calls_total", "counter", "Calls by outcome.",
            (f'{n}calls_total{{{lb},outcome="{o}"}} {v}' for m, lb in ms
             for o, v in zip(_OUTCOMES, (m.successes, m.failures, m.rejections, m.timeouts), strict=True)))
        fam(f"{n}retries_total", "counter", "Retries scheduled.",
            (f"{n}retries_total{{{lb}}} {m.retries}" for m, lb in ms))
        fam(f"{n}errors_total", "counter", "Failed calls by error code.",
            (f'{n}errors_total{{{lb},code="{_escape(c)}"}} {k}'
             for m, lb in ms for c, k in m.by_error_code.items()))
        fam(f"{n}duration_seconds", "histogram", "Call latency in seconds.",
            (row for m, lb in ms for row in _histogram_lines(f"{n}duration_seconds", lb, m.latency)))
        fam("cctg_breaker_transitions_total", "counter", "Circuit breaker state changes.",
            (_line("cctg_breaker_transitions_total", (("breaker", b), ("from_state", f), ("to_state", t)), k)
             for (b, f, t), k in self.breaker_transitions.items()))
        fam("cctg_breaker_state", "gauge", "Current breaker state (1 for the state it is in).",
            (_line("cctg_breaker_state", (("breaker", b), ("state", s)), 1) for b, s in self.breaker_states.items()))
        for store, kind in ((self._counters, "counter"), (self._gauges, "gauge")):
            for name in sorted({k for k, _ in store}):
                f = "cctg_" + re.sub(r"[^a-zA-Z0-9_:]", "_", name)
                f += "_total" if kind == "counter" and not f.endswith("_total") else ""
                fam(f, kind, f"{name} ({kind})", (_line(f, lb, v) for (k, lb), v in store.items() if k == name))
        p = self.process_stats()
        rss = None if p.rss_mb is None else round(p.rss_mb * 2**20)
        for f, kind, value in (
            ("cpu_seconds_total", "counter", p.cpu_seconds), ("cpu_percent", "gauge", p.cpu_percent),
            ("resident_memory_bytes", "gauge", rss), ("open_fds", "gauge", p.open_files),
            ("threads", "gauge", p.threads), ("read_bytes_total", "counter", p.read_bytes),
            ("write_bytes_total", "counter", p.write_bytes), ("uptime_seconds", "gauge", p.uptime_s),
        ):
            if value is not None:
                f = f"cctg_process_{f}"
                fam(f, kind, f.replace("_", " ")[5:] + ".", [f"{f} {_num(value)}"])
        fam("cctg_alert_active", "gauge", "Active alerts (1 each).",
            (_line("cctg_alert_active", (("name", a.name), ("metric", a.metric)), 1) for a in self.alerts()))
        fam("cctg_metrics_dropped_series_total", "counter", "Series refused by the cardinality caps.",
            [f"cctg_metrics_dropped_series_total {self.dropped_series}"])
        return "\n".join(out) + "\n"


def _histogram_lines(name: str, lb: str, h: Histogram) -> list[str]:
    cum = list(accumulate(h.counts))
    lines = [f'{name}_bucket{{{lb},le="{le}"}} {cum[i]}' for i, le in _EXPOSED]
    return [*lines, f"{name}_sum{{{lb}}} {_num(h.sum)}", f"{name}_count{{{lb}}} {h.count}"]


def _num(v: float) -> str:
    if isinstance(v, int) or math.isnan(v):
        return str(v).replace("nan", "NaN")
    return ("+Inf" if v > 0 else "-Inf") if math.isinf(v) else repr(float(v))


def _labels(labels: Labels) -> str:
    """``k="v",...`` without braces, values escaped."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels)


def _line(name: str, labels: Labels, value: float) -> str:
    return f"{name}{{{_labels(labels)}}} {_num(value)}" if labels else f"{name} {_num(value)}"


def _escape(text: str, *, quote: bool = True) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


async def serve_prometheus(registry: MetricsRegistry, host: str = "127.0.0.1", port: int = 9464, *,
                           task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    """Answer ``GET /metrics`` with the exposition text until cancelled.

    ``task_status.started`` reports the bound port (pass ``port=0`` for any free one)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(partial(_answer, registry))


async def _answer(registry: MetricsRegistry, stream: SocketStream) -> None:
    async with stream:
        data = b""
        with anyio.move_on_after(10):
            while b"\r\n\r\n" not in data and len(data) < 16384:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return
        parts = data.split(b"\r\n", 1)[0].decode("latin-1").split()
        ctype, status, body = "text/plain; charset=utf-8", "200 OK", b""
        if len(parts) < 2 or b"\r\n\r\n" not in data:
            status = "400 Bad Request"
        elif parts[0] not in ("GET", "HEAD"):
            status = "405 Method Not Allowed"
        elif parts[1].split("?", 1)[0] != "/metrics":
            status = "404 Not Found"
        else:
            try:
                body, ctype = registry.prometheus_text().encode(), "text/plain; version=0.0.4; charset=utf-8"
            except Exception:
                log.exception("rendering metrics failed")
                status = "500 Internal Server Error"
        body = body or f"{status}\n".encode()
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.send(head + (b"" if parts[:1] == ["HEAD"] else body))
