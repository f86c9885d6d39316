"""Coordination of the server processes that share one bot: one interface, two homes.

Claude Code starts one stdio server per session, and all of them share one bot token and
(by default) one data dir. Telegram's limits are per bot, so the processes coordinate:

- **liveness**: every process holds an OS lock on its own session file for its lifetime;
  a peer killed with SIGKILL loses its lock at once, so its leased outbox rows are
  released by a live process within seconds, not after ``CCTG_LEASE_SECONDS``;
- **one reader**: exactly one process (the leader, holder of the reader lock) runs the
  getUpdates poller; when it exits or is killed another takes the lock within
  ``lead_retry_s``;
- **shared budgets**: the per-chat, per-group and global token buckets and the 429 pause
  live in one place for every process, taken atomically;
- **answers wake every waiter**: a cheap change signal wakes ``wait_for_response`` in
  every process when the reader stores an answer.

``Coordinator`` is the interface; ``LocalCoordinator`` (``delivery/local_coordination.py``)
implements it over the shared data dir with nothing to configure (``fcntl.flock`` locks,
SQLite buckets, ``PRAGMA data_version`` as the change signal). A Redis implementation (several machines) plugs in
behind the same interface. Losing the coordinator never loses an accepted event: every
process keeps its own durable acceptance in the outbox.

Times given to the buckets (``now``) come from the injected clock's ``monotonic()``: the
system clock's is system-wide (CLOCK_MONOTONIC on Linux, mach_absolute_time on macOS), so
processes on one machine agree on it; a stored time ahead of ``now`` (a reboot) resets
that state instead of stalling it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import anyio
from anyio.abc import TaskStatus


@dataclass(frozen=True)
class BucketSpec:
    """One token bucket a send takes from: ``need`` tokens must be there (one plus the
    pacer's jitter margin), ``cost`` are taken (one, or more to space sends that may not
    burst)."""

    key: str
    rate: float  # tokens per second
    burst: float
    need: float = 1.0
    cost: float = 1.0


@dataclass(frozen=True)
class Take:
    """The answer to ``take``: ``wait`` 0 means a token was taken from every bucket;
    otherwise nothing was taken and ``wait`` seconds must pass first. ``paused_s`` is the
    shared 429 pause still to run."""

    wait: float
    paused_s: float


@dataclass(frozen=True)
class SessionInfo:
    """One server process sharing the bot: its session id, pid, host and start time."""

    session_id: str
    pid: int
    host: str
    started_at: float  # epoch seconds


@runtime_checkable
class Coordinator(Protocol):
    """What the processes sharing one bot coordinate through (see the module docstring)."""

    #: This process's id: the owner name of its outbox leases.
    session_id: str

    async def start(self) -> None:
        """Announce this session (take its liveness lock). Call before leasing rows."""
        ...

    async def aclose(self) -> None:
        """Give up leadership and the liveness lock."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Background work until cancelled: detect dead peers, drive the change signal."""
        ...

    # ---- liveness ---------------------------------------------------------------------

    async def sessions(self) -> list[SessionInfo]:
        """The live sessions sharing this bot (this one included)."""
        ...

    async def dead_among(self, owners: Iterable[str]) -> set[str]:
        """Which of these lease owners are not alive (their rows may be taken over)."""
        ...

    def add_death_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously, in the event loop) when a peer is found dead."""
        ...

    # ---- the one getUpdates reader ----------------------------------------------------

    def is_leader(self) -> bool: ...

    async def try_lead(self) -> bool:
        """Become the one reader if no process is; True when this process is the reader."""
        ...

    async def lead(self) -> None:
        """Return once this process is the one reader (waits while another process is)."""
        ...

    async def leader(self) -> str | None:
        """The session id of the current reader, or None when there is none."""
        ...

    # ---- shared send budgets ----------------------------------------------------------

    async def take(self, buckets: Sequence[BucketSpec], now: float) -> Take:
        """Atomically take one token from every bucket (all or none), unless paused."""
        ...

    async def give_back(self, buckets: Sequence[BucketSpec], now: float) -> None:
        """Return the tokens ``take`` took for a message that never left."""
        ...

    async def pause(self, seconds: float, now: float) -> None:
        """Hold every process's sends for ``seconds`` (a 429's retry_after)."""
        ...

    async def end_pause(self, now: float) -> float:
        """End the shared 429 pause now (``trigger_recovery``); the seconds it had left."""
        ...

    async def budget(self, now: float) -> dict[str, Any]:
        """The shared budget's state, for status."""
        ...

    # ---- answers ----------------------------------------------------------------------

    def answers_changed(self) -> anyio.Event:
        """An event set when any process stored answers. Take it *before* reading."""
        ...

    async def describe(self, now: float) -> dict[str, Any]:
        """For ``get_resilience_status`` (``ops.status.CoordinationStatus``): the keys ``kind``,
        ``session_id``, ``sessions`` (dicts of ``SessionInfo``), ``reader``,
        ``this_session_reads_updates``, ``peer_deaths_seen`` and ``budget`` (a dict)."""
        ...
