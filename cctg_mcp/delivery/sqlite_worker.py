"""One SQLite connection used from anyio worker threads, one call at a time.

The outbox and the answers store both keep a single connection (WAL mode) and run every
statement in a worker thread under a lock, so the event loop never blocks on disk and the
stores work under asyncio and trio alike (no aiosqlite).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


class ThreadedSqlite:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    async def close(self) -> None:
        await self._run(self._conn.close)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await anyio.to_thread.run_sync(locked)
