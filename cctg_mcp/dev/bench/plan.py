"""The benchmark's plans (full and quick sample sizes), goals, flood limits and small helpers."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Goals (DESIGN.md §3, issue 9).
PIPELINE_GOAL_US = 20.0
SEND_VS_ECHO_GOAL = 1.5
DRAIN_GOAL = 1.10
RSS_GOAL_MB = 10.0


@dataclass(frozen=True)
class Plan:
    """Sample sizes of one benchmark run (full or quick)."""

    mode: str
    pipeline_calls: int  # calls per repetition
    pipeline_reps: int
    roundtrips: int  # echo and send calls each, interleaved
    throughput_calls: int  # per throughput measurement
    concurrency: int
    drain_events: int  # each goes to every chat
    drain_chats: int
    rss_sends: int
    rss_warmup: int
    answers: int  # approval requests answered by a button press


FULL = Plan("full", 20_000, 15, 400, 400, 8, 100, 6, 100_000, 10_000, 40)
QUICK = Plan("quick", 5_000, 7, 100, 100, 8, 20, 6, 25_000, 5_000, 10)

# The drain's flood limits: the stand-in enforces them, the server is paced to them.
RATE_PER_CHAT, CHAT_BURST, RATE_GLOBAL = 1.0, 3, 30.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
