"""Coordination over the shared data dir: the processes of one machine, nothing to configure.

Layout under ``<data dir>/coordination/``:

- ``sessions/<session id>.lock``: one per live process, ``flock``-ed for its lifetime and
  holding its pid, host and start time. A probe that can take the lock has found a dead
  process (SIGKILL releases every lock at once) and removes the file.
- ``reader.lock``: held by the one process that reads getUpdates (it writes its session id
  into it). Others try to take it every ``lead_retry_s``; the leader keeps it until it exits.
- ``budget.sqlite3``: the shared token buckets and the 429 pause (WAL, no fsync: the
  state is transient), each take one ``BEGIN IMMEDIATE`` transaction.

Answers: the reader commits to ``answers.sqlite3``; a process with a waiter reads that
file's ``PRAGMA data_version`` every ``change_interval_s`` (an in-memory read, only while
someone waits) and wakes its waiters when it changes.

``flock`` locks belong to an open file description, so two coordinators in one process
(tests) see each other exactly as two processes do. Locks on network file systems are not
reliable: keep the data dir on a local disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from cctg_mcp.delivery.coordination import BucketSpec, SessionInfo, Take
from cctg_mcp.delivery.sqlite_worker import ThreadedSqlite
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import ConfigurationError

log = logging.getLogger(__name__)

COORDINATION_DIR = "coordination"
SESSIONS_DIR = "sessions"
READER_LOCK = "reader.lock"
BUDGET_FILE = "budget.sqlite3"
SESSION_ID = re.compile(r"s[0-9]+-[0-9a-f]{8}")


# ---- OS locks ---------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _probe_dead(path: Path) -> bool:
    """True when nobody holds the lock on ``path`` (its process is gone) or it is missing.

    ``flock`` locks belong to an open file description, so this works between two
    coordinators of one process as between processes."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        return False
    finally:
        os.close(fd)


class _Budget(ThreadedSqlite):
    """Token buckets and the 429 pause in a small SQLite file (WAL, no fsync: transient)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, stamp REAL NOT NULL,
                                        rate REAL NOT NULL, burst REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS pause (id INTEGER PRIMARY KEY CHECK (id = 0), until REAL NOT NULL,
                                      set_at REAL NOT NULL, count INTEGER NOT NULL);
    """

    @classmethod
    def open_sync(cls, path: Path) -> _Budget:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(cls.SCHEMA)
        return cls(conn)

    # A take is a commit without an fsync: on the event loop's thread when nobody else holds
    # the lock (``_run_quick``: no thread hop per send), else in a worker thread.

    async def take(self, specs: Sequence[BucketSpec], now: float) -> Take:
        return await self._run_quick(self._take, specs, now)

    async def give_back(self, specs: Sequence[BucketSpec], now: float) -> None:
        await self._run_quick(self._give_back, specs, now)

    async def pause(self, seconds: float, now: float) -> None:
        await self._run_quick(self._pause, seconds, now)

    async def checkpoint(self) -> None:
        """Inline commits leave the WAL to grow; fold it back (in a worker thread)."""
        await self._run(self._conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")

    async def end_pause(self, now: float) -> float:
        return await self._run(self._end_pause, now)

    async def state(self, now: float) -> dict[str, Any]:
        return await self._run(self._state, now)

    async def forget_full(self, now: float) -> int:
        return await self._run(self._forget_full, now)

    def _pause_row(self, now: float) -> tuple[float, int]:
        row = self._conn.execute("SELECT until, set_at, count FROM pause WHERE id=0").fetchone()
        if row is None or row[1] > now + 1.0:  # none yet, or set before a reboot
            return 0.0, 0 if row is None else int(row[2])
        return max(0.0, float(row[0]) - now), int(row[2])

    def _level(self, spec: BucketSpec, now: float) -> float:
        row = self._conn.execute("SELECT tokens, stamp FROM buckets WHERE key=?", (spec.key,)).fetchone()
        burst = max(spec.burst, spec.need)
        if row is None or row[1] > now + 1.0:
            return burst
        return float(min(burst, row[0] + max(0.0, now - row[1]) * spec.rate))

    def _take(self, specs: Sequence[BucketSpec], now: float) -> Take:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            paused, _ = self._pause_row(now)
            levels = [self._level(s, now) for s in specs]
            wait = max(
                [paused] + [0.0 if t >= s.need else (s.need - t) / s.rate for s, t in zip(specs, levels, strict=True)]
            )
            if wait > 1e-9:
                return Take(wait, paused)
            self._conn.executemany(
                "INSERT INTO buckets (key, tokens, stamp, rate, burst) VALUES (?,?,?,?,?) ON CONFLICT (key)"
                " DO UPDATE SET tokens=excluded.tokens, stamp=excluded.stamp, rate=excluded.rate,"
                " burst=excluded.burst",
                [(s.key, t - s.cost, now, s.rate, max(s.burst, s.need)) for s, t in zip(specs, levels, strict=True)],
            )
        return Take(0.0, 0.0)

    def _give_back(self, specs: Sequence[BucketSpec], now: float) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for spec in specs:
                level = self._level(spec, now)
                self._conn.execute(
                    "UPDATE buckets SET tokens=?, stamp=? WHERE key=?",
                    (min(max(spec.burst, spec.need), level + spec.cost), now, spec.key),
                )

    def _pause(self, seconds: float, now: float) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            paused, count = self._pause_row(now)
            until = now + max(paused, seconds)
            self._conn.execute(
                "INSERT INTO pause (id, until, set_at, count) VALUES (0,?,?,?) ON CONFLICT (id) DO UPDATE"
                " SET until=excluded.until, set_at=excluded.set_at, count=excluded.count",
                (until, now, count + 1),
            )

    def _end_pause(self, now: float) -> float:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            paused, _ = self._pause_row(now)
            if paused > 0:
                self._conn.execute("UPDATE pause SET until=?, set_at=? WHERE id=0", (now, now))
            return paused

    def _state(self, now: float) -> dict[str, Any]:
        paused, count = self._pause_row(now)
        row = self._conn.execute("SELECT tokens, stamp, burst FROM buckets WHERE key='global'").fetchone()
        (chats,) = self._conn.execute("SELECT COUNT(*) FROM buckets WHERE key!='global'").fetchone()
        return {
            "paused_for_s": round(paused, 3),
            "pauses": count,
            "global_tokens_at_last_send": None if row is None else round(float(row[0]), 3),
            "chat_buckets": int(chats),
        }

    def _forget_full(self, now: float) -> int:
        """Drop buckets refilled to their burst: they carry no state worth keeping."""
        with self._conn:
            return self._conn.execute(
                "DELETE FROM buckets WHERE key!='global' AND stamp<=? AND tokens + (? - stamp) * rate >= burst",
                (now, now),
            ).rowcount


class LocalCoordinator:
    """Coordination over the shared data dir, for the processes of one machine."""

    def __init__(
        self,
        data_dir: Path,
        *,
        answers_path: Path | None = None,
        clock: Clock = SYSTEM_CLOCK,
        lead_retry_s: float = 0.5,
        liveness_interval_s: float = 1.0,
        change_interval_s: float = 0.1,
    ) -> None:
        self.dir = data_dir / COORDINATION_DIR
        self.answers_path = answers_path
        self.clock = clock
        self.lead_retry_s = lead_retry_s
        self.liveness_interval_s = liveness_interval_s
        self.change_interval_s = change_interval_s
        self.session_id = f"s{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.info = SessionInfo(self.session_id, os.getpid(), socket.gethostname(), self.clock.time())
        self._session_fd: int | None = None
        self._reader_fd: int | None = None
        self._budget: _Budget | None = None
        self._listeners: list[Callable[[], None]] = []
        self._known_dead: set[str] = set()
        self.peer_deaths = 0
        self._changed: anyio.Event | None = None
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        self._data_version: int | None = None
        self.became_leader_at: float | None = None

    def __repr__(self) -> str:
        return f"LocalCoordinator({self.session_id}, leader={self.is_leader()})"

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self._start_sync)

    def _start_sync(self) -> None:
        try:
            (self.dir / SESSIONS_DIR).mkdir(parents=True, exist_ok=True)
            # Lock first, then publish under the final name: a prober never sees an unlocked
            # file of a live session.
            tmp = self.dir / SESSIONS_DIR / f".{self.session_id}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps(asdict(self.info)).encode())
            os.replace(tmp, self._session_path(self.session_id))
            self._session_fd = fd
            self._budget = _Budget.open_sync(self.dir / BUDGET_FILE)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ConfigurationError(
                f"Cannot set up coordination in {self.dir} ({exc}). Check that the data dir "
                "(CCTG_DATA_DIR) is writable and on a local disk."
            ) from None

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close_sync)
        if self._budget is not None:
            await self._budget.close()
            self._budget = None

    def _close_sync(self) -> None:
        if self._reader_fd is not None:
            os.close(self._reader_fd)  # closing the descriptor releases the lock
            self._reader_fd = None
        if self._session_fd is not None:
            with contextlib.suppress(OSError):
                self._session_path(self.session_id).unlink()
            os.close(self._session_fd)
            self._session_fd = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_peers)
            tg.start_soon(self._watch_answers)
            task_status.started()

    # ---- liveness ---------------------------------------------------------------------

    def _session_path(self, session_id: str) -> Path:
        return self.dir / SESSIONS_DIR / f"{session_id}.lock"

    def _scan(self) -> tuple[list[SessionInfo], set[str]]:
        live: list[SessionInfo] = []
        dead: set[str] = set()
        for path in sorted((self.dir / SESSIONS_DIR).glob("*.lock")):
            sid = path.stem
            if sid != self.session_id and _probe_dead(path):
                dead.add(sid)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                raw = json.loads(path.read_text())
                live.append(SessionInfo(raw["session_id"], raw["pid"], raw["host"], raw["started_at"]))
            except (OSError, ValueError, KeyError, TypeError):
                live.append(SessionInfo(sid, 0, "?", 0.0))
        return live, dead

    async def sessions(self) -> list[SessionInfo]:
        live, dead = await anyio.to_thread.run_sync(self._scan)
        self._dead_found(dead)
        return live

    async def dead_among(self, owners: Iterable[str]) -> set[str]:
        """Only owners named like a session are judged; others (a hook's short lease, rows
        from before liveness) are left to their lease."""
        wanted = [o for o in owners if o != self.session_id and SESSION_ID.fullmatch(o)]
        if not wanted:
            return set()
        return await anyio.to_thread.run_sync(lambda: {o for o in wanted if _probe_dead(self._session_path(o))})

    def add_death_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _dead_found(self, dead: set[str]) -> None:
        new = dead - self._known_dead
        if not new:
            return
        self._known_dead |= new
        self.peer_deaths += len(new)
        log.info("coordination: session(s) %s stopped; their work moves to live sessions", ", ".join(sorted(new)))
        for listener in self._listeners:
            listener()

    async def _watch_peers(self) -> None:
        rounds = 0
        while True:
            await self.sessions()
            rounds += 1
            if rounds % 10 == 0 and self._budget is not None:
                await self._budget.checkpoint()
            if rounds % 300 == 0 and self._budget is not None:
                await self._budget.forget_full(self.clock.monotonic())
            await self.clock.sleep(self.liveness_interval_s)

    # ---- the reader -------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._reader_fd is not None

    def _try_lead_sync(self) -> bool:
        fd = os.open(self.dir / READER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, self.session_id.encode(), 0)
        self._reader_fd = fd
        return True

    async def try_lead(self) -> bool:
        if self.is_leader():
            return True
        if not await anyio.to_thread.run_sync(self._try_lead_sync):
            return False
        self.became_leader_at = self.clock.time()
        log.info("coordination: session %s now reads the bot's updates", self.session_id)
        return True

    async def lead(self) -> None:
        while not await self.try_lead():
            await self.clock.sleep(self.lead_retry_s)

    def _leader_sync(self) -> str | None:
        path = self.dir / READER_LOCK
        if self._reader_fd is not None:
            return self.session_id
        if _probe_dead(path):
            return None
        try:
            return path.read_text().strip() or None
        except OSError:
            return None

    async def leader(self) -> str | None:
        return await anyio.to_thread.run_sync(self._leader_sync)

    # ---- budgets ----------------------------------------------------------------------

    def _store(self) -> _Budget:
        if self._budget is None:
            raise RuntimeError("LocalCoordinator.start() was not awaited")
        return self._budget

    async def take(self, buckets: Sequence[BucketSpec], now: float) -> Take:
        return await self._store().take(buckets, now)

    async def give_back(self, buckets: Sequence[BucketSpec], now: float) -> None:
        await self._store().give_back(buckets, now)

    async def pause(self, seconds: float, now: float) -> None:
        await self._store().pause(seconds, now)

    async def end_pause(self, now: float) -> float:
        return await self._store().end_pause(now)

    async def budget(self, now: float) -> dict[str, Any]:
        return await self._store().state(now)

    # ---- answers ----------------------------------------------------------------------

    def answers_changed(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
            if self._data_version is None:
                # The base version is read now, before the caller reads the answers: a commit
                # after this point changes the version and wakes the caller. (An in-memory
                # pragma: no disk I/O once the file is open.)
                self._data_version = self._version_sync()
        return self._changed

    def _version_sync(self) -> int | None:
        """``PRAGMA data_version`` of the answers file: it changes when another connection
        (another process) commits, and reading it costs no disk I/O."""
        if self.answers_path is None or not self.answers_path.exists():
            return None
        with self._watch_lock:
            if self._watch is None:
                self._watch = sqlite3.connect(str(self.answers_path), check_same_thread=False)
            return int(self._watch.execute("PRAGMA data_version").fetchone()[0])

    async def _watch_answers(self) -> None:
        """Only while someone waits: read the version every ``change_interval_s``."""
        while True:
            if self._changed is not None:
                version = await anyio.to_thread.run_sync(self._version_sync)
                if version is not None and self._data_version is not None and version != self._data_version:
                    event, self._changed = self._changed, None
                    if event is not None:
                        event.set()
                self._data_version = version
            else:
                self._data_version = None  # the next waiter reads a fresh base
            await self.clock.sleep(self.change_interval_s)

    # ---- status -----------------------------------------------------------------------

    async def describe(self, now: float) -> dict[str, Any]:
        sessions = await self.sessions()
        return {
            "kind": "local",
            "session_id": self.session_id,
            "sessions": [asdict(s) for s in sessions],
            "reader": await self.leader(),
            "this_session_reads_updates": self.is_leader(),
            "peer_deaths_seen": self.peer_deaths,
            "budget": await self.budget(now),
        }
