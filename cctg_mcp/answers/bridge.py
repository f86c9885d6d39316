"""Answers in bridge mode (``CCTG_DELIVERY=bridge``): the CCTelegram bridge's response files.

The bridge, not this server, reads Telegram; it writes each answer as a file into
``CC_TELEGRAM_RESPONSES_DIR`` (``telegram_callback_<user>_<YYYYmmdd_HHMMSS>.json`` for a
button press, ``telegram_response_...`` for a text message; ``transports.bridge.files``
parses them). ``BridgeAnswers`` gives the response tools the same interface as ``Answers``:

- ``responses`` / ``pending`` read the directory (malformed files and ``bridge_mode.json``
  skipped) and tie ``approve_<task_id>`` presses to our events through the outbox: in bridge
  mode the event file's ``task_id`` is the one we stored (``EventIndex``, a read-only view
  of the outbox's ``events`` table). A task id shared by several events resolves to its
  newest approval request first (only approvals carry approve/deny buttons), else its newest
  event.
- Only answers from ``TELEGRAM_ALLOWED_USERS`` count, exactly as for getUpdates answers: a
  response file from anyone else (anyone who can write the directory can forge one) is
  ignored, counted once per file (``unauthorized_ignored``, ``unauthorized_updates_total``)
  and logged at most once a minute. With the allow-list empty no answer is accepted (fail
  closed; the status says why).
- ``clear`` deletes response files whose **mtime** is older than N hours (the bridge's own
  rule), and nothing else: never ``bridge_mode.json``, other files, directories or symlinks.
- ``wait``: the standard library has no portable directory watch, so a waiter re-scans the
  directory every ``rescan_interval`` seconds (1 s by default), sleeping on the injected
  clock between scans (virtual time in tests). A scan is one ``scandir`` + ``stat`` of the
  response files; their contents are re-read only when the listing (names, sizes, mtimes)
  changed. Each waiter scans on its own; nothing runs when nobody waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from cctg_mcp.answers.common import ProgressFn, summarise_pending, unknown_event, wait_for_answer
from cctg_mcp.answers.models import ClearResult, PendingResponses, ResponseList, TelegramResponse, WaitResult
from cctg_mcp.config import Settings
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.logthrottle import ThrottledLog
from cctg_mcp.resilience.metrics import MetricsRegistry

# A module import, used only inside functions: bridge.files imports answers.models, so when
# it is imported first this module runs while bridge.files is still half-initialised.
from cctg_mcp.transports.bridge import files as bridge_files

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between re-scans of the responses directory while ``wait_for_response`` waits.
DEFAULT_RESCAN_INTERVAL = 1.0

Signature = frozenset[tuple[str, int, int]]
#: Stranger files remembered (so each is counted once); past it the set starts over.
MAX_STRANGER_FILES = 10_000


class EventIndex:
    """A read-only view of the outbox's events: which event a bridge task id names.

    One SQLite connection opened ``mode=ro`` (we never write the outbox nor take its write
    lock), used from worker threads behind a lock."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open_sync(cls, outbox_path: Path) -> EventIndex | None:
        """The index, or None (logged) when the outbox cannot be read."""
        try:
            conn = sqlite3.connect(outbox_path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
            conn.execute("SELECT 1 FROM events LIMIT 1")
        except sqlite3.DatabaseError as exc:
            log.warning(
                "answers: cannot read the outbox at %s (%s); bridge answers will not name their events",
                outbox_path,
                exc,
            )
            return None
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _one(self, sql: str, arg: str) -> str | None:
        with self._lock:
            row = self._conn.execute(sql, (arg,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def event_for_task(self, task_id: str) -> str | None:
        return self._one(
            "SELECT event_id FROM events WHERE json_extract(payload, '$.task_id')=?"
            " ORDER BY json_extract(payload, '$.type')='approval_request' DESC, created_at DESC LIMIT 1",
            task_id,
        )

    def task_of(self, event_id: str) -> str | None:
        return self._one("SELECT json_extract(payload, '$.task_id') FROM events WHERE event_id=?", event_id)

    def event_known(self, event_id: str) -> bool:
        return self._one("SELECT event_id FROM events WHERE event_id=?", event_id) is not None


def _response_entries(responses_dir: Path) -> list[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(responses_dir))
    except OSError:
        return []
    return [e for e in entries if bridge_files.RESPONSE_FILE.fullmatch(e.name)]


def response_files_signature(responses_dir: Path) -> Signature:
    """Names, sizes and mtimes of the response files: changes when one is added, rewritten or removed."""
    out: set[tuple[str, int, int]] = set()
    for entry in _response_entries(responses_dir):
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            out.add((entry.name, st.st_size, st.st_mtime_ns))
    return frozenset(out)


def delete_old_response_files(responses_dir: Path, cutoff: float) -> int:
    """Delete response files (regular files only) whose mtime is before ``cutoff``; how many."""
    deleted = 0
    for entry in _response_entries(responses_dir):
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                deleted += 1
        except OSError as exc:  # vanished or not ours to delete: skip it, keep going
            log.info("answers: could not delete %s (%s)", entry.path, exc)
    return deleted


class BridgeAnswers:
    """The response use cases over the bridge's responses directory (same interface as ``Answers``)."""

    #: No getUpdates poller in bridge mode: the bridge reads Telegram.
    poller: None = None

    def __init__(
        self,
        responses_dir: Path,
        index: EventIndex | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        progress_interval: float = 5.0,
        rescan_interval: float = DEFAULT_RESCAN_INTERVAL,
        allowed_users: tuple[int, ...] | frozenset[int] = (),
        metrics: MetricsRegistry | None = None,
    ) -> None:
        self.responses_dir = Path(responses_dir)
        self.index = index
        self.clock = clock
        #: Whose answers count (TELEGRAM_ALLOWED_USERS); empty: nobody's.
        self.allowed_users = frozenset(allowed_users)
        self.metrics = metrics
        #: Response files from users not in the allow-list, each counted once.
        self.unauthorized = 0
        self._strangers: set[str] = set()
        self._strangers_lock = threading.Lock()
        self._stranger_log = ThrottledLog(log, clock=clock)
        #: Seconds between progress notifications of ``wait``.
        self.progress_interval = progress_interval
        #: Seconds between directory scans of ``wait`` (see the module docstring).
        self.rescan_interval = rescan_interval
        self.scans = 0

    @classmethod
    async def open(
        cls, settings: Settings, *, clock: Clock = SYSTEM_CLOCK, metrics: MetricsRegistry | None = None
    ) -> BridgeAnswers:
        index = await anyio.to_thread.run_sync(EventIndex.open_sync, settings.outbox_path)
        if not settings.allowed_users:
            log.warning(
                "answers: TELEGRAM_ALLOWED_USERS is empty, so no answer from the bridge's response files "
                "is accepted; set it to the same user ids as the bridge's"
            )
        return cls(settings.responses_dir, index, clock=clock, allowed_users=settings.allowed_users, metrics=metrics)

    async def aclose(self) -> None:
        if self.index is not None:
            await anyio.to_thread.run_sync(self.index.close)

    def status(self) -> dict[str, Any]:
        return {
            "mode": "bridge",
            "responses_dir": str(self.responses_dir),
            "poller": None,
            "events_resolvable": self.index is not None,
            "allowed_users": len(self.allowed_users),
            "unauthorized_ignored": self.unauthorized,
            **(
                {}
                if self.allowed_users
                else {"answers_refused": "TELEGRAM_ALLOWED_USERS is empty: no bridge answer is accepted"}
            ),
        }

    # ---- reading ------------------------------------------------------------------------

    def _read_sync(self, since: float | None) -> list[TelegramResponse]:
        index = self.index
        if index is None:
            rows = bridge_files.read_bridge_responses(self.responses_dir, since)
        else:
            cache: dict[str, str | None] = {}  # one lookup per task id per read

            def resolve(task_id: str) -> str | None:
                if task_id not in cache:
                    cache[task_id] = index.event_for_task(task_id)
                return cache[task_id]

            rows = bridge_files.read_bridge_responses(self.responses_dir, since, resolve=resolve)
        return [r for r in rows if self._allowed(r)]

    def _allowed(self, response: TelegramResponse) -> bool:
        """True for an answer from the allow-list; a stranger's is counted (once per file) and logged."""
        if response.user_id in self.allowed_users:
            return True
        key = f"{response.user_id}/{response.timestamp}/{response.id}"
        with self._strangers_lock:
            if key in self._strangers:
                return False
            if len(self._strangers) >= MAX_STRANGER_FILES:
                self._strangers.clear()
            self._strangers.add(key)
            self.unauthorized += 1
            self._stranger_log.note(
                "stranger",
                logging.WARNING,
                "answers: ignored a bridge response file from user %s, who is not in TELEGRAM_ALLOWED_USERS",
                response.user_id,
            )
        if self.metrics is not None:
            self.metrics.incr("unauthorized_updates_total")
        return False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args)

    async def _window(self, since_minutes: int | None, now: float | None) -> list[TelegramResponse]:
        since = None if since_minutes is None else (self.clock.time() if now is None else now) - since_minutes * 60.0
        return await self._run(self._read_sync, since)

    # ---- use cases ----------------------------------------------------------------------

    async def responses(
        self, limit: int = 10, since_minutes: int | None = None, *, now: float | None = None
    ) -> ResponseList:
        rows = await self._window(since_minutes, now)
        return ResponseList(count=min(limit, len(rows)), total=len(rows), responses=rows[:limit])

    async def clear(self, older_than_hours: int = 24, *, now: float | None = None) -> ClearResult:
        cutoff = (self.clock.time() if now is None else now) - older_than_hours * 3600.0
        n = await self._run(delete_old_response_files, self.responses_dir, cutoff)
        return ClearResult(
            deleted_count=n,
            message=f"Cleared {n} old response files (older than {older_than_hours} h) from {self.responses_dir}",
        )

    async def pending(self, since_minutes: int = 10, *, now: float | None = None) -> PendingResponses:
        rows = await self._window(since_minutes, now)
        return summarise_pending(len(rows), rows, since_minutes)

    async def wait(self, event_id: str, timeout_s: float, *, on_progress: ProgressFn | None = None) -> WaitResult:
        """The first answer tied to ``event_id`` (earliest by its timestamp), re-scanning the
        directory every ``rescan_interval`` seconds, or a timeout result."""
        task_id: str | None = None
        if self.index is not None:
            if not await self._run(self.index.event_known, event_id):
                raise unknown_event(event_id)
            task_id = await self._run(self.index.task_of, event_id)
        seen: Signature | None = None

        def tied(r: TelegramResponse) -> bool:
            return r.event_id == event_id or (r.event_id is None and task_id is not None and r.task_id == task_id)

        async def check() -> TelegramResponse | None:
            nonlocal seen
            self.scans += 1
            signature = await self._run(response_files_signature, self.responses_dir)
            if signature == seen:
                return None
            seen = signature
            found = [r for r in await self._run(self._read_sync, None) if tied(r)]
            return min(found, key=lambda r: (r.received_at, r.id)) if found else None

        async def pause(seconds: float) -> None:
            await self.clock.sleep(min(seconds, self.rescan_interval))

        return await wait_for_answer(
            event_id,
            timeout_s,
            clock=self.clock,
            check=check,
            pause=pause,
            progress_interval=self.progress_interval,
            on_progress=on_progress,
        )
