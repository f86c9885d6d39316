"""The benchmark report: the results table (plain text and markdown) and its goals."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from cctg_mcp.dev.bench.plan import (
    CHAT_BURST,
    DRAIN_GOAL,
    PIPELINE_GOAL_US,
    RATE_GLOBAL,
    RATE_PER_CHAT,
    ROOT,
    RSS_GOAL_MB,
    SEND_VS_ECHO_GOAL,
)

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def git_sha() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _breakdown(b: dict[str, float] | None) -> str:
    if not b:
        return "not measured"
    hops = b["thread_hops_per_send"]
    return (
        f"{b['difference']:.2f} ms = accept commit {b['accept_commit']:.2f} + delivered mark "
        f"{b['delivered_mark']:.2f} + thread hops {b['thread_hops']:.2f} ({hops:g}/send) "
        f"+ HTTP {b['http_exchange']:.2f} + rest {b['rest']:.2f}"
    )


def _rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    s = r["samples"]
    echo, send = r["echo_roundtrip_ms_p50"], r["tool_call_roundtrip_ms_p50"]
    ratio = send / echo if echo else float("inf")
    drain_ratio = r["drain_seconds"] / r["drain_ideal_seconds"] if r["drain_ideal_seconds"] else float("inf")
    multi_ideal = r.get("multi_session_drain_ideal_seconds")
    multi_ratio = r["multi_session_drain_seconds"] / multi_ideal if multi_ideal else float("inf")
    redis_ideal = r.get("redis_drain_ideal_seconds") or 0.0
    redis_ratio = r.get("redis_drain_seconds", 0.0) / redis_ideal if redis_ideal else float("inf")

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    rows = [
        ("bare `await` of a no-op (p50)", f"{r['bare_call_us_p50']:.2f} µs", "", ""),
        (
            "pipeline overhead on success (p50)",
            f"{r['pipeline_overhead_us_p50']:.2f} µs",
            f"≤ {PIPELINE_GOAL_US:g} µs",
            verdict(r["pipeline_overhead_us_p50"] <= PIPELINE_GOAL_US),
        ),
        ("open-breaker rejection (p50)", f"{r['breaker_rejection_us_p50']:.2f} µs", "", ""),
        ("echo (`ping`) roundtrip over stdio (p50)", f"{echo:.2f} ms", "", ""),
        (
            "`send_telegram_message` roundtrip (p50)",
            f"{send:.2f} ms ({ratio:.2f}x echo)",
            f"≤ {SEND_VS_ECHO_GOAL:g}x echo",
            verdict(ratio <= SEND_VS_ECHO_GOAL),
        ),
        ("send minus echo, per send (mean): where it goes", _breakdown(r.get("send_breakdown_ms")), "", ""),
        ("sends, sequential", f"{r['throughput_sequential_calls_per_s']:.0f} calls/s", "", ""),
        (f"sends, {s['concurrency']} concurrent", f"{r['throughput_concurrent_calls_per_s']:.0f} calls/s", "", ""),
        (
            "a button press to `wait_for_response` answering (p50 / max)",
            f"{r['answer_latency_ms_p50']:.1f} / {r['answer_latency_ms_max']:.1f} ms",
            "",
            "",
        ),
        (
            f"drain of {s['drain_messages']} messages / {s['drain_chats']} chats after an outage",
            f"{r['drain_seconds']:.1f} s (ideal {r['drain_ideal_seconds']:.1f} s, {drain_ratio:.3f}x)",
            f"≤ {DRAIN_GOAL:.2f}x ideal",
            verdict(drain_ratio <= DRAIN_GOAL),
        ),
        ("429s provoked by the drain", str(r["drain_429s"]), "0", verdict(r["drain_429s"] == 0)),
        (
            f"RSS growth over {s['rss_sends']:,} sends (HTTP stubbed)",
            f"{r['rss_growth_mb_100k']:.2f} MB",
            f"≤ {RSS_GOAL_MB:g} MB",
            verdict(r["rss_growth_mb_100k"] <= RSS_GOAL_MB),
        ),
    ]
    if redis_ideal:  # redis_drain ran
        at = next(i for i, row in enumerate(rows) if row[0].startswith("429s provoked by the drain")) + 1
        rows[at:at] = [
            (
                f"the same drain by {s.get('redis_machines', 3)} machines (separate data dirs) through one Redis",
                f"{r['redis_drain_seconds']:.1f} s (ideal {redis_ideal:.1f} s, {redis_ratio:.3f}x)",
                f"≤ {DRAIN_GOAL:.2f}x ideal",
                verdict(redis_ratio <= DRAIN_GOAL),
            ),
            ("429s provoked by the Redis drain", str(r["redis_429s"]), "0", verdict(r["redis_429s"] == 0)),
            ("added cost of the shared budget on Redis, per send (p50)", f"{r['redis_take_us_p50']:.0f} µs", "", ""),
        ]
    if multi_ideal is not None:  # drain_sessions ran
        at = next(i for i, row in enumerate(rows) if row[0].startswith("429s provoked by the drain")) + 1
        rows[at:at] = [
            (
                f"the same drain, backlog shared by {s['multi_session_sessions']} sessions on one data dir",
                f"{r['multi_session_drain_seconds']:.1f} s (ideal {multi_ideal:.1f} s, {multi_ratio:.3f}x)",
                f"≤ {DRAIN_GOAL:.2f}x ideal",
                verdict(multi_ratio <= DRAIN_GOAL),
            ),
            (
                "429s provoked by the shared drain",
                str(r["multi_session_429s"]),
                "0",
                verdict(r["multi_session_429s"] == 0),
            ),
        ]
    return rows


def markdown(r: dict[str, Any]) -> str:
    s = r["samples"]
    lines = ["| measure | result | goal | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(r)]
    lines += [
        "",
        f"Measured by `scripts/bench{' --quick' if s['mode'] == 'quick' else ''}` on {r['python']}, "
        f"{r['platform']}, at {r['git_sha']}. Samples: pipeline {s['pipeline_reps']} x {s['pipeline_calls']:,} "
        f"calls; {s['roundtrips']} echo and {s['roundtrips']} send roundtrips (interleaved); "
        f"{s['throughput_calls']} sends per throughput figure; {s['answers']} approvals answered by a press; "
        f"drain of {s['drain_events']} events x "
        f"{s['drain_chats']} chats at {RATE_PER_CHAT:g} msg/s per chat (burst {CHAT_BURST}) and "
        f"{RATE_GLOBAL:g} msg/s overall, first message {s['drain_first_message_s']} s after recovery; "
        f"RSS {s['rss_before_mb']} → {s['rss_after_mb']} MB after {s['rss_warmup']:,} warm-up sends. "
        f"1-minute load average {s['load_avg_1m'][0]} at the start, {s['load_avg_1m'][1]} at the end.",
    ]
    return "\n".join(lines) + "\n"


def table(r: dict[str, Any]) -> str:
    rows = [("measure", "result", "goal", ""), *_rows(r)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    block = f"{BEGIN}\n{markdown(r)}{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
