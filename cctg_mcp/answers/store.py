"""The response store: answers from Telegram and the getUpdates offset, on SQLite.

Its own file (``answers.sqlite3`` in the data dir), WAL mode, one connection behind a lock,
used from anyio worker threads (as the outbox is). The outbox database is attached
read-only as ``ob`` so a button press is tied to its event inside the storing transaction:
callback data ``verb:ref:index`` names the event by ``callback_ref(event_id)``; the bridge's
legacy ``approve_<task_id>`` names it by task id; a text reply names it by the message it
replies to (the outbox records each delivery's Telegram message ids).

``store_batch`` writes a batch of updates *and* the next getUpdates offset in one
transaction. Rows are unique on (bot, update_id), so re-reading a batch after a crash
stores nothing twice. Writers wake waiters (``changed()``), so ``wait_for_response``
never polls the database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from cctg_mcp.answers.models import Action, ParsedUpdate, TelegramResponse, iso
from cctg_mcp.delivery.sqlite_worker import ThreadedSqlite
from cctg_mcp.events.rendering import callback_ref, parse_callback_data
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import ConfigurationError

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    bot_id       INTEGER NOT NULL,
    update_id    INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('callback','text')),
    action       TEXT NOT NULL,
    user_id      INTEGER NOT NULL,
    username     TEXT,
    first_name   TEXT,
    chat_id      INTEGER,
    message_id   INTEGER,
    text         TEXT,
    callback_data TEXT,
    ref          TEXT,
    event_id     TEXT,
    task_id      TEXT,
    option_index INTEGER,
    option_label TEXT,
    received_at  REAL NOT NULL,
    UNIQUE (bot_id, update_id)
);
CREATE INDEX IF NOT EXISTS responses_received ON responses (received_at);
CREATE INDEX IF NOT EXISTS responses_event ON responses (event_id);
CREATE INDEX IF NOT EXISTS responses_ref ON responses (ref);
CREATE TABLE IF NOT EXISTS poller_state (
    bot_id      INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL,
    updated_at  REAL NOT NULL
);
"""

_VERB_ACTION: dict[str, Action] = {"approve": "approve", "deny": "deny", "opt": "option", "ack": "acknowledge"}
_COLUMNS = (
    "bot_id, update_id, kind, action, user_id, username, first_name, chat_id, message_id, text,"
    " callback_data, ref, event_id, task_id, option_index, option_label, received_at"
)


class ResponseStore(ThreadedSqlite):
    """Open with ``await ResponseStore.open(path, outbox_path=..., bot_id=...)``."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, *, bot_id: int, outbox_attached: bool, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(conn, clock=clock)
        self.path = path
        self.bot_id = bot_id
        self.outbox_attached = outbox_attached
        self._changed: anyio.Event | None = None

    @classmethod
    async def open(
        cls, path: Path, *, outbox_path: Path | None = None, bot_id: int = 0, clock: Clock = SYSTEM_CLOCK
    ) -> ResponseStore:
        return await anyio.to_thread.run_sync(cls._open_sync, path, outbox_path, bot_id, clock)

    @classmethod
    def _open_sync(cls, path: Path, outbox_path: Path | None, bot_id: int, clock: Clock) -> ResponseStore:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigurationError(
                f"The answers database at {path} cannot be opened ({exc}). Move it aside or set "
                "CCTG_DATA_DIR to another directory, then start again."
            ) from None
        conn.row_factory = sqlite3.Row
        conn.create_function("callback_ref", 1, callback_ref, deterministic=True)
        attached = False
        if outbox_path is not None:
            try:  # read-only: we never write the outbox, and take none of its write locks
                conn.execute("ATTACH DATABASE ? AS ob", (outbox_path.resolve().as_uri() + "?mode=ro",))
                conn.execute("SELECT 1 FROM ob.events LIMIT 1")
                attached = True
            except sqlite3.DatabaseError as exc:
                log.warning(
                    "answers: cannot read the outbox at %s (%s); answers will not name their events", outbox_path, exc
                )
        store = cls(conn, path, bot_id=bot_id, outbox_attached=attached, clock=clock)
        store.watch_file(path)  # a deleted data dir is noticed (sqlite_worker.store_problem)
        return store

    # ---- change notification ------------------------------------------------------------

    def changed(self) -> anyio.Event:
        """An event set at the next write. Take it *before* reading, then wait on it."""
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _notify(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    # ---- writes -------------------------------------------------------------------------

    async def store_batch(
        self, updates: list[ParsedUpdate], next_offset: int | None, *, now: float | None = None
    ) -> tuple[list[TelegramResponse], int]:
        """Store ``updates`` and the next offset in one transaction.

        Returns the stored rows of this batch (new ones and ones stored before, so a re-read
        batch is acknowledged again) and how many were new."""
        at = self.clock.time() if now is None else now
        rows, new = await self._run(self._store_batch, updates, next_offset, at)
        if new:
            self._notify()
        return rows, new

    def _store_batch(
        self, updates: list[ParsedUpdate], next_offset: int | None, now: float
    ) -> tuple[list[TelegramResponse], int]:
        new = 0
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for update in updates:
                values = self._row_values(update, now)
                cur = self._conn.execute(
                    f"INSERT OR IGNORE INTO responses ({_COLUMNS}) VALUES ({','.join('?' * 17)})", values
                )
                new += cur.rowcount
            if next_offset is not None:
                self._conn.execute(
                    "INSERT INTO poller_state (bot_id, next_offset, updated_at) VALUES (?,?,?)"
                    " ON CONFLICT (bot_id) DO UPDATE SET next_offset=MAX(next_offset, excluded.next_offset),"
                    " updated_at=excluded.updated_at",
                    (self.bot_id, next_offset, now),
                )
            ids = [u.update_id for u in updates]
            if not ids:
                return [], 0
            found = self._conn.execute(
                f"SELECT * FROM responses WHERE bot_id=? AND update_id IN ({','.join('?' * len(ids))})"
                " ORDER BY update_id",
                (self.bot_id, *ids),
            ).fetchall()
        return [_response(r) for r in found], new

    def _row_values(self, u: ParsedUpdate, now: float) -> tuple[Any, ...]:
        action: Action = "text" if u.kind == "text" else "other"
        ref = task_id = label = None
        index: int | None = None
        event: dict[str, Any] | None = None
        if u.kind == "callback" and u.callback_data:
            parsed = parse_callback_data(u.callback_data)
            if parsed is not None:
                verb, ref, index = parsed
                action = _VERB_ACTION[verb]
                event = self._event_by_ref(ref, legacy=":" not in u.callback_data)
        if event is None and u.message_id is not None and u.chat_id is not None:
            event = self._event_by_message(u.chat_id, u.message_id)
        if event is not None:
            task_id = event.get("task_id")
            label = _option_label(event, action, index)
        event_id = event.get("event_id") if event is not None else None
        return (
            self.bot_id,
            u.update_id,
            u.kind,
            action,
            u.user_id,
            u.username,
            u.first_name,
            u.chat_id,
            u.message_id,
            u.text,
            u.callback_data,
            ref,
            event_id,
            task_id,
            index,
            label,
            now,
        )

    def _event_by_ref(self, ref: str, *, legacy: bool) -> dict[str, Any] | None:
        if not self.outbox_attached:
            return None
        queries = (
            ["SELECT payload FROM ob.events WHERE json_extract(payload, '$.task_id')=? ORDER BY created_at DESC"]
            if legacy
            else [
                "SELECT payload FROM ob.events WHERE event_id=?",
                "SELECT payload FROM ob.events WHERE callback_ref(event_id)=? ORDER BY created_at DESC",
            ]
        )
        for sql in queries:
            row = self._conn.execute(sql + " LIMIT 1", (ref,)).fetchone()
            if row is not None:
                return _payload(row["payload"])
        return None

    def _event_by_message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        if not self.outbox_attached:
            return None
        row = self._conn.execute(
            "SELECT e.payload FROM ob.deliveries d JOIN ob.events e USING (event_id)"
            " WHERE d.chat_id=? AND EXISTS (SELECT 1 FROM json_each(d.message_ids) WHERE value=?) LIMIT 1",
            (chat_id, message_id),
        ).fetchone()
        return _payload(row["payload"]) if row is not None else None

    async def delete_older_than(self, seconds: float, *, now: float | None = None) -> int:
        cutoff = (self.clock.time() if now is None else now) - seconds
        return await self._run(self._delete_before, cutoff)

    def _delete_before(self, cutoff: float) -> int:
        with self._conn:
            return self._conn.execute("DELETE FROM responses WHERE received_at<?", (cutoff,)).rowcount

    # ---- reads --------------------------------------------------------------------------

    async def next_offset(self) -> int | None:
        """The offset to ask getUpdates for (last stored update_id + 1), or None at first start."""
        return await self._run(self._next_offset)

    def _next_offset(self) -> int | None:
        row = self._conn.execute("SELECT next_offset FROM poller_state WHERE bot_id=?", (self.bot_id,)).fetchone()
        return int(row["next_offset"]) if row is not None else None

    async def recent(
        self, *, limit: int | None = None, since_s: float | None = None, now: float | None = None
    ) -> tuple[int, list[TelegramResponse]]:
        """``(total in window, newest first up to limit)``."""
        cutoff = (self.clock.time() if now is None else now) - since_s if since_s is not None else None
        return await self._run(self._recent, limit, cutoff)

    def _recent(self, limit: int | None, cutoff: float | None) -> tuple[int, list[TelegramResponse]]:
        where, args = ("WHERE received_at>=?", (cutoff,)) if cutoff is not None else ("", ())
        (total,) = self._conn.execute(f"SELECT COUNT(*) FROM responses {where}", args).fetchone()
        rows = self._conn.execute(
            f"SELECT * FROM responses {where} ORDER BY received_at DESC, id DESC LIMIT ?",
            (*args, -1 if limit is None else limit),
        ).fetchall()
        return int(total), [_response(r) for r in rows]

    async def first_for_event(self, event_id: str) -> TelegramResponse | None:
        """The earliest answer tied to ``event_id`` (or to its callback ref, if unresolved)."""
        return await self._run(self._first_for_event, event_id)

    def _first_for_event(self, event_id: str) -> TelegramResponse | None:
        sql = "SELECT * FROM responses WHERE event_id=? OR (event_id IS NULL AND ref=?)"
        args: tuple[Any, ...] = (event_id, callback_ref(event_id))
        if self.outbox_attached:
            # A text reply stored before its delivery recorded the message id (the person was
            # quicker than the outbox write) is tied here, by the message it replies to.
            sql += (
                " OR (event_id IS NULL AND kind='text' AND message_id IS NOT NULL AND EXISTS (SELECT 1 FROM"
                " ob.deliveries d WHERE d.event_id=? AND d.chat_id=responses.chat_id AND EXISTS"
                " (SELECT 1 FROM json_each(d.message_ids) WHERE value=responses.message_id)))"
            )
            args += (event_id,)
        row = self._conn.execute(sql + " ORDER BY id LIMIT 1", args).fetchone()
        return _response(row) if row is not None else None

    async def event_known(self, event_id: str) -> bool | None:
        """Whether the outbox holds ``event_id`` (None when the outbox is not attached)."""
        if not self.outbox_attached:
            return None
        return await self._run(self._event_known, event_id)

    def _event_known(self, event_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM ob.events WHERE event_id=?", (event_id,)).fetchone() is not None


def _payload(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _option_label(event: dict[str, Any], action: Action, index: int | None) -> str | None:
    if action == "acknowledge":
        return "Acknowledge"
    if index is None:
        return None
    data = event.get("data")
    raw = data.get("options") if isinstance(data, dict) else None
    options = [str(o) for o in raw] if isinstance(raw, list) and raw else ["Approve", "Deny"]
    return options[index] if 0 <= index < len(options) else None


def _response(row: sqlite3.Row) -> TelegramResponse:
    return TelegramResponse(
        id=row["id"],
        update_id=row["update_id"],
        kind=row["kind"],
        action=row["action"],
        event_id=row["event_id"],
        task_id=row["task_id"],
        option=row["option_label"],
        option_index=row["option_index"],
        text=row["text"],
        callback_data=row["callback_data"],
        user_id=row["user_id"],
        username=row["username"],
        first_name=row["first_name"],
        timestamp=iso(row["received_at"]),
        received_at=row["received_at"],
    )
