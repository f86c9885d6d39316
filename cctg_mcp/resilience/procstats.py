"""Process figures from the standard library, each where the platform provides it.

No psutil: CPU from ``os.times()``, memory from ``/proc/self/status`` and
``resource.getrusage``, system memory from ``/proc/meminfo`` (capped by a cgroup v2 limit),
open files from ``/proc/self/fd`` (``/dev/fd`` elsewhere), I/O from ``/proc/self/io``,
network from ``/proc/self/net/dev`` and disk space from ``shutil.disk_usage``. A figure
the platform does not offer is ``None``, never a guess.

``cpu_percent`` is a share of *all* usable cores: 100 means every core the process may run
on was busy for the whole interval (so one busy thread on a 4-core box reads 25).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .clock import SYSTEM_CLOCK, Clock

_MB = 1024.0 * 1024.0


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """This process's CPU, memory, file and thread figures at one moment."""

    uptime_s: float
    cpu_count: int
    cpu_percent: float | None  # share of all usable cores since the last sample, 0..100
    cpu_seconds: float | None  # user + system since process start
    rss_mb: float | None
    max_rss_mb: float | None
    memory_total_mb: float | None  # system memory, or the cgroup limit when lower
    memory_fraction: float | None  # rss / memory_total
    open_files: int | None
    threads: int | None
    read_bytes: int | None  # storage I/O (/proc/self/io read_bytes / write_bytes)
    write_bytes: int | None
    io_read_bytes: int | None  # every read/write syscall, sockets and pipes included (rchar/wchar)
    io_write_bytes: int | None
    net_rx_bytes: int | None  # network namespace totals, loopback excluded (not per process)
    net_tx_bytes: int | None
    disk_free_mb: float | None


def _read_keyed(path: str) -> dict[str, int]:
    """``key: value [unit]`` files such as /proc/self/status, /proc/self/io, /proc/meminfo."""
    out: dict[str, int] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key.strip()] = int(parts[0])
    except OSError:
        pass
    return out


def read_cpu_seconds() -> float | None:
    t = os.times()
    return t.user + t.system


def read_rss_bytes() -> int | None:
    kb = _read_keyed("/proc/self/status").get("VmRSS")
    return None if kb is None else kb * 1024


def read_max_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def read_memory_total_bytes() -> int | None:
    kb = _read_keyed("/proc/meminfo").get("MemTotal")
    total: int | None = kb * 1024 if kb is not None else None
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            total = None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit)) if total else int(limit)
    except OSError:
        pass
    return total or None


def read_open_files() -> int | None:
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(path)) - 1)  # minus the descriptor listdir itself holds
        except OSError:
            continue
    return None


def read_net_bytes() -> tuple[int | None, int | None]:
    rx = tx = 0
    try:
        with open("/proc/self/net/dev", encoding="ascii") as f:
            for line in f.readlines()[2:]:
                name, _, rest = line.partition(":")
                fields = rest.split()
                if name.strip() != "lo" and len(fields) >= 9:
                    rx += int(fields[0])
                    tx += int(fields[8])
    except (OSError, ValueError):
        return None, None
    return rx, tx


def usable_cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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
        total = self._memory_total()
        status = _read_keyed("/proc/self/status")
        io = _read_keyed("/proc/self/io")
        rx, tx = read_net_bytes()
        disk_free: float | None = None
        if self.disk_path is not None:
            try:
                disk_free = _mb(shutil.disk_usage(self.disk_path).free)
            except OSError:
                disk_free = None
        return ProcessStats(
            uptime_s=round(now - self._started, 3),
            cpu_count=self.cpu_count,
            cpu_percent=cpu_percent,
            cpu_seconds=cpu,
            rss_mb=_mb(rss),
            max_rss_mb=_mb(read_max_rss_bytes()),
            memory_total_mb=_mb(total),
            memory_fraction=rss / total if rss is not None and total else None,
            open_files=read_open_files(),
            threads=status.get("Threads"),
            read_bytes=io.get("read_bytes"),
            write_bytes=io.get("write_bytes"),
            io_read_bytes=io.get("rchar"),
            io_write_bytes=io.get("wchar"),
            net_rx_bytes=rx,
            net_tx_bytes=tx,
            disk_free_mb=disk_free,
        )
