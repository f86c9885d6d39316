"""A fixed-bucket latency histogram: log-spaced bounds, quantile estimates, snapshots.

Recording is one ``bisect`` and a few int/float updates; memory is one list of 87 ints.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

#: Upper bounds in seconds, four per octave from 50 µs up to the first bound >= 120 s (86 bounds).
BUCKETS: tuple[float, ...] = tuple(float(f"{50e-6 * 2 ** (k / 4):.6g}") for k in range(86))


def bucket_quantile(counts: list[int], total: int, q: float, lo: float, hi: float) -> float | None:
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


def to_ms(seconds: float | None) -> float | None:
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
        return bucket_quantile(self.counts, self.count, q, self.min, self.max)

    def snapshot(self) -> dict[str, Any]:
        n = self.count
        return {
            "count": n,
            "sum_seconds": round(self.sum, 6),
            "min_ms": to_ms(self.min) if n else None,
            "max_ms": to_ms(self.max) if n else None,
            "mean_ms": to_ms(self.sum / n) if n else None,
            **{f"p{int(q * 100)}_ms": to_ms(self.quantile(q)) for q in (0.5, 0.95, 0.99)},
        }
