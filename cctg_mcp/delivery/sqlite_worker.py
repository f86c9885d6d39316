"""One SQLite connection used from anyio worker threads, one call at a time.

The outbox and the answers store both keep a single connection (WAL mode) and run every
statement in a worker thread under a lock, so the event loop never blocks on disk and the
stores work under asyncio and trio alike (no aiosqlite).

A store also remembers which file it opened (device and inode): if the file is deleted or
replaced while the server runs (the data directory removed), SQLite keeps writing into the
unlinked file and everything it accepts from then on would be lost at the next start.
``store_problem()`` notices (one ``stat``) and says so in words.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


class ThreadedSqlite:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
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
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await anyio.to_thread.run_sync(locked)
