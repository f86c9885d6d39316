from __future__ import annotations

import itertools
import json
import math
import re
import sys
from bisect import bisect_left
from functools import partial
from pathlib import Path

import anyio
import httpx
import prometheus_client
import pytest

from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.metrics import (
    BUCKETS,
    AlertThresholds,
    Histogram,
    MetricsRegistry,
    serve_prometheus,
)
from cctg_mcp.resilience.procstats import ProcessSampler


def bucket_width(x: float) -> float:
    i = bisect_left(BUCKETS, x)
    return BUCKETS[i] - (BUCKETS[i - 1] if i else 0.0)


class FakeProc:
    """Controls the figures that feed the memory and CPU alerts."""

    def __init__(self, clock: FakeClock, cpus: int = 2) -> None:
        self.cpu = 0.0
        self.rss = 100
        self.total = 1000
        self.sampler = ProcessSampler(
            clock,
            cpu_seconds=lambda: self.cpu,
            rss_bytes=lambda: self.rss,
            memory_total_bytes=lambda: self.total,
            cpu_count=cpus,
        )


def registry(clock: FakeClock, **kw: object) -> tuple[MetricsRegistry, FakeProc]:
    proc = FakeProc(clock)
    return MetricsRegistry(clock=clock, process=proc.sampler, **kw), proc  # type: ignore[arg-type]


# -- histogram ---------------------------------------------------------------------------


def test_quantiles_of_uniform_samples_are_within_one_bucket() -> None:
    h = Histogram()
    for ms in range(1, 1001):
        h.observe(ms / 1000)
    for q, expected in ((0.5, 0.5), (0.95, 0.95), (0.99, 0.99)):
        got = h.quantile(q)
        assert got is not None
        assert abs(got - expected) <= bucket_width(expected), (q, got)
    snap = h.snapshot()
    assert snap["count"] == 1000
    assert snap["min_ms"] == 1.0 and snap["max_ms"] == 1000.0
    assert snap["mean_ms"] == pytest.approx(500.5)
    assert abs(snap["p50_ms"] - 500) <= bucket_width(0.5) * 1000
    assert abs(snap["p99_ms"] - 990) <= bucket_width(0.99) * 1000
    assert h.quantile(0.0) == 0.001 and h.quantile(1.0) == 1.0


def test_quantiles_are_clamped_to_observed_range() -> None:
    h = Histogram()
    assert h.quantile(0.5) is None
    assert h.snapshot()["p95_ms"] is None and h.snapshot()["min_ms"] is None
    for _ in range(3):
        h.observe(0.123)
    assert h.quantile(0.01) == h.quantile(0.5) == h.quantile(0.99) == 0.123
    h.observe(500.0)  # beyond the last bound: the +Inf bucket, estimated up to max
    assert h.counts[-1] == 1
    assert h.quantile(1.0) == 500.0


def test_buckets_are_log_spaced_from_50us_to_120s() -> None:
    assert BUCKETS[0] == pytest.approx(50e-6)
    assert BUCKETS[-1] >= 120 and BUCKETS[-2] < 120
    ratios = {round(b / a, 3) for a, b in itertools.pairwise(BUCKETS)}
    assert ratios <= {1.189, 1.19}


# -- counters, error rate, snapshot -----------------------------------------------------


@pytest.mark.anyio
async def test_counts_error_rate_and_snapshot() -> None:
    clock = FakeClock()
    reg, _ = registry(clock)
    for _ in range(6):
        reg.record_call("telegram", "send", duration=0.05, outcome="success")
    reg.record_call("telegram", "send", duration=0.2, outcome="failure", error_code="TELEGRAM_SERVER_ERROR")
    reg.record_call("telegram", "send", duration=3.0, outcome="timeout", error_code="TIMEOUT")
    reg.record_call("telegram", "send", duration=0.0, outcome="rejected", error_code="CIRCUIT_OPEN")
    reg.record_call("telegram", "send", duration=0.0, outcome="rejected", error_code="CIRCUIT_OPEN")
    reg.record_retry("telegram", "send", 1.5)
    reg.record_breaker_transition("telegram", "closed", "open")
    reg.record_breaker_transition("telegram", "open", "half_open")
    reg.set_gauge("outbox_pending", 7)
    reg.set_gauge("outbox_oldest_age_seconds", 12.5)
    reg.incr("rate_limited_total", chat="42")
    reg.incr("rate_limited_total", 2, chat="42")
    reg.record_call("bridge", "status", duration=0.01, outcome="success")
    await clock.advance(10)

    m = reg.operation("telegram", "send")
    assert (m.calls, m.successes, m.failures, m.timeouts, m.rejections) == (10, 6, 1, 1, 2)
    assert m.error_rate == pytest.approx(0.4)
    assert m.latency.count == 8  # rejections say nothing about latency
    assert m.by_error_code == {"TELEGRAM_SERVER_ERROR": 1, "TIMEOUT": 1, "CIRCUIT_OPEN": 2}

    snap = reg.snapshot()
    json.dumps(snap)  # JSON-ready
    op = snap["operations"]["telegram"]["send"]
    assert op["calls"] == 10 and op["retries"] == 1 and op["retry_delay_s"] == 1.5
    assert op["error_rate"] == pytest.approx(0.4)
    assert op["throughput_per_s"] == pytest.approx(1.0)
    assert {"p50_ms", "p95_ms", "p99_ms"} <= op["latency"].keys()
    assert snap["totals"]["calls"] == 11 and snap["totals"]["errors"] == 4
    assert snap["breakers"]["telegram"] == {
        "state": "half_open",
        "transitions": {"closed->open": 1, "open->half_open": 1},
    }
    assert {"name": "outbox_pending", "labels": {}, "value": 7} in snap["gauges"]
    assert {"name": "rate_limited_total", "labels": {"chat": "42"}, "value": 3} in snap["counters"]
    assert snap["process"]["memory_fraction"] == pytest.approx(0.1)

    only = reg.snapshot(component="bridge")
    assert list(only["operations"]) == ["bridge"] and only["totals"]["calls"] == 1
    assert reg.snapshot(component="telegram", operation="nope")["operations"] == {}


# -- alerts -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_error_rate_alert_raised_and_cleared_per_interval() -> None:
    clock = FakeClock()
    reg, _ = registry(clock, thresholds=AlertThresholds(error_rate=0.1, min_calls=5))
    for i in range(10):
        reg.record_call("tg", "send", duration=0.01, outcome="failure" if i < 5 else "success")
    await clock.advance(10)
    reg.sample()
    [alert] = reg.alerts()
    raised_at = clock.monotonic()
    assert (alert.name, alert.metric, alert.value, alert.since) == ("error_rate", "tg/send", 0.5, raised_at)
    assert "tg/send" in alert.message

    # Too few calls to judge: the alert stays as it was.
    reg.record_call("tg", "send", duration=0.01, outcome="success")
    await clock.advance(10)
    reg.sample()
    assert [a.name for a in reg.alerts()] == ["error_rate"]

    # A healthy interval clears it, although the cumulative error rate is still high.
    for _ in range(10):
        reg.record_call("tg", "send", duration=0.01, outcome="success")
    await clock.advance(10)
    reg.sample()
    assert reg.alerts() == []
    assert reg.operation("tg", "send").error_rate > 0.1
    raised, cleared = reg.alert_history
    assert (raised.since, raised.cleared_at, raised.value) == (raised_at, None, 0.5)
    assert (cleared.since, cleared.cleared_at, cleared.value) == (raised_at, clock.monotonic(), 0.0)

    # 1 failure out of 1 call never alerts.
    reg.record_call("tg", "send", duration=0.01, outcome="failure")
    await clock.advance(10)
    reg.sample()
    assert reg.alerts() == []


@pytest.mark.anyio
async def test_response_time_alert_uses_the_last_interval_p95() -> None:
    clock = FakeClock()
    reg, _ = registry(clock, thresholds=AlertThresholds(response_time_ms=5000))
    for _ in range(20):
        reg.record_call("bridge", "send", duration=6.0, outcome="success")
    await clock.advance(10)
    reg.sample()
    [alert] = reg.alerts()
    assert alert.name == "response_time" and alert.metric == "bridge/send"
    assert abs(alert.value - 6000) <= bucket_width(6.0) * 1000
    assert reg.history[-1].p95_ms == pytest.approx(alert.value)

    for _ in range(20):
        reg.record_call("bridge", "send", duration=0.02, outcome="success")
    await clock.advance(10)
    reg.sample()
    assert reg.alerts() == []
    assert (reg.operation("bridge", "send").latency.quantile(0.95) or 0) > 5.0  # cumulative still slow
    assert [e.cleared_at is None for e in reg.alert_history] == [True, False]


@pytest.mark.anyio
async def test_memory_and_cpu_alerts_from_injected_readers() -> None:
    clock = FakeClock()
    reg, proc = registry(clock, thresholds=AlertThresholds(memory_usage=0.8, cpu_usage=0.8))
    await clock.advance(10)
    proc.cpu += 18.0  # 18 CPU-seconds in 10 s on 2 cores: 90 % of all cores
    proc.rss = 900
    assert reg.process_stats().cpu_percent == pytest.approx(90.0)
    reg.sample()
    assert {(a.name, a.metric) for a in reg.alerts()} == {
        ("memory_usage", "process"),
        ("cpu_usage", "process"),
    }
    by_name = {a.name: a for a in reg.alerts()}
    assert by_name["memory_usage"].value == pytest.approx(0.9)
    assert by_name["cpu_usage"].value == pytest.approx(0.9)

    await clock.advance(10)
    proc.cpu += 2.0  # 10 % over the new interval: the baseline moved at the last sample
    reg.sample()
    assert [a.name for a in reg.alerts()] == ["memory_usage"]
    proc.rss = 500
    await clock.advance(10)
    reg.sample()
    assert reg.alerts() == []
    assert sum(e.cleared_at is not None for e in reg.alert_history) == 2
    assert reg.history[-1].cpu_percent == 0.0


# -- history ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_history_is_a_bounded_ring_purged_by_retention() -> None:
    clock = FakeClock()
    reg, _ = registry(clock, history_retention=100, history_interval=10)
    for _ in range(25):
        reg.record_call("a", "b", duration=0.01, outcome="success")
        await clock.advance(10)
        reg.sample()
    assert len(reg.history) == 10
    assert reg.history[-1].calls == 1 and reg.history[-1].throughput_per_s == pytest.approx(0.1)
    first = reg.history[0].at
    assert reg.purge_history(first + 100.5) == 1  # only the oldest is past the retention
    assert reg.purge_history(clock.monotonic() + 1000) == 9
    assert len(reg.history) == 0

    # Sampling after a long pause purges what fell out of the window.
    reg.sample()
    await clock.advance(150)
    reg.sample()
    assert len(reg.history) == 1


@pytest.mark.anyio
async def test_run_sampler_samples_every_interval() -> None:
    clock = FakeClock()
    reg, _ = registry(clock, history_interval=10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reg.run_sampler)
        await anyio.wait_all_tasks_blocked()
        await clock.advance(35)
        tg.cancel_scope.cancel()
    assert [e.interval_s for e in reg.history] == [10, 10, 10]


# -- bounded memory -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_memory_stays_bounded_whatever_the_volume() -> None:
    clock = FakeClock()
    reg, _ = registry(clock, max_series=200, max_labelled=500, history_retention=500, history_interval=10)
    for i in range(100_000):
        op = f"op{i % 1000}"
        reg.record_call(
            "svc",
            op,
            duration=(i % 500) / 1000,
            outcome="success" if i % 7 else "failure",
            error_code=None if i % 7 else f"E{i % 997}",
        )
        if i % 100 == 0:
            reg.set_gauge("queue_depth", i, queue=f"q{i}")
            reg.incr("events_total", kind=f"k{i}")
            reg.record_breaker_transition(f"b{i}", "closed", "open")
        if i % 1000 == 0:
            await clock.advance(10)
            reg.sample()
    assert reg.series_count == 201  # 200 named + other/other
    assert sum(1 for _ in reg.series()) == 201
    assert sum(m.calls for m in reg.series()) == 100_000
    other = reg.operation("other", "other")
    assert other.calls == 100_000 - 200 * 100
    assert all(len(m.by_error_code) <= 51 for m in reg.series())
    assert "other" in other.by_error_code
    assert len(reg.history) == 50 and reg.history.maxlen == 50
    assert len(reg._gauges) + len(reg._counters) + len(reg.breaker_transitions) <= 2 * reg.max_labelled
    assert len(reg._gauges) + len(reg._counters) == 500 and len(reg.breaker_transitions) == 500
    assert reg.dropped_series == (2000 - 500) + (1000 - 500)  # gauges+counters share one cap
    assert len(reg.alert_history) <= (reg.alert_history.maxlen or 0)
    assert all(len(m.latency.counts) == len(BUCKETS) + 1 for m in reg.series())


# -- Prometheus exposition ----------------------------------------------------------------

LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{(?P<labels>{LABEL}(?:,{LABEL})*)?\}})?"
    r" (?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))$"
)
COMMENT = re.compile(r"^# (?P<kind>HELP|TYPE) (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*) (?P<rest>.*)$")


def parse_labels(text: str | None) -> dict[str, str]:
    out = {}
    for m in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"', text or ""):
        out[m.group(1)] = re.sub(r"\\(.)", lambda g: "\n" if g.group(1) == "n" else g.group(1), m.group(2))
    return out


@pytest.mark.anyio
async def test_prometheus_text_follows_the_exposition_grammar() -> None:
    clock = FakeClock()
    reg, _ = registry(clock)
    nasty = 'we"ird\\comp\nonent'
    for ms in range(1, 101):
        reg.record_call(nasty, "send", duration=ms / 1000, outcome="success")
    reg.record_call("telegram", "send", duration=0.3, outcome="failure", error_code="TELEGRAM_SERVER_ERROR")
    reg.record_retry("telegram", "send", 2.0)
    reg.record_breaker_transition("telegram", "closed", "open")
    reg.set_gauge("outbox_pending", 3)
    reg.incr("unauthorized_updates", 2)
    await clock.advance(10)
    text = reg.prometheus_text()
    assert text.endswith("\n")

    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            c = COMMENT.match(line)
            assert c, line
            if c["kind"] == "TYPE":
                assert c["name"] not in types, f"duplicate TYPE {line}"
                assert c["rest"] in {"counter", "gauge", "histogram", "summary", "untyped"}
                types[c["name"]] = c["rest"]
            else:
                helps.add(c["name"])
            continue
        s = SAMPLE.match(line)
        assert s, line
        name = s["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"sample before its TYPE: {line}"
        samples.append((name, parse_labels(s["labels"]), float(s["value"])))
    assert set(types) == helps
    assert types["cctg_operation_calls_total"] == "counter"
    assert types["cctg_operation_duration_seconds"] == "histogram"
    assert types["cctg_outbox_pending"] == "gauge"
    assert types["cctg_unauthorized_updates_total"] == "counter"
    assert all(t != "counter" or n.endswith("_total") for n, t in types.items())

    # The escaped label value comes back intact.
    calls = {(lb["component"], lb["outcome"]): v for n, lb, v in samples if n == "cctg_operation_calls_total"}
    assert calls[(nasty, "success")] == 100 and calls[("telegram", "failure")] == 1

    # Buckets: cumulative, ending at +Inf == _count, per series.
    for comp in (nasty, "telegram"):
        buckets = [
            (lb["le"], v)
            for n, lb, v in samples
            if n == "cctg_operation_duration_seconds_bucket" and lb["component"] == comp
        ]
        values = [v for _, v in buckets]
        assert values == sorted(values)
        assert [float(le) for le, _ in buckets] == sorted(float(le) for le, _ in buckets)
        assert buckets[-1][0] == "+Inf"
        [count] = [
            v for n, lb, v in samples if n == "cctg_operation_duration_seconds_count" and lb["component"] == comp
        ]
        assert buckets[-1][1] == count
    [total] = [v for n, lb, v in samples if n == "cctg_operation_duration_seconds_sum" and lb["component"] == nasty]
    assert total == pytest.approx(sum(ms / 1000 for ms in range(1, 101)))
    assert (
        "cctg_breaker_transitions_total",
        {"breaker": "telegram", "from_state": "closed", "to_state": "open"},
        1.0,
    ) in samples
    assert ("cctg_outbox_pending", {}, 3.0) in samples
    assert ("cctg_unauthorized_updates_total", {}, 2.0) in samples
    assert all(math.isfinite(v) or n.endswith("_bucket") for n, _, v in samples)


@pytest.mark.anyio
async def test_serve_prometheus_answers_a_real_get() -> None:
    reg = MetricsRegistry()
    reg.record_call("telegram", "send", duration=0.05, outcome="success")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            port = await tg.start(partial(serve_prometheus, reg, "127.0.0.1", 0, path="/probe/metrics"))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                r = await client.get("/probe/metrics")
                assert r.status_code == 200
                assert r.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
                calls = 'cctg_operation_calls_total{component="telegram",operation="send",outcome="success"} 1.0'
                assert calls in r.text
                # prometheus_client's standard collectors: process_*, python_*
                assert "process_cpu_seconds_total" in r.text and "python_info" in r.text
                assert (await client.get("/metrics")).status_code == 404  # PROMETHEUS_ENDPOINT is the only path
                assert (await client.post("/probe/metrics")).status_code == 405
            tg.cancel_scope.cancel()


def test_breaker_state_gauges_list_every_state() -> None:
    reg = MetricsRegistry()
    reg.observe_breaker("telegram", "closed")
    reg.record_breaker_transition("bridge", "closed", "open")
    text = reg.prometheus_text()
    assert 'cctg_breaker_state{breaker="telegram",state="closed"} 1.0' in text
    assert 'cctg_breaker_state{breaker="telegram",state="open"} 0.0' in text
    assert 'cctg_breaker_state{breaker="bridge",state="open"} 1.0' in text
    assert "cctg_breaker_transitions_total" in text and 'breaker="telegram",from_state' not in text


# -- process figures ----------------------------------------------------------------------


def test_real_process_figures_from_psutil(tmp_path: object) -> None:
    import psutil

    sampler = ProcessSampler(disk_path=str(tmp_path))
    stats = sampler.read()
    assert stats.rss_mb is not None and stats.rss_mb > 1
    assert stats.max_rss_mb is not None and stats.max_rss_mb >= stats.rss_mb  # the highest RSS read, never below
    again = sampler.read()
    assert again.max_rss_mb is not None and again.rss_mb is not None and again.max_rss_mb >= again.rss_mb
    assert not hasattr(stats, "net_rx_bytes")  # the namespace's traffic is not this process's
    free = psutil.disk_usage(str(tmp_path)).free / 1024 / 1024
    assert stats.disk_free_mb is not None and abs(stats.disk_free_mb - free) < max(64.0, free * 0.01)
    assert stats.memory_fraction is not None and 0 < stats.memory_fraction < 1
    assert stats.open_files is not None and stats.open_files >= 3
    assert stats.threads is not None and stats.threads >= 1
    assert stats.cpu_seconds is not None and stats.cpu_seconds > 0
    assert stats.disk_free_mb is not None and stats.disk_free_mb > 0
    assert stats.cpu_count >= 1
    if not hasattr(psutil.Process(), "io_counters"):  # macOS: no I/O figures, and none made up
        assert (stats.read_bytes, stats.write_bytes, stats.io_read_bytes, stats.io_write_bytes) == (None,) * 4
        return
    assert stats.read_bytes is not None and stats.write_bytes is not None  # storage I/O (may be 0 in a container)
    (Path(str(tmp_path)) / "io.bin").write_bytes(b"x" * 65536)
    after = sampler.read()
    assert after.read_bytes is not None and after.read_bytes >= stats.read_bytes >= 0
    assert after.write_bytes is not None and after.write_bytes >= stats.write_bytes >= 0
    if hasattr(psutil.Process().io_counters(), "write_chars"):  # Linux: every write syscall counted
        assert stats.io_write_bytes is not None and after.io_write_bytes is not None
        assert after.io_write_bytes - stats.io_write_bytes >= 65536
        assert stats.io_read_bytes is not None and stats.io_read_bytes > 0  # it read its own modules


def test_without_prometheus_client_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from cctg_mcp.resilience.errors import ConfigurationError

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'cctg-mcp\[prometheus\]'"):
        MetricsRegistry().prometheus_text()
