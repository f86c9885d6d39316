"""The getUpdates poller: a lifespan background task that reads the person's answers.

Offset handling (at-least-once, no loss, no duplicates): each batch and the next offset
(last ``update_id`` + 1) are committed in one transaction *before* the next getUpdates,
which is what confirms the batch to Telegram. A crash after fetching and before committing
re-reads the batch; a crash after committing resumes at the stored offset. Rows are
unique on update_id, so a re-read stores nothing twice.

Only updates from ``TELEGRAM_ALLOWED_USERS`` are stored. Others are counted
(``unauthorized_updates_total``) and dropped; a stranger's button press is answered
"Unauthorized". Allowed presses are acknowledged after they are stored. A flood of strangers
writes one warning line a minute (with a count), not one per update. An update whose id does
not fit SQLite's 64-bit integer (Telegram's own are far below) is skipped and logged, so it
cannot block every later answer.

Why a pipeline of its own (``telegram_updates``, built from the telegram component's
breaker and retry settings) rather than the send pipeline: a long poll holds its call for
``poll_timeout`` seconds, so sharing the send breaker would let it take the one half-open
probe permit and hold sends back for that long, and its 25-second "latency" would pollute
the send latency histogram. A dead Telegram still opens both breakers, each on its own
evidence. A 409 (another poller or a webhook on this token) is a configuration problem,
not an outage: it is reported (log, metric, ``status()``), backed off, and never counted
as a breaker failure (``TelegramConflict.counts_as_failure`` is false).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from cctg_mcp.answers.models import ParsedUpdate, TelegramResponse, parse_update
from cctg_mcp.answers.store import ResponseStore
from cctg_mcp.delivery.coordination import Coordinator
from cctg_mcp.delivery.mode import Mode, parse_command
from cctg_mcp.resilience.breaker import CircuitBreaker
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import BaseResilienceError, TelegramConflict, TelegramUnauthorized, redact
from cctg_mcp.resilience.logthrottle import ThrottledLog
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import Pipeline, PipelineSet, breaker_settings, retry_policy
from cctg_mcp.resilience.retry import RetryExecutor

log = logging.getLogger(__name__)

DEFAULT_POLL_TIMEOUT = 25
UPDATES_COMPONENT = "telegram_updates"
ALLOWED_UPDATES = ["message", "callback_query"]
#: Update ids must fit SQLite's signed 64-bit integer (and the offset one above them).
MAX_UPDATE_ID = 2**63 - 2
_ACK_TEXT = {"approve": "Approved ✅", "deny": "Denied ❌", "acknowledge": "Acknowledged 👍"}
#: Handles a mode command (``/cct:nomad`` ...) from an allowed user: (mode, user_id, update_id).
CommandHandler = Callable[[Mode, int, int], Awaitable[None]]


def updates_pipeline(pipelines: PipelineSet) -> Pipeline:
    """A pipeline for getUpdates/answerCallbackQuery with the telegram component's settings."""
    config, clock, metrics = pipelines.config, pipelines.clock, pipelines.metrics
    breaker = CircuitBreaker(UPDATES_COMPONENT, breaker_settings(config, "telegram"), clock=clock)
    if metrics is not None:
        breaker.add_listener(
            lambda t: metrics.record_breaker_transition(t.breaker, t.from_state.value, t.to_state.value)
        )
    retry = RetryExecutor(retry_policy(config, "telegram"), clock=clock, rng=random.Random(), name=UPDATES_COMPONENT)
    return Pipeline(UPDATES_COMPONENT, breaker, retry, clock=clock, metrics=metrics, enabled=config.enabled)


def ack_text(response: TelegramResponse) -> str:
    if response.action in _ACK_TEXT:
        return _ACK_TEXT[response.action]
    if response.action == "option" and response.option:
        return f"Selected: {response.option}"[:200]
    return "Received"


class SharedUpdates(Protocol):
    """Where the one reader shares what it reads with processes on other machines (Redis):
    the raw updates, and the getUpdates offset, fenced so a stale reader cannot move it."""

    def is_leader(self) -> bool: ...

    async def shared_offset(self) -> int | None: ...

    async def commit_offset(self, offset: int) -> bool: ...

    async def share_updates(self, updates: list[dict[str, Any]]) -> None: ...


class ResponsePoller:
    """Reads the bot's updates (getUpdates, one reader per bot) and stores the person's answers."""

    def __init__(
        self,
        store: ResponseStore,
        transport: Any,  # TelegramTransport: get_updates, answer_callback_query
        pipeline: Pipeline,
        *,
        allowed_users: tuple[int, ...] | list[int],
        clock: Clock = SYSTEM_CLOCK,
        metrics: MetricsRegistry | None = None,
        poll_timeout: int = DEFAULT_POLL_TIMEOUT,
        limit: int = 100,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
        conflict_backoff: float = 30.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.pipeline = pipeline
        self.allowed_users = frozenset(allowed_users)
        self.clock = clock
        self.metrics = metrics
        self.poll_timeout = poll_timeout
        self.limit = limit
        self.min_backoff, self.max_backoff, self.conflict_backoff = min_backoff, max_backoff, conflict_backoff
        self.offset: int | None = None
        self.running = False
        #: Another session on this data dir reads getUpdates; this one takes over if it stops.
        self.following = False
        self.polls = 0
        self.stored = 0
        self.unauthorized = 0
        self.conflicts = 0
        #: The last round ended in a 409 (another poller or a webhook holds this bot's updates).
        self.in_conflict = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None  # clock.monotonic()
        self._round: anyio.Event | None = None
        self._throttled = ThrottledLog(log, clock=clock)
        #: Updates skipped because their id is out of range.
        self.skipped = 0
        #: Set by the composition root: mode commands are handed to it, not stored as answers.
        self.on_command: CommandHandler | None = None
        self.commands = 0
        #: The last batch held only updates that cannot be used (ids out of range).
        self.unusable_batch = False
        #: Set by the composition root with Redis coordination: the reader shares each batch.
        self.shared: SharedUpdates | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled (or, with shared updates, until this process is no longer the
        reader). Started with ``await task_group.start(poller.run)``."""
        self.offset = await self.store.next_offset()
        if self.shared is not None:  # another machine may have read further while it led
            shared = await self.shared.shared_offset()
            if shared is not None and (self.offset is None or shared > self.offset):
                self.offset = shared
        self.running = True
        task_status.started()
        log.info("answers: polling getUpdates from offset %s", self.offset)
        try:
            while self.shared is None or self.shared.is_leader():
                delay = await self._poll_guarded()
                if delay > 0:
                    await self.clock.sleep(delay)
        finally:
            self.running = False

    async def run_as_reader(
        self, coordinator: Coordinator, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll once this process is the data dir's one reader (Telegram allows one getUpdates
        reader per bot; a second gets 409). Until then, follow: the reader stores answers in
        the shared store, and every process's waiters wake on them."""
        if await coordinator.try_lead():
            await self.run(task_status=task_status)
        else:
            task_status.started()
        while True:  # with a lease (Redis) leadership can be lost: follow again, then lead
            self.following = True
            try:
                await coordinator.lead()
            finally:
                self.following = False
            await self.run()

    def round_done(self) -> anyio.Event:
        """An event set when the current poll round ends (success or failure): status watchers
        take it, then wait on it."""
        if self._round is None:
            self._round = anyio.Event()
        return self._round

    async def _poll_guarded(self) -> float:
        """One poll; the seconds to wait before the next (0 after a success)."""
        try:
            return await self._poll_round()
        finally:
            event, self._round = self._round, None
            if event is not None:
                event.set()

    async def _poll_round(self) -> float:
        try:
            await self.poll_once()
        except TelegramConflict as exc:
            self._failed(exc, "getupdates_conflicts_total")
            self.conflicts += 1
            self.in_conflict = True
            log.log(
                logging.ERROR if self.conflicts % 20 == 1 else logging.DEBUG,  # first, then every 20th (~10 min)
                "answers: getUpdates conflict (409): another process is polling this bot token, or a webhook "
                "is set. Answers are not read until it stops (stop the other poller or call deleteWebhook). %s",
                exc,
            )
            return self.conflict_backoff
        except TelegramUnauthorized as exc:
            self._failed(exc, "getupdates_errors_total")
            log.error("answers: the bot token was rejected; fix TELEGRAM_BOT_TOKEN. %s", exc)
            return self.max_backoff
        except BaseResilienceError as exc:
            self._failed(exc, "getupdates_errors_total")
            log.warning("answers: getUpdates failed (%s); retrying", exc)
            if exc.retry_after is not None:  # 429 or an open breaker: wait exactly that long
                return max(exc.retry_after, 0.0)
            return self._backoff()
        except Exception as exc:  # the store (disk full, locked...): keep the offset, try again
            self._failed(exc, "answers_store_errors_total")
            log.exception("answers: storing updates failed; they will be read again")
            return self._backoff()
        self.consecutive_failures = 0
        self.in_conflict = False
        self.last_error = None
        self.last_success_at = self.clock.monotonic()
        return self.min_backoff if self.unusable_batch else 0.0

    def _failed(self, exc: Exception, counter: str) -> None:
        self.in_conflict = False
        self.consecutive_failures += 1
        self.last_error = redact(str(exc))[:300]
        if self.metrics is not None:
            self.metrics.incr(counter)

    def _backoff(self) -> float:
        return float(min(self.max_backoff, self.min_backoff * 2 ** (self.consecutive_failures - 1)))

    # ---- one round ----------------------------------------------------------------------

    async def poll_once(self) -> list[TelegramResponse]:
        """getUpdates from the stored offset, store the allowed answers with the new offset,
        acknowledge button presses. Returns the stored rows of this batch."""
        offset = self.offset
        updates: list[dict[str, Any]] = await self.pipeline.call(
            "getUpdates",
            lambda: self.transport.get_updates(
                offset, timeout=self.poll_timeout, limit=self.limit, allowed_updates=ALLOWED_UPDATES
            ),
        )
        self.polls += 1
        usable: list[dict[str, Any]] = []
        for update in updates:
            update_id = update.get("update_id")
            if not isinstance(update_id, int) or isinstance(update_id, bool):
                continue
            if not 0 <= update_id <= MAX_UPDATE_ID:
                self.skipped += 1
                self._throttled.note(
                    "update_id", logging.WARNING, "answers: skipped an update whose id %s is out of range", update_id
                )
                continue
            usable.append(update)
        ids = [u["update_id"] for u in usable]
        # Telegram offers an update it could not be given an offset for again at once, without
        # a long poll: wait a little before asking again instead of spinning on it.
        self.unusable_batch = bool(updates) and not ids
        if not ids:
            return []
        allowed: list[ParsedUpdate] = []
        strangers: list[ParsedUpdate] = []
        for update in usable:
            parsed = parse_update(update)
            if parsed is None:
                continue
            (allowed if parsed.user_id in self.allowed_users else strangers).append(parsed)
        if self.on_command is not None:
            allowed = await self._commands(allowed)
        next_offset = max(ids) + 1
        if self.shared is not None:
            # The other machines store the batch from the stream. Shared before anything here
            # moves the offset on: if Redis fails, the next poll reads the batch again (rows are
            # unique per update id), so no machine loses it.
            await self.shared.share_updates(usable)
        rows, new = await self.store.store_batch(allowed, next_offset)
        if self.shared is not None and not await self.shared.commit_offset(next_offset):
            log.warning("answers: this process is no longer the reader; it stops reading updates")
        self.offset = next_offset
        self.stored += new
        if self.metrics is not None and new:
            self.metrics.incr("responses_stored_total", new)
        for stranger in strangers:
            self.unauthorized += 1
            if self.metrics is not None:
                self.metrics.incr("unauthorized_updates_total")
            self._throttled.note(
                "stranger",
                logging.WARNING,
                "answers: ignored an update from user %s, who is not in TELEGRAM_ALLOWED_USERS",
                stranger.user_id,
            )
            if stranger.callback_query_id:
                await self._answer(stranger.callback_query_id, "Unauthorized")
        queries = {p.update_id: p.callback_query_id for p in allowed if p.callback_query_id}
        for row in rows:
            query_id = queries.get(row.update_id)
            if query_id:
                await self._answer(query_id, ack_text(row))
        return rows

    async def ingest_shared(self, updates: list[dict[str, Any]]) -> int:
        """Store the allowed answers among ``updates`` another machine's reader shared (Redis);
        rows are unique per update id, so the reader's own batch coming back stores nothing."""
        ids = [u["update_id"] for u in updates if isinstance(u.get("update_id"), int)]
        if not ids:
            return 0
        allowed = [p for u in updates if (p := parse_update(u)) is not None and p.user_id in self.allowed_users]
        # Mode commands act on the reader's machine and are never answers (as on the reader).
        answers = [p for p in allowed if not (p.kind == "text" and parse_command(p.text) is not None)]
        _, new = await self.store.store_batch(answers, max(ids) + 1)
        self.stored += new
        return new

    async def _commands(self, allowed: list[ParsedUpdate]) -> list[ParsedUpdate]:
        """Apply the mode commands among ``allowed`` (before the offset is committed: a crash
        re-reads and re-applies them, which is idempotent); the rest are answers."""
        assert self.on_command is not None
        answers: list[ParsedUpdate] = []
        for update in allowed:
            mode = parse_command(update.text) if update.kind == "text" else None
            if mode is None:
                answers.append(update)
                continue
            self.commands += 1
            try:
                await self.on_command(mode, update.user_id, update.update_id)
            except Exception:  # a failed switch or confirmation must not stop reading answers
                log.exception("answers: the mode command %r from user %s failed", update.text, update.user_id)
        return answers

    async def _answer(self, query_id: str, text: str) -> None:
        """Acknowledge a button press (stops the spinner); a failure only costs the toast."""
        try:
            await self.pipeline.call(
                "answerCallbackQuery", lambda: self.transport.answer_callback_query(query_id, text)
            )
        except BaseResilienceError as exc:
            log.info("answers: answerCallbackQuery failed (%s); the answer is stored anyway", exc)

    def status(self) -> dict[str, Any]:
        since = None if self.last_success_at is None else self.clock.monotonic() - self.last_success_at
        return {
            "running": self.running,
            "following": self.following,
            "offset": self.offset,
            "polls": self.polls,
            "stored": self.stored,
            "unauthorized_ignored": self.unauthorized,
            "mode_commands": self.commands,
            "conflicts": self.conflicts,
            "in_conflict": self.in_conflict,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "seconds_since_last_success": None if since is None else round(since, 3),
            "breaker": self.pipeline.breaker.state.value,
        }
