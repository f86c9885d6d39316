"""Process figures from psutil (Linux, macOS and Windows alike), each where the platform gives it.

CPU from ``Process.cpu_times()``, memory from ``memory_info()`` and ``virtual_memory()``
(capped by a cgroup v2 limit), open files from ``num_fds()`` (handles on Windows), storage
I/O from ``io_counters()`` (not on macOS), disk space of the data dir's volume from
``disk_usage()``. A figure the platform does not offer is ``None``, never a guess. Nothing
system-wide is reported as if it were this process's (no network-namespace byte counts).

``cpu_percent`` is a share of *all* usable cores: 100 means every core the process may run
on was busy for the whole interval (so one busy thread on a 4-core box reads 25).
``max_rss_mb`` is the highest RSS this sampler has read (so never below ``rss_mb``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from .clock import SYSTEM_CLOCK, Clock

_MB = 1024.0 * 1024.0
_SELF = psutil.Process()


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """This process's CPU, memory, file and thread figures at one moment."""

    uptime_s: float
    cpu_count: int
    cpu_percent: float | None  # share of all usable cores since the last sample, 0..100
    cpu_seconds: float | None  # user + system since process start
    rss_mb: float | None
    max_rss_mb: float | None  # the highest RSS read by this sampler
    memory_total_mb: float | None  # system memory, or the cgroup limit when lower
    memory_fraction: float | None  # rss / memory_total
    open_files: int | None  # file descriptors (handles on Windows)
    threads: int | None
    read_bytes: int | None  # storage I/O of this process (io_counters; None on macOS)
    write_bytes: int | None
    io_read_bytes: int | None  # every read/write syscall, sockets and pipes included (Linux only)
    io_write_bytes: int | None
    disk_free_mb: float | None  # free space on the data dir's volume


def _safe(fn: Callable[[], int | float | None]) -> int | float | None:
    try:
        return fn()
    except (psutil.Error, OSError, AttributeError, NotImplementedError):
        return None


def read_cpu_seconds() -> float | None:
    times = _SELF.cpu_times()
    return float(times.user + times.system)


def read_rss_bytes() -> int | None:
    value = _safe(lambda: _SELF.memory_info().rss)
    return None if value is None else int(value)


def read_memory_total_bytes() -> int | None:
    total = _safe(lambda: psutil.virtual_memory().total)
    limit: int | None = None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            raw = f.read().strip()
        limit = int(raw) if raw.isdigit() else None
    except OSError:
        pass
    values = [int(v) for v in (total, limit) if v]
    return min(values) if values else None


def read_open_files() -> int | None:
    counter = getattr(_SELF, "num_fds", None) or getattr(_SELF, "num_handles", None)  # POSIX / Windows
    value = _safe(counter) if counter is not None else None
    return None if value is None else int(value)


def usable_cpu_count() -> int:
    affinity = _safe(lambda: len(_SELF.cpu_affinity() or []))  # not on macOS
    return max(1, int(affinity or psutil.cpu_count() or os.cpu_count() or 1))


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / _MB, 3)


class ProcessSampler:
    """Reads the figures; CPU % is measured between ``read(rebase=True)`` calls.

    The readers that feed alerts (CPU seconds, RSS, system memory) are injectable so tests
    control them; time comes from the injected clock.
    """

    def __init__(
        self,
        clock: Clock = SYSTEM_CLOCK,
        *,
        cpu_seconds: Callable[[], float | None] = read_cpu_seconds,
        rss_bytes: Callable[[], int | None] = read_rss_bytes,
        memory_total_bytes: Callable[[], int | None] = read_memory_total_bytes,
        cpu_count: int | None = None,
        disk_path: str | None = None,
        min_cpu_window: float = 1.0,
    ) -> None:
        self._clock = clock
        self._cpu_seconds = cpu_seconds
        self._rss_bytes = rss_bytes
        self._memory_total = memory_total_bytes
        self.cpu_count = cpu_count or usable_cpu_count()
        self.disk_path = disk_path
        self._started = clock.monotonic()
        self._base = (self._started, cpu_seconds())
        self._cpu_percent: float | None = None
        self._max_rss: int | None = None
        self.min_cpu_window = min_cpu_window

    def read(self, *, rebase: bool = False) -> ProcessStats:
        """Current figures; ``rebase`` starts a new CPU window (ignored below ``min_cpu_window``
        seconds, where the clock-tick resolution of ``os.times()`` would make the share noise)."""
        now = self._clock.monotonic()
        cpu = self._cpu_seconds()
        base_t, base_cpu = self._base
        cpu_percent = self._cpu_percent
        if cpu is not None and base_cpu is not None and now - base_t >= self.min_cpu_window:
            share = (cpu - base_cpu) / ((now - base_t) * self.cpu_count)
            cpu_percent = round(min(max(share, 0.0), 1.0) * 100.0, 2)
            if rebase:
                self._base, self._cpu_percent = (now, cpu), cpu_percent
        rss = self._rss_bytes()
        if rss is not None:
            self._max_rss = max(self._max_rss or 0, rss)
        total = self._memory_total()
        threads = _safe(_SELF.num_threads)
        io = None
        try:
            io = _SELF.io_counters() if hasattr(_SELF, "io_counters") else None
        except (psutil.Error, OSError, NotImplementedError):
            io = None
        disk_free: float | None = None
        if self.disk_path is not None:
            disk_free = _mb(_disk_free(self.disk_path))
        return ProcessStats(
            uptime_s=round(now - self._started, 3),
            cpu_count=self.cpu_count,
            cpu_percent=cpu_percent,
            cpu_seconds=cpu,
            rss_mb=_mb(rss),
            max_rss_mb=_mb(self._max_rss),
            memory_total_mb=_mb(total),
            memory_fraction=rss / total if rss is not None and total else None,
            open_files=read_open_files(),
            threads=None if threads is None else int(threads),
            read_bytes=getattr(io, "read_bytes", None),
            write_bytes=getattr(io, "write_bytes", None),
            io_read_bytes=getattr(io, "read_chars", None),
            io_write_bytes=getattr(io, "write_chars", None),
            disk_free_mb=disk_free,
        )


def _disk_free(path: str) -> int | None:
    """Free bytes on the volume holding ``path`` (its nearest existing ancestor)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    value = _safe(lambda: psutil.disk_usage(str(probe)).free)
    return None if value is None else int(value)
