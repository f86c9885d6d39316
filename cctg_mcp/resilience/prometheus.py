"""Prometheus exposition through ``prometheus_client`` (the ``[prometheus]`` extra), and a tiny
HTTP server for it.

``exposition_registry(metrics)`` is a ``CollectorRegistry`` holding the standard process,
platform and GC collectors (``process_*``, ``python_*``) and one collector that reads
``metrics.MetricsRegistry`` at scrape time; ``prometheus_text`` renders it with
``generate_latest``. Only what Prometheus scrapes lives here; the numbers are the registry's.
Without ``prometheus_client`` both raise ``ConfigurationError`` saying what to install.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from functools import partial
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from .errors import ConfigurationError
from .histogram import BUCKETS

if TYPE_CHECKING:
    from .metrics import MetricsRegistry

log = logging.getLogger(__name__)
_OUTCOMES = ("success", "failure", "rejected", "timeout")
#: Every state a breaker can be in: the state gauge lists each (1 for the current one).
BREAKER_STATES = ("closed", "open", "half_open", "isolated", "disabled")
#: Bounds exposed to Prometheus: every second one (two per octave) keeps scrapes half the size.
_EXPOSED = [(i, repr(BUCKETS[i])) for i in range(1, len(BUCKETS), 2)]
INSTALL_HINT = "Prometheus exposition needs prometheus_client: pip install 'cctg-mcp[prometheus]'"


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    return prometheus_client


class RegistryCollector:
    """A ``prometheus_client`` collector over a ``MetricsRegistry``, read at scrape time."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        reg, n = self.registry, "cctg_operation_"
        series = list(reg.series())
        calls = CounterMetricFamily(f"{n}calls", "Calls by outcome.", labels=["component", "operation", "outcome"])
        retries = CounterMetricFamily(f"{n}retries", "Retries scheduled.", labels=["component", "operation"])
        errors = CounterMetricFamily(
            f"{n}errors", "Failed calls by error code.", labels=["component", "operation", "code"]
        )
        duration = HistogramMetricFamily(
            f"{n}duration_seconds", "Call latency in seconds.", labels=["component", "operation"]
        )
        for m in series:
            key = [m.component, m.operation]
            for outcome, value in zip(_OUTCOMES, (m.successes, m.failures, m.rejections, m.timeouts), strict=True):
                calls.add_metric([*key, outcome], value)
            retries.add_metric(key, m.retries)
            for code, count in m.by_error_code.items():
                errors.add_metric([*key, code], count)
            cumulative = list(accumulate(m.latency.counts))
            buckets = [(le, cumulative[i]) for i, le in _EXPOSED] + [("+Inf", m.latency.count)]
            duration.add_metric(key, buckets, m.latency.sum)
        yield from (calls, retries, errors, duration)

        transitions = CounterMetricFamily(
            "cctg_breaker_transitions", "Circuit breaker state changes.", labels=["breaker", "from_state", "to_state"]
        )
        for (breaker, from_state, to_state), count in reg.breaker_transitions.items():
            transitions.add_metric([breaker, from_state, to_state], count)
        state = GaugeMetricFamily(
            "cctg_breaker_state", "1 for the breaker's current state, 0 for the others.", labels=["breaker", "state"]
        )
        for breaker, current in sorted(reg.breaker_states.items()):
            for name in BREAKER_STATES:
                state.add_metric([breaker, name], 1.0 if name == current else 0.0)
        yield from (transitions, state)

        for kind in ("counter", "gauge"):  # the incr counters and set_gauge gauges
            store = reg.labelled(kind)
            for name in sorted({k for k, _ in store}):
                family = "cctg_" + re.sub(r"[^a-zA-Z0-9_:]", "_", name).removesuffix("_total")
                rows = [(dict(labels), amount) for (k, labels), amount in store.items() if k == name]
                keys = sorted({key for labels, _ in rows for key in labels})
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                metric = cls(family, f"{name} ({kind})", labels=keys)
                for labels, amount in rows:
                    metric.add_metric([labels.get(key, "") for key in keys], amount)
                yield metric

        p = reg.process_stats()  # what process_* (ProcessCollector) does not give
        for suffix, figure, reading, doc in (
            ("cpu_percent", "gauge", p.cpu_percent, "CPU use since the previous sample, percent."),
            ("threads", "gauge", p.threads, "Threads of this process."),
            ("read_bytes", "counter", p.read_bytes, "Bytes read from storage."),
            ("write_bytes", "counter", p.write_bytes, "Bytes written to storage."),
        ):
            if reading is not None:
                family_cls = CounterMetricFamily if figure == "counter" else GaugeMetricFamily
                yield family_cls(f"cctg_process_{suffix}", doc, value=reading)

        alerts = GaugeMetricFamily("cctg_alert_active", "Active alerts (1 each).", labels=["name", "metric"])
        for alert in reg.alerts():
            alerts.add_metric([alert.name, alert.metric], 1)
        yield alerts
        yield CounterMetricFamily(
            "cctg_metrics_dropped_series", "Series refused by the cardinality caps.", value=reg.dropped_series
        )


def exposition_registry(registry: MetricsRegistry) -> Any:
    """A fresh ``CollectorRegistry``: process, platform and GC collectors plus ``RegistryCollector``."""
    client = _client()
    out = client.CollectorRegistry(auto_describe=False)
    client.ProcessCollector(registry=out)
    client.PlatformCollector(registry=out)
    client.GCCollector(registry=out)
    out.register(RegistryCollector(registry))
    return out


def prometheus_text(registry: MetricsRegistry) -> str:
    """The registry in the Prometheus text exposition format (``prometheus_client.generate_latest``)."""
    return str(_client().generate_latest(exposition_registry(registry)).decode())


async def serve_prometheus(
    registry: MetricsRegistry,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    path: str = "/metrics",
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET <path>`` with the exposition until cancelled (the collectors are built once).

    ``task_status.started`` reports the bound port (pass ``port=0`` for any free one). Without
    ``prometheus_client`` it raises ``ConfigurationError`` before binding anything."""
    exposition = exposition_registry(registry)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        task_status.started(listener.extra(SocketAttribute.local_port))
        await listener.serve(partial(_answer, exposition, path))


async def _answer(exposition: Any, path: str, stream: SocketStream) -> None:
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
        elif parts[1].split("?", 1)[0] != path:
            status = "404 Not Found"
        else:
            try:
                client = _client()
                body, ctype = client.generate_latest(exposition), client.CONTENT_TYPE_LATEST
            except Exception:
                log.exception("rendering metrics failed")
                status = "500 Internal Server Error"
        body = body or f"{status}\n".encode()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.send(head + (b"" if parts[:1] == ["HEAD"] else body))
