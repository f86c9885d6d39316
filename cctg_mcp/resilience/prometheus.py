"""Prometheus exposition: the registry as text format 0.0.4, and a tiny ``GET /metrics`` server.

Only what Prometheus scrapes lives here; the numbers themselves are ``metrics.MetricsRegistry``'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Iterable
from functools import partial
from itertools import accumulate
from typing import TYPE_CHECKING

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from .histogram import BUCKETS, Histogram

if TYPE_CHECKING:
    from .metrics import Labels, MetricsRegistry

log = logging.getLogger(__name__)
_OUTCOMES = ("success", "failure", "rejected", "timeout")
#: Bounds exposed to Prometheus: every second one (two per octave) keeps scrapes half the size.
_EXPOSED = [(i, repr(BUCKETS[i])) for i in range(1, len(BUCKETS), 2)] + [(len(BUCKETS), "+Inf")]


def prometheus_text(registry: MetricsRegistry) -> str:
    """The registry in the Prometheus text exposition format 0.0.4."""
    out: list[str] = []
    seen: set[str] = set()

    def fam(name: str, kind: str, help_: str, lines: Iterable[str]) -> None:
        lines = list(lines)
        if name not in seen and lines:
            seen.add(name)
            out.extend((f"# HELP {name} {_escape(help_, quote=False)}", f"# TYPE {name} {kind}", *lines))

    ms = [(m, _labels((("component", m.component), ("operation", m.operation)))) for m in registry.series()]
    n = "cctg_operation_"
    fam(
        f"{n}calls_total",
        "counter",
        "Calls by outcome.",
        (
            f'{n}calls_total{{{lb},outcome="{o}"}} {v}'
            for m, lb in ms
            for o, v in zip(_OUTCOMES, (m.successes, m.failures, m.rejections, m.timeouts), strict=True)
        ),
    )
    fam(f"{n}retries_total", "counter", "Retries scheduled.", (f"{n}retries_total{{{lb}}} {m.retries}" for m, lb in ms))
    fam(
        f"{n}errors_total",
        "counter",
        "Failed calls by error code.",
        (f'{n}errors_total{{{lb},code="{_escape(c)}"}} {k}' for m, lb in ms for c, k in m.by_error_code.items()),
    )
    fam(
        f"{n}duration_seconds",
        "histogram",
        "Call latency in seconds.",
        (row for m, lb in ms for row in _histogram_lines(f"{n}duration_seconds", lb, m.latency)),
    )
    fam(
        "cctg_breaker_transitions_total",
        "counter",
        "Circuit breaker state changes.",
        (
            _line("cctg_breaker_transitions_total", (("breaker", b), ("from_state", f), ("to_state", t)), k)
            for (b, f, t), k in registry.breaker_transitions.items()
        ),
    )
    fam(
        "cctg_breaker_state",
        "gauge",
        "Current breaker state (1 for the state it is in).",
        (_line("cctg_breaker_state", (("breaker", b), ("state", s)), 1) for b, s in registry.breaker_states.items()),
    )
    for store, kind in ((registry.labelled("counter"), "counter"), (registry.labelled("gauge"), "gauge")):
        for name in sorted({k for k, _ in store}):
            f = "cctg_" + re.sub(r"[^a-zA-Z0-9_:]", "_", name)
            f += "_total" if kind == "counter" and not f.endswith("_total") else ""
            fam(f, kind, f"{name} ({kind})", (_line(f, lb, v) for (k, lb), v in store.items() if k == name))
    p = registry.process_stats()
    rss = None if p.rss_mb is None else round(p.rss_mb * 2**20)
    for f, kind, value in (
        ("cpu_seconds_total", "counter", p.cpu_seconds),
        ("cpu_percent", "gauge", p.cpu_percent),
        ("resident_memory_bytes", "gauge", rss),
        ("open_fds", "gauge", p.open_files),
        ("threads", "gauge", p.threads),
        ("read_bytes_total", "counter", p.read_bytes),
        ("write_bytes_total", "counter", p.write_bytes),
        ("uptime_seconds", "gauge", p.uptime_s),
    ):
        if value is not None:
            f = f"cctg_process_{f}"
            fam(f, kind, f.replace("_", " ")[5:] + ".", [f"{f} {_num(value)}"])
    fam(
        "cctg_alert_active",
        "gauge",
        "Active alerts (1 each).",
        (_line("cctg_alert_active", (("name", a.name), ("metric", a.metric)), 1) for a in registry.alerts()),
    )
    fam(
        "cctg_metrics_dropped_series_total",
        "counter",
        "Series refused by the cardinality caps.",
        [f"cctg_metrics_dropped_series_total {registry.dropped_series}"],
    )
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


async def serve_prometheus(
    registry: MetricsRegistry,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
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
                body, ctype = prometheus_text(registry).encode(), "text/plain; version=0.0.4; charset=utf-8"
            except Exception:
                log.exception("rendering metrics failed")
                status = "500 Internal Server Error"
        body = body or f"{status}\n".encode()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.send(head + (b"" if parts[:1] == ["HEAD"] else body))
