"""The durable outbox: every accepted event is committed to SQLite before a tool answers.

One row per event (``events``) and one per recipient (``deliveries``):

    pending ──claim──▶ in_flight (lease until T) ──▶ delivered
       ▲                    │  └──────────────────▶ dead (permanent failure, reason redacted)
       └──release / lease expired (crash)──┘

Progress is kept per delivery and per message part, so a retry never re-sends a part
Telegram already accepted. Times stored here are wall-clock epoch seconds (they must
survive a restart); waiting is the dispatcher's business, on the injected clock.

A row that cannot be read back (its stored payload no longer parses, or bytes on disk were
damaged so its text is not UTF-8) is quarantined when it is claimed: marked dead in the same
transaction with the reason, logged, and counted (``quarantined``); every other row flows.
Reads that list rows skip such a row instead of failing. ``text_factory`` keeps undecodable
text as ``UnreadableText`` (bytes) so one damaged row cannot fail a whole query.

SQLite runs in WAL mode with ``synchronous=FULL`` (an acknowledged send survives power
loss). All calls go through one connection guarded by a lock, in anyio worker threads, so
the event loop never blocks on disk and the store works under asyncio and trio alike.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from cctg_mcp.delivery.sqlite_worker import BUSY_TIMEOUT_S, ThreadedSqlite
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import ConfigurationError, FilesystemError, ResourceError, redact
from cctg_mcp.resilience.metrics import MetricsRegistry

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   TEXT PRIMARY KEY,
    payload    TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL REFERENCES events(event_id),
    chat_id         INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending','in_flight','delivered','dead')),
    priority        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    lease_owner     TEXT,
    parts_sent      INTEGER NOT NULL DEFAULT 0,
    message_ids     TEXT NOT NULL DEFAULT '[]',
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    UNIQUE (event_id, chat_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "critical": 3}
#: Seconds start-up waits for another process's write lock before it says so (not 30).
START_BUSY_TIMEOUT_S = 5.0
#: Rows local mode holds back (delivery/mode.py ``asks_for_answer``, in SQL): an approval
#: request, or ``data.requires_response`` the JSON ``true`` (not the number 1, as in Python;
#: ``IS``, not ``=``: an absent flag is NULL, which must not make the whole test NULL).
#: (``json_valid`` first: a damaged payload must not fail the whole claim; it is quarantined.)
ASKS_FOR_ANSWER_SQL = (
    "(CASE WHEN json_valid(e.payload) THEN json_extract(e.payload,'$.type')='approval_request'"
    " OR json_type(e.payload,'$.data.requires_response') IS 'true' ELSE 0 END)"
)
log = logging.getLogger(__name__)


class UnreadableText(bytes):
    """A TEXT value whose bytes are not UTF-8 (damaged on disk): kept as bytes, never decoded."""


def _decode_text(raw: bytes) -> str | UnreadableText:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return UnreadableText(raw)


class OutboxGoneError(FilesystemError):
    """The outbox file was deleted or replaced under the running server: sends are refused."""

    code = "OUTBOX_GONE"
    retryable = False


class UnreadableRow(ValueError):
    """A stored delivery that cannot be turned back into an event (the reason says why)."""


@dataclass(frozen=True)
class Delivery:
    """One event to one recipient, as stored in the outbox."""

    id: int
    event: Event
    chat_id: int
    status: str
    attempts: int
    next_attempt_at: float
    parts_sent: int
    message_ids: list[int]
    last_error: str | None


@dataclass(frozen=True)
class OutboxCounts:
    """Outbox rows by status, and the age of the oldest waiting one."""

    pending: int
    in_flight: int
    delivered: int
    dead: int
    oldest_pending_age_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "in_flight": self.in_flight,
            "delivered": self.delivered,
            "dead": self.dead,
            "oldest_pending_age_s": self.oldest_pending_age_s,
        }


class Outbox(ThreadedSqlite):
    """Durable queue of deliveries. Open with ``await Outbox.open(path)``."""

    store = "outbox"

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        max_pending: int,
        max_bytes: int,
        max_due_s: float = 3600.0,
        metrics: MetricsRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(conn, metrics=metrics, clock=clock)
        self.path = path
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        #: No due time is stored further ahead than this (CCTG_MAX_SERVER_WAIT).
        self.max_due_s = max_due_s
        #: Rows found unreadable and marked dead by this process.
        self.quarantined = 0

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_pending: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        max_due_s: float = 3600.0,
        metrics: MetricsRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Outbox:
        """Open (or create) the outbox; due times further ahead than ``max_due_s`` (left by an
        older version, or a server's huge wait) are brought back to ``max_due_s`` from now.
        With ``metrics``, every call's SQL and thread wait are counted."""
        return await anyio.to_thread.run_sync(cls._open_sync, path, max_pending, max_bytes, max_due_s, metrics, clock)

    @classmethod
    def _open_sync(
        cls,
        path: Path,
        max_pending: int,
        max_bytes: int,
        max_due_s: float = 3600.0,
        metrics: MetricsRegistry | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Outbox:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() and path.stat().st_size == 0:
                # SQLite would silently treat it as a new database: whatever it held is unknown.
                raise sqlite3.DatabaseError("the file is empty (0 bytes), not an outbox")
            conn = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=START_BUSY_TIMEOUT_S
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            horizon = clock.time() + max_due_s
            with conn:
                capped = conn.execute(
                    "UPDATE deliveries SET next_attempt_at=? WHERE status='pending' AND next_attempt_at>?",
                    (horizon, horizon),
                ).rowcount
            if capped:
                log.warning("outbox: %d delivery(ies) were due more than %g s ahead; now due then", capped, max_due_s)
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise ConfigurationError(
                    f"The outbox database at {path} is locked by another process (a write lock held for more "
                    f"than {START_BUSY_TIMEOUT_S:g} s; a sqlite3 shell or backup tool?). Nothing was changed. "
                    "Close that program, then start again."
                ) from None
            raise ConfigurationError(
                f"The outbox database at {path} cannot be opened ({exc}). Nothing was deleted. "
                "Move the file aside (it may still hold undelivered events) or set CCTG_DATA_DIR "
                "to another directory, then start again."
            ) from None
        except (sqlite3.DatabaseError, OSError) as exc:
            raise ConfigurationError(
                f"The outbox database at {path} cannot be opened ({exc}). Nothing was deleted. "
                "Move the file aside (it may still hold undelivered events) or set CCTG_DATA_DIR "
                "to another directory, then start again."
            ) from None
        conn.row_factory = sqlite3.Row
        conn.text_factory = _decode_text
        box = cls(
            conn, path, max_pending=max_pending, max_bytes=max_bytes, max_due_s=max_due_s, metrics=metrics, clock=clock
        )
        box.watch_file(path)
        return box

    # ---- writes -------------------------------------------------------------------------

    async def enqueue(
        self,
        event: Event,
        chat_ids: list[int],
        *,
        lease: tuple[str, float] | None = None,
        now: float | None = None,
    ) -> list[Delivery] | None:
        """Commit the event and one delivery per chat; ``None`` if the event id is known.

        With ``lease=(owner, seconds)`` the new deliveries start leased to ``owner`` in the
        same transaction, so the caller can send them at once and no other worker (the
        background dispatcher) can claim them in between."""
        return await self._run(self._enqueue, event, chat_ids, lease, self.clock.time() if now is None else now)

    def _enqueue(
        self, event: Event, chat_ids: list[int], lease: tuple[str, float] | None, now: float
    ) -> list[Delivery] | None:
        gone = self.store_problem()
        if gone is not None:
            raise OutboxGoneError(
                f"The outbox is gone: {gone}. Nothing was accepted: an event stored now would be lost at "
                "the next start. Restart the server (it creates a new outbox in CCTG_DATA_DIR); events "
                "accepted before this are in the old file only if it still exists somewhere."
            )
        rank = PRIORITY_RANK[event.priority]
        status, lease_until, owner = ("in_flight", now + lease[1], lease[0]) if lease else ("pending", None, None)
        with self._conn:  # one transaction
            self._conn.execute("BEGIN IMMEDIATE")
            known = self._conn.execute("SELECT 1 FROM events WHERE event_id=?", (event.event_id,)).fetchone()
            if known:
                return None
            (pending,) = self._conn.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending','in_flight')"
            ).fetchone()
            if pending + len(chat_ids) > self.max_pending:
                raise ResourceError(
                    f"The outbox is full ({pending} deliveries waiting, limit {self.max_pending}). "
                    "Nothing queued was dropped; try again once the backlog drains.",
                    code="QUEUE_FULL",
                )
            payload = event.model_dump_json()
            size = len(payload.encode("utf-8"))  # bytes, as stored: the cap is in bytes, not characters
            waiting = 0
            if pending:  # only a backlog costs the scan; an empty queue holds no bytes
                (waiting,) = self._conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(CAST(payload AS BLOB))), 0) FROM events WHERE event_id IN"
                    " (SELECT event_id FROM deliveries WHERE status IN ('pending','in_flight'))"
                ).fetchone()
            if waiting + size > self.max_bytes:
                raise ResourceError(
                    f"The outbox is full ({waiting} bytes of events waiting, limit {self.max_bytes}). "
                    "Nothing queued was dropped; try again once the backlog drains.",
                    code="QUEUE_FULL",
                )
            self._conn.execute(
                "INSERT INTO events (event_id, payload, priority, created_at) VALUES (?,?,?,?)",
                (event.event_id, payload, rank, now),
            )
            self._conn.executemany(
                "INSERT INTO deliveries (event_id, chat_id, status, priority, next_attempt_at, lease_until,"
                " lease_owner, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                [(event.event_id, chat, status, rank, now, lease_until, owner, now, now) for chat in chat_ids],
            )
            ids = self._conn.execute(
                "SELECT id, chat_id FROM deliveries WHERE event_id=? ORDER BY id", (event.event_id,)
            ).fetchall()
        return [Delivery(row["id"], event, row["chat_id"], status, 0, now, 0, [], None) for row in ids]

    async def claim_due(
        self,
        owner: str,
        lease_s: float,
        *,
        limit: int = 50,
        min_priority: str = "low",
        per_chat: int | None = None,
        skip_answer_requests: bool = False,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of at least ``min_priority``, most urgent first.
        ``skip_answer_requests`` (local mode) leaves events that ask for an answer pending.

        ``per_chat`` caps the rows taken per chat (the most urgent, then the oldest of each), so
        a batch spreads over every chat with a backlog instead of queueing behind one chat's
        rate limit."""
        now = self.clock.time()
        return await self._run(
            self._claim, now, owner, lease_s, limit, PRIORITY_RANK[min_priority], per_chat, skip_answer_requests
        )

    def _claim(
        self,
        now: float,
        owner: str,
        lease_s: float,
        limit: int,
        min_rank: int,
        per_chat: int | None = None,
        skip_answer_requests: bool = False,
    ) -> list[Delivery]:
        due = (
            " FROM deliveries d JOIN events e USING (event_id)"
            " WHERE d.status='pending' AND d.next_attempt_at<=? AND d.priority>=?"
        )
        if skip_answer_requests:
            due += f" AND NOT {ASKS_FOR_ANSWER_SQL}"
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            if per_chat is None:
                rows = self._conn.execute(
                    f"SELECT d.*, e.payload{due} ORDER BY d.priority DESC, d.next_attempt_at, d.id LIMIT ?",
                    (now, min_rank, limit),
                ).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM (SELECT d.*, e.payload, ROW_NUMBER() OVER (PARTITION BY d.chat_id"
                    f" ORDER BY d.priority DESC, d.id) AS rank_in_chat{due})"
                    " WHERE rank_in_chat<=? ORDER BY priority DESC, next_attempt_at, id LIMIT ?",
                    (now, min_rank, per_chat, limit),
                ).fetchall()
            claimed: list[Delivery] = []
            poisoned: list[tuple[int, str]] = []
            for row in rows:
                try:
                    claimed.append(self._delivery(row, status="in_flight"))
                except UnreadableRow as exc:
                    poisoned.append((row["id"], str(exc)))
            self._conn.executemany(
                "UPDATE deliveries SET status='in_flight', lease_until=?, lease_owner=?, updated_at=?"
                " WHERE id=? AND status='pending'",
                [(now + lease_s, owner, now, d.id) for d in claimed],
            )
            self._conn.executemany(
                "UPDATE deliveries SET status='dead', lease_until=NULL, lease_owner=NULL, last_error=?,"
                " updated_at=? WHERE id=? AND status='pending'",
                [(reason[:500], now, row_id) for row_id, reason in poisoned],
            )
        for row_id, reason in poisoned:
            self.quarantined += 1
            log.error("outbox: delivery %s quarantined as dead: %s", row_id, reason)
        return claimed

    @staticmethod
    def _delivery(row: sqlite3.Row, *, status: str | None = None) -> Delivery:
        """The delivery of a row; ``UnreadableRow`` (with the reason) when it cannot be read back."""
        payload, message_ids = row["payload"], row["message_ids"]
        try:
            if not isinstance(payload, str) or not isinstance(message_ids, str):
                raise ValueError("its stored text is not valid UTF-8 (damaged on disk)")
            event = Event.model_validate_json(payload)
            ids = json.loads(message_ids)
            if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
                raise ValueError("its stored message ids are not a list of integers")
        except ValueError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UnreadableRow(f"the stored event cannot be read back ({redact(first)[:200]}); quarantined") from None
        return Delivery(
            id=row["id"],
            event=event,
            chat_id=row["chat_id"],
            status=status or row["status"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            parts_sent=row["parts_sent"],
            message_ids=ids,
            last_error=row["last_error"] if isinstance(row["last_error"], str) else None,
        )

    @classmethod
    def _readable(cls, rows: list[sqlite3.Row]) -> list[Delivery]:
        """The rows that can be read back; the others are skipped (claiming quarantines them)."""
        out: list[Delivery] = []
        for row in rows:
            try:
                out.append(cls._delivery(row))
            except UnreadableRow as exc:
                log.warning("outbox: skipped delivery %s: %s", row["id"], exc)
        return out

    async def record_part(self, delivery_id: int, parts_sent: int, message_ids: list[int]) -> None:
        await self._run_quick(
            self._exec_relaxed,
            "UPDATE deliveries SET parts_sent=?, message_ids=?, updated_at=? WHERE id=?",
            (parts_sent, json.dumps(message_ids), self.clock.time(), delivery_id),
        )

    async def mark_delivered(self, delivery_id: int, message_ids: list[int]) -> None:
        await self._run_quick(
            self._exec_relaxed,
            "UPDATE deliveries SET status='delivered', message_ids=?, lease_until=NULL, lease_owner=NULL,"
            " attempts=attempts+1, last_error=NULL, updated_at=? WHERE id=?",
            (json.dumps(message_ids), self.clock.time(), delivery_id),
        )

    async def release(self, delivery_id: int, error: str, next_attempt_at: float) -> None:
        """Back to pending after a transient failure; due again at ``next_attempt_at`` (at most
        ``max_due_s`` from now)."""
        now = self.clock.time()
        await self._run(
            self._exec,
            "UPDATE deliveries SET status='pending', lease_until=NULL, lease_owner=NULL, attempts=attempts+1,"
            " last_error=?, next_attempt_at=?, updated_at=? WHERE id=? AND status='in_flight'",
            (redact(error)[:500], min(next_attempt_at, now + self.max_due_s), now, delivery_id),
        )

    async def mark_dead(self, delivery_id: int, error: str) -> None:
        await self._run(
            self._exec,
            "UPDATE deliveries SET status='dead', lease_until=NULL, lease_owner=NULL, attempts=attempts+1,"
            " last_error=?, updated_at=? WHERE id=?",
            (redact(error)[:500], self.clock.time(), delivery_id),
        )

    async def withdraw(self, event_id: str) -> int:
        """Delete the event's deliveries still waiting (``pending``), and the event if none is
        left: for a question whose answer is no longer wanted (a permission request already
        denied). Delivered and in-flight rows are kept. Returns how many were withdrawn."""
        return await self._run(self._withdraw, event_id)

    def _withdraw(self, event_id: str) -> int:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            n = self._conn.execute("DELETE FROM deliveries WHERE event_id=? AND status='pending'", (event_id,)).rowcount
            self._conn.execute(
                "DELETE FROM events WHERE event_id=? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id=?)",
                (event_id, event_id),
            )
        return int(n)

    async def recover_expired_leases(self, *, now: float | None = None) -> int:
        """In-flight rows whose lease ran out (their process died) go back to pending."""
        at = self.clock.time() if now is None else now
        return await self._run(
            self._exec,
            "UPDATE deliveries SET status='pending', lease_until=NULL, lease_owner=NULL, updated_at=?"
            " WHERE status='in_flight' AND lease_until<?",
            (at, at),
        )

    async def _release_where(self, condition: str, params: tuple[Any, ...]) -> int:
        """In-flight rows matching ``condition`` go back to pending now, their lease cleared."""
        return await self._run(
            self._exec,
            "UPDATE deliveries SET status='pending', lease_until=NULL, lease_owner=NULL, updated_at=?"
            f" WHERE status='in_flight' AND {condition}",
            (self.clock.time(), *params),
        )

    async def release_owner(self, owner: str) -> int:
        """On clean shutdown: this process's in-flight rows go back to pending now."""
        return await self._release_where("lease_owner=?", (owner,))

    async def release_leases(self, owner: str, delivery_ids: set[int]) -> int:
        """These rows, still leased by ``owner``, go back to pending now (a stopping background
        loop's claims; rows another path of the same owner is delivering are not among them)."""
        if not delivery_ids:
            return 0
        marks = ",".join("?" * len(delivery_ids))
        return await self._release_where(f"lease_owner=? AND id IN ({marks})", (owner, *sorted(delivery_ids)))

    async def lease_owners(self) -> set[str]:
        """The owners of in-flight rows (for the liveness check of ``release_owners``)."""
        rows = await self._run(self._rows, "SELECT DISTINCT lease_owner FROM deliveries WHERE status='in_flight'")
        return {r[0] for r in rows if r[0] is not None}

    def _rows(self, sql: str) -> list[sqlite3.Row]:
        return self._conn.execute(sql).fetchall()

    async def release_owners(self, owners: set[str]) -> int:
        """Rows leased by processes found dead (liveness) go back to pending now."""
        if not owners:
            return 0
        marks = ",".join("?" * len(owners))
        return await self._release_where(f"lease_owner IN ({marks})", tuple(sorted(owners)))

    async def renew(self, delivery_id: int, owner: str, lease_s: float) -> bool:
        """Extend a lease its live owner still works on; False when the row is no longer its."""
        n = await self._run(
            self._exec_relaxed,
            "UPDATE deliveries SET lease_until=? WHERE id=? AND status='in_flight' AND lease_owner=?",
            (self.clock.time() + lease_s, delivery_id, owner),
        )
        return n > 0

    async def requeue_dead(self, event_id: str | None = None) -> int:
        """Give dead deliveries another chance (after the cause was fixed)."""
        where, args = ("AND event_id=?", (event_id,)) if event_id else ("", ())
        now = self.clock.time()
        return await self._run(
            self._exec,
            f"UPDATE deliveries SET status='pending', next_attempt_at=?, updated_at=? WHERE status='dead' {where}",
            (now, now, *args),
        )

    async def retry_now(self) -> int:
        """Make every pending delivery due immediately."""
        now = self.clock.time()
        return await self._run(
            self._exec,
            "UPDATE deliveries SET next_attempt_at=? WHERE status='pending' AND next_attempt_at>?",
            (now, now),
        )

    def _exec(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._conn:
            return self._conn.execute(sql, args).rowcount

    def _exec_relaxed(self, sql: str, args: tuple[Any, ...]) -> int:
        """Progress marks (part sent, delivered) commit without an fsync (WAL, synchronous=NORMAL).

        They survive a process crash (SIGKILL) like every commit; only a power loss in the
        instant after could undo one, and then the message is sent again (at-least-once),
        never lost. Accepting an event keeps its fsync. This saves one fsync per send, and
        lets the mark skip the hop to a worker thread (``_run_quick``)."""
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._exec(sql, args)
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

    # ---- reads --------------------------------------------------------------------------

    async def deliveries(self, event_id: str) -> list[Delivery]:
        return await self._run(self._deliveries, event_id)

    def _deliveries(self, event_id: str) -> list[Delivery]:
        rows = self._conn.execute(
            "SELECT d.*, e.payload FROM deliveries d JOIN events e USING (event_id) WHERE d.event_id=? ORDER BY d.id",
            (event_id,),
        ).fetchall()
        return self._readable(rows)

    async def counts(self) -> OutboxCounts:
        return await self._run(self._counts)

    def _counts(self) -> OutboxCounts:
        by = dict.fromkeys(("pending", "in_flight", "delivered", "dead"), 0)
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"):
            by[status] = n
        (oldest,) = self._conn.execute(
            "SELECT MIN(created_at) FROM deliveries WHERE status IN ('pending','in_flight')"
        ).fetchone()
        age = round(max(0.0, self.clock.time() - oldest), 3) if oldest is not None else None
        return OutboxCounts(by["pending"], by["in_flight"], by["delivered"], by["dead"], age)

    async def next_due_at(self, *, min_priority: str = "low", skip_answer_requests: bool = False) -> float | None:
        """When a row ``claim_due`` with the same filter would take is due next (or a lease
        runs out), so the loop sleeps until then: a held row is never the one it waits for."""
        return await self._run(self._next_due, PRIORITY_RANK[min_priority], skip_answer_requests)

    def _next_due(self, min_rank: int = 0, skip_answer_requests: bool = False) -> float | None:
        (due,) = self._conn.execute(
            "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN events e USING (event_id)"
            " WHERE d.status='pending' AND d.priority>=?"
            + (f" AND NOT {ASKS_FOR_ANSWER_SQL}" if skip_answer_requests else ""),
            (min_rank,),
        ).fetchone()
        (lease,) = self._conn.execute("SELECT MIN(lease_until) FROM deliveries WHERE status='in_flight'").fetchone()
        candidates = [t for t in (due, lease) if t is not None]
        return min(candidates) if candidates else None

    async def dead_letters(self, limit: int = 20) -> list[Delivery]:
        return await self._run(self._dead, limit)

    def _dead(self, limit: int) -> list[Delivery]:
        rows = self._conn.execute(
            "SELECT d.*, e.payload FROM deliveries d JOIN events e USING (event_id) WHERE d.status='dead'"
            " ORDER BY d.updated_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return self._readable(rows)

    async def purge(self, older_than_s: float) -> int:
        """Delete delivered and dead rows (and their events) older than the retention."""
        return await self._run(self._purge, self.clock.time() - older_than_s)

    def _purge(self, cutoff: float) -> int:
        with self._conn:
            n = self._conn.execute(
                "DELETE FROM deliveries WHERE status IN ('delivered','dead') AND updated_at<?", (cutoff,)
            ).rowcount
            self._conn.execute(
                "DELETE FROM events WHERE created_at<? AND event_id NOT IN (SELECT event_id FROM deliveries)",
                (cutoff,),
            )
        return n
