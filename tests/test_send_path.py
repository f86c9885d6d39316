"""The send path, measured: the outbox's timing counters, the delivered mark that skips the
worker-thread hop when it cannot wait, and the bench's attribution of a send's round trip."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import anyio
import pytest

from cctg_mcp.config import load_settings
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.dev.bench.report import table
from cctg_mcp.dev.bench.roundtrip import UNPACED, send_breakdown
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.metrics import MetricsRegistry

pytestmark = pytest.mark.anyio


def event(n: int = 1) -> Event:
    return Event(event_id=f"ev-{n}", type="info_notification", title=f"t{n}", description="d", task_id=f"task-{n}")


def counters(metrics: MetricsRegistry) -> dict[tuple[str, str], float]:
    """(counter name, operation) -> value, for the outbox's sqlite_* counters."""
    out: dict[tuple[str, str], float] = {}
    for (name, labels), value in metrics.labelled("counter").items():
        lb = dict(labels)
        if name.startswith("sqlite_") and lb.get("store") == "outbox":
            out[(name, lb["operation"])] = value
    return out


async def test_each_outbox_call_is_counted_with_its_work_and_its_wait(tmp_path: Path) -> None:
    metrics = MetricsRegistry()
    box = await Outbox.open(tmp_path / "o.sqlite3", metrics=metrics)
    try:
        assert await box.enqueue(event(), [1, 2])
        assert (await box.counts()).pending == 2
    finally:
        await box.close()
    c = counters(metrics)
    assert c[("sqlite_calls", "enqueue")] == 1
    assert c[("sqlite_calls", "counts")] == 1
    # the commit's time and the hop to a worker thread and back were both recorded (a figure the
    # clock's resolution may round to 0; the calls are counted above)
    assert c[("sqlite_work_seconds", "enqueue")] >= 0
    assert c[("sqlite_wait_seconds", "enqueue")] >= 0


async def test_without_metrics_nothing_is_counted_and_the_outbox_works(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    try:
        mine = await box.enqueue(event(), [1], lease=("tool", 30))
        assert mine is not None
        await box.mark_delivered(mine[0].id, [7])
        assert [(d.status, d.message_ids) for d in await box.deliveries("ev-1")] == [("delivered", [7])]
    finally:
        await box.close()


async def test_the_delivered_mark_commits_on_the_loop_thread_when_the_database_is_free(tmp_path: Path) -> None:
    metrics = MetricsRegistry()
    box = await Outbox.open(tmp_path / "o.sqlite3", metrics=metrics)
    try:
        mine = await box.enqueue(event(), [1], lease=("tool", 30))
        assert mine is not None
        await box.mark_delivered(mine[0].id, [5])
        assert [(d.status, d.message_ids) for d in await box.deliveries("ev-1")] == [("delivered", [5])]
        c = counters(metrics)
        assert c[("sqlite_calls", "exec_relaxed_inline")] == 1
        assert c[("sqlite_wait_seconds", "exec_relaxed_inline")] == 0.0
        assert ("sqlite_calls", "exec_relaxed") not in c  # no worker thread was used for it
        # The connection waits for other processes and checkpoints the WAL again afterwards.
        conn = box._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # readers never block the writer
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, for the next accept
    finally:
        await box.close()
    # Committed: another connection (another process) reads it.
    other = sqlite3.connect(tmp_path / "o.sqlite3")
    try:
        assert other.execute("SELECT status FROM deliveries").fetchall() == [("delivered",)]
    finally:
        other.close()


async def test_the_delivered_mark_waits_in_a_worker_thread_while_another_process_writes(tmp_path: Path) -> None:
    """Another process holding SQLite's write lock must not block the event loop: the mark
    goes to a worker thread, which waits for the lock, and commits once it is released."""
    metrics = MetricsRegistry()
    path = tmp_path / "o.sqlite3"
    box = await Outbox.open(path, metrics=metrics)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mine = await box.enqueue(event(), [1], lease=("tool", 30))
        assert mine is not None
        other.execute("BEGIN IMMEDIATE")  # the other process's write transaction
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(box.mark_delivered, mine[0].id, [9])
                await anyio.wait_all_tasks_blocked()  # the event loop is free: the mark waits in a thread
                assert other.execute("SELECT status FROM deliveries").fetchall() == [("in_flight",)]
                other.execute("COMMIT")
        assert [(d.status, d.message_ids) for d in await box.deliveries("ev-1")] == [("delivered", [9])]
        c = counters(metrics)
        assert c[("sqlite_calls", "exec_relaxed")] == 1
        assert ("sqlite_calls", "exec_relaxed_inline") not in c
        assert box._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    finally:
        other.close()
        await box.close()


def test_the_breakdown_adds_up_to_the_difference_between_send_and_echo() -> None:
    before = {
        "sqlite_calls:enqueue": 10.0,
        "sqlite_work_seconds:enqueue": 0.010,
        "sqlite_wait_seconds:enqueue": 0.002,
        "sqlite_calls:exec_relaxed_inline": 10.0,
        "sqlite_work_seconds:exec_relaxed_inline": 0.001,
        "sqlite_wait_seconds:exec_relaxed_inline": 0.0,
        "sqlite_calls:next_due": 3.0,
        "sqlite_wait_seconds:next_due": 0.5,  # the background loop's calls are not the send's
        "http:count": 10.0,
        "http:seconds": 0.010,
    }
    after = {
        **before,
        "sqlite_calls:enqueue": 14.0,
        "sqlite_work_seconds:enqueue": 0.014,  # 1 ms per send
        "sqlite_wait_seconds:enqueue": 0.0028,  # 0.2 ms per send
        "sqlite_calls:exec_relaxed_inline": 14.0,
        "sqlite_work_seconds:exec_relaxed_inline": 0.0014,  # 0.1 ms per send
        "sqlite_calls:next_due": 9.0,
        "sqlite_wait_seconds:next_due": 0.9,
        "http:count": 14.0,
        "http:seconds": 0.012,  # 0.5 ms per send
    }
    b = send_breakdown(before, after, echo_ms=[1.0, 1.0, 1.0, 1.0], send_ms=[3.0, 3.0, 3.5, 2.5])
    assert b["echo_mean"] == 1.0 and b["send_mean"] == 3.0 and b["difference"] == 2.0
    assert b["accept_commit"] == 1.0
    assert b["delivered_mark"] == 0.1
    assert b["thread_hops"] == 0.2
    assert b["http_exchange"] == 0.5
    assert b["rest"] == 0.2
    assert b["outbox_calls_per_send"] == 2.0 and b["thread_hops_per_send"] == 1.0 and b["http_calls_per_send"] == 1.0
    parts = ("accept_commit", "delivered_mark", "thread_hops", "http_exchange", "rest")
    assert sum(b[k] for k in parts) == pytest.approx(b["difference"])


def test_the_benchs_server_settings_are_accepted(tmp_path: Path) -> None:
    """The roundtrip phase starts real servers with these variables: a value out of range made
    every server exit at start (the burst ceiling of 1000 came after the bench's 100000)."""
    env = {**UNPACED, "TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_ALLOWED_USERS": "1", "CCTG_DATA_DIR": str(tmp_path)}
    settings = load_settings(env)
    assert settings.rate_per_chat_burst == 1000 and settings.problems() == []


def test_the_bench_report_shows_the_breakdown() -> None:
    breakdown = {
        "difference": 2.0,
        "accept_commit": 1.0,
        "delivered_mark": 0.1,
        "thread_hops": 0.2,
        "http_exchange": 0.5,
        "rest": 0.2,
        "outbox_calls_per_send": 2.0,
        "thread_hops_per_send": 1.0,
    }
    results = {
        "bare_call_us_p50": 0.1,
        "pipeline_overhead_us_p50": 4.0,
        "breaker_rejection_us_p50": 10.0,
        "echo_roundtrip_ms_p50": 1.0,
        "tool_call_roundtrip_ms_p50": 3.0,
        "send_breakdown_ms": breakdown,
        "throughput_sequential_calls_per_s": 300.0,
        "throughput_concurrent_calls_per_s": 400.0,
        "answer_latency_ms_p50": 12.5,
        "answer_latency_ms_max": 40.25,
        "drain_seconds": 10.0,
        "drain_ideal_seconds": 10.0,
        "drain_429s": 0,
        "rss_growth_mb_100k": 1.0,
        "samples": {"concurrency": 8, "drain_messages": 60, "drain_chats": 6, "rss_sends": 1000},
    }
    text = table(results)
    assert re.search(r"a button press to `wait_for_response` answering \(p50 / max\) +12\.5 / 40\.2 ms", text), text
    assert (
        "2.00 ms = accept commit 1.00 + delivered mark 0.10 + thread hops 0.20 (1/send) + HTTP 0.50 + rest 0.20" in text
    )
