"""One SQLite connection used from anyio worker threads, one call at a time.

The outbox and the answers store both keep a single connection (WAL mode) and run every
statement in a worker thread under a lock, so the event loop never blocks on disk and the
stores work under asyncio and trio alike (no aiosqlite).

A store also remembers which file it opened (device and inode): if the file is deleted or
replaced while the server runs (the data directory removed), SQLite keeps writing into the
unlinked file and everything it accepts from then on would be lost at the next start.
``store_problem()`` notices (one ``stat``) and says so in words.

SQLite's own errors leave ``_run`` as ours, in plain words naming the file: a full disk
(``DISK_FULL``), a database locked by another process (``DB_LOCKED``), a read-only file or an
I/O error, instead of an opaque ``OperationalError``.

With a metrics registry, every call is timed in two parts, as counters labelled with the
store and the operation (the name of the function run in the thread, without its leading
underscore): ``sqlite_calls``, ``sqlite_work_seconds`` (the function itself, under the lock:
SQL and any fsync) and ``sqlite_wait_seconds`` (the rest of the await: handing the call to a
worker thread, waiting for the connection lock, and waking the event loop with the result).
``scripts/bench`` reads them to attribute a send's round trip.

``_run_quick`` is for the one kind of call that cannot wait on the disk: a commit without an
fsync (``synchronous=NORMAL``) of a row this process owns. It runs on the event loop's own
thread when the connection is free, with SQLite told not to wait (``busy_timeout=0``: another
process holding the write lock sends it to a worker thread instead) and not to checkpoint the
WAL (the next commit in a worker thread does that). A hop to a worker thread and back costs
more than such a commit (see docs/performance.md); those calls are counted with the
operation label ending in ``_inline`` and no wait.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import BaseResilienceError, FilesystemError, ResourceError, Severity
from cctg_mcp.resilience.metrics import MetricsRegistry

T = TypeVar("T")
_BUSY = object()


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code): another connection holds the lock."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


#: Seconds a statement waits for another process's write lock before it fails (busy timeout).
BUSY_TIMEOUT_S = 30.0


def storage_error(exc: sqlite3.Error, path: Path | str) -> BaseResilienceError:
    """A SQLite error on ``path`` as one of ours, in words a person can act on."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc)
    if name == "SQLITE_FULL" or "disk is full" in text:
        return ResourceError(
            f"The disk holding {path} is full: nothing more can be written there. Free some space; "
            "nothing already accepted was lost.",
            code="DISK_FULL",
            severity=Severity.CRITICAL,
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return ResourceError(
            f"{path} is locked by another process (it held a write lock for more than {BUSY_TIMEOUT_S:g} s): "
            "close the other program that has it open (a sqlite3 shell, a backup tool) or wait, then try again.",
            code="DB_LOCKED",
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in text:
        return FilesystemError(
            f"{path} cannot be written (read-only file or file system): make it writable by this user.",
            code="READ_ONLY",
            retryable=False,
        )
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return FilesystemError(f"Reading or writing {path} failed (disk I/O error: {text}).", code="DISK_IO")
    return FilesystemError(f"The database {path} failed: {text}.", code="STORAGE_ERROR")


class ThreadedSqlite:
    """A SQLite connection driven from worker threads, one call at a time under a lock."""

    #: The ``store`` label of this store's timing counters.
    store = "sqlite"

    def __init__(
        self, conn: sqlite3.Connection, *, metrics: MetricsRegistry | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._conn = conn
        #: Wall time for stored timestamps comes from here (``clock.time()``), never ``time.time()``.
        self.clock = clock
        self._lock = threading.Lock()
        self._metrics = metrics
        (self._busy_timeout_ms,) = conn.execute("PRAGMA busy_timeout").fetchone()
        (self._autocheckpoint,) = conn.execute("PRAGMA wal_autocheckpoint").fetchone()
        self._file: tuple[Path, int, int] | None = None

    def watch_file(self, path: Path) -> None:
        """Remember the file this connection opened (called right after opening it)."""
        st = os.stat(path)
        self._file = (path, st.st_dev, st.st_ino)

    def store_problem(self) -> str | None:
        """Why the opened file is no longer the one at its path (deleted, replaced), or None."""
        if self._file is None:
            return None
        path, dev, ino = self._file
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{path} was deleted while the server ran (was the data directory removed?)"
        except OSError as exc:
            return f"{path} cannot be checked ({exc.strerror or exc})"
        if (st.st_dev, st.st_ino) != (dev, ino):
            return f"{path} was replaced by another file while the server ran"
        return None

    async def close(self) -> None:
        await self._run(self._conn.close)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        perf = time.perf_counter
        work = [0.0]

        def locked() -> T:
            with self._lock:
                started = perf()
                try:
                    return fn(*args)
                except sqlite3.Error as exc:
                    raise storage_error(exc, self._where()) from None
                finally:
                    work[0] = perf() - started

        metrics = self._metrics
        if metrics is None:
            return await anyio.to_thread.run_sync(locked)
        started = perf()
        try:
            return await anyio.to_thread.run_sync(locked)
        finally:
            total = perf() - started
            labels = {"store": self.store, "operation": getattr(fn, "__name__", "call").lstrip("_")}
            metrics.incr("sqlite_calls", 1, **labels)
            metrics.incr("sqlite_work_seconds", work[0], **labels)
            metrics.incr("sqlite_wait_seconds", max(0.0, total - work[0]), **labels)

    def _where(self) -> Path | str:
        return self._file[0] if self._file is not None else "the database"

    async def _run_quick(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` (a commit without an fsync) here on the event loop's thread when the
        connection is free and no other process holds SQLite's write lock; else as ``_run``."""
        if self._lock.acquire(blocking=False):
            try:
                started = time.perf_counter()
                result = self._without_waiting(fn, *args)
                work = time.perf_counter() - started
            finally:
                self._lock.release()
            if result is not _BUSY:
                if self._metrics is not None:
                    labels = {"store": self.store, "operation": getattr(fn, "__name__", "call").lstrip("_") + "_inline"}
                    self._metrics.incr("sqlite_calls", 1, **labels)
                    self._metrics.incr("sqlite_work_seconds", work, **labels)
                    self._metrics.incr("sqlite_wait_seconds", 0.0, **labels)
                return result  # type: ignore[return-value]
        return await self._run(fn, *args)

    def _without_waiting(self, fn: Callable[..., T], *args: Any) -> T | object:
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return _BUSY
            raise storage_error(exc, self._where()) from None
        finally:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(self._autocheckpoint)}")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
