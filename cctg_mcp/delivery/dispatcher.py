"""The dispatcher: delivers outbox rows through the resilience pipeline, paced to Telegram.

``deliver()`` is the one code path that sends a delivery, used both by a send tool (its
immediate attempt, bounded by the tool's deadline) and by the background loop ``run()``,
which claims due rows with leases until the server stops. A delivery ends in one of three
ways: delivered, back to pending with a due time (transient failure, breaker open,
deadline reached), or dead (a permanent failure: 400, 401, 403).

Once Telegram accepted every part, the delivery *is* delivered, whatever happens to our
record of it: if writing that record fails (a full disk, a locked database), the outcome is
still ``delivered``, the message ids are kept in memory (``unsettled``) and the record is
written again before every claim; a row of ours that comes back from an expired lease is
settled, never sent again. Only a crash before the record is written can repeat it.

Leases: a live owner renews the lease of every row it is delivering (every third of the
lease), so no other process takes a row over while its attempt runs, however long that
is. With a coordinator (several processes on one bot), rows leased by a process found dead
(liveness: its OS lock is gone) go back to pending at once; an expired lease (a process
that stopped renewing: hung, or from before liveness) is the fallback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import anyio

from cctg_mcp.delivery.coordination import Coordinator
from cctg_mcp.delivery.mode import ModeStore
from cctg_mcp.delivery.outbox import PRIORITY_RANK, Delivery, Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.events.catalogue import Event
from cctg_mcp.events.rendering import render_event
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import (
    BaseResilienceError,
    CircuitBreakerError,
    ConfigurationError,
    DeadlineExceededError,
    TelegramError,
    TelegramRateLimited,
    ValidationError,
    classify,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class CallPipeline(Protocol):
    """What the dispatcher needs from the resilience pipeline."""

    async def call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        event_type: str | None = None,
    ) -> T: ...


#: The seed's operation names (configuration ``operations``) for the events the tools send.
_OPERATIONS = {
    "performance_alert": "sendPerformanceAlert",
    "task_completion": "sendTaskCompletion",
    "approval_request": "sendApprovalRequest",
}


def operation_for(event: Event) -> str:
    """The configuration's operation a delivery of ``event`` runs as (its breaker, retry)."""
    if event.type == "info_notification" and event.data.get("message") is True:
        return "sendMessage"  # send_telegram_message's free-form message
    return _OPERATIONS.get(event.type, "sendEvent")


class MessageSender(Protocol):
    """What the dispatcher needs from a transport: send one message, get its id."""

    async def send_message(
        self, chat_id: int, text: str, *, reply_markup: dict[str, Any] | None = None, parse_mode: str | None = "HTML"
    ) -> int: ...


@dataclass
class Outcome:
    """How one delivery attempt ended: delivered, queued again, or dead."""

    delivery_id: int
    chat_id: int
    status: Literal["delivered", "queued", "dead"]
    message_ids: list[int] = field(default_factory=list)
    reason: str | None = None
    error_code: str | None = None
    next_attempt_at: float | None = None  # epoch seconds
    attempts: int = 0
    #: Bridge delivery: the event file this attempt wrote (what ``confirm`` watches).
    event_file: Path | None = None


#: How far past its send deadline the background loop lets one delivery run before cancelling it.
BACKGROUND_CANCEL_MARGIN_S = 5.0


def background_send_timeout(configured_lease_s: float) -> float:
    """The background loop's send timeout for one delivery: half the configured lease (so a
    renewal lands in time), at most 30 s. The one definition (app.py, bridge.py, lease_for)."""
    return min(30.0, configured_lease_s / 2)


def is_permanent(error: BaseResilienceError) -> bool:
    """Permanent for this delivery: retrying the same request cannot succeed."""
    return isinstance(error, (TelegramError, ValidationError, ConfigurationError)) and not error.retryable


def requeue_delay(attempts: int, error: BaseResilienceError) -> float:
    """Seconds until a failed delivery is due again: the error's own hint, else backoff."""
    backoff = min(60.0, 2.0 ** min(attempts, 6))
    if isinstance(error, CircuitBreakerError):
        # Open: come back when the breaker admits a probe. Half-open: a probe is in flight;
        # give it a moment rather than spinning on rejections.
        return max(error.retry_after or 0.0, 0.5)
    if error.retry_after is not None:
        return max(error.retry_after, 0.05)
    return backoff


class Dispatcher:
    """Delivers outbox rows through the pipeline, paced: a send's own attempt and the background loop."""

    def __init__(
        self,
        outbox: Outbox,
        sender: MessageSender,
        pipeline: CallPipeline,
        pacer: Pacer,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease_s: float = 120.0,
        send_timeout_s: float = 30.0,
        concurrency: int = 8,
        idle_poll_s: float = 5.0,
        coordinator: Coordinator | None = None,
        mode: ModeStore | None = None,
    ) -> None:
        self.outbox = outbox
        self.sender = sender
        self.pipeline = pipeline
        self.pacer = pacer
        self.clock = clock
        self.coordinator = coordinator
        #: The lease owner: with a coordinator, its session id (what liveness is checked by).
        self.owner = coordinator.session_id if coordinator is not None else f"{uuid.uuid4().hex[:12]}"
        self._peer_died = True  # check the outbox for rows of dead owners at the first chance
        self.taken_over = 0
        #: Telegram failed and the backlog backs off: the next success makes it due at once.
        self._failing = False
        if coordinator is not None:
            coordinator.add_death_listener(self.peer_died)
        self.lease_s = lease_s
        self.send_timeout_s = send_timeout_s
        self.concurrency = concurrency
        self.idle_poll_s = idle_poll_s
        self._wake = anyio.Event()
        self._chat_locks: dict[int, anyio.Lock] = {}
        self.running = False
        #: Recovery levers: ``paused`` stops background delivery (rows stay queued);
        #: ``min_priority`` above "low" is graceful degradation (only urgent rows go out).
        self.paused = False
        self.min_priority = "low"
        #: The direct-delivery mode (nomad/local/muted, delivery/mode.py); None in bridge mode.
        self.mode = mode
        self.heartbeat: float | None = None
        #: Deliveries in progress (tool calls and the background loop), for a graceful drain.
        self.active = 0
        self._idle = anyio.Event()
        self.delivered = 0
        self.requeued = 0
        self.dead = 0
        #: Deliveries Telegram accepted whose record could not be written yet: id -> message ids.
        self.unsettled: dict[int, list[int]] = {}
        self.settle_failures = 0
        #: Rows the background loop claimed and has not finished: what it releases when it
        #: stops (a send tool's rows, leased by the same owner, are the tool's to settle).
        self._claimed: set[int] = set()

    async def as_settled(self, event: Event, status: str, reason: str | None) -> tuple[str, str | None]:
        """How a row of ``event`` settled earlier reads to a caller who sends it again (a
        duplicate): as stored. Bridge delivery looks again whether its file was consumed."""
        return status, reason

    def wake(self) -> None:
        """Look at the outbox now (new work, or due times changed)."""
        self._wake.set()

    def peer_died(self) -> None:
        """A process sharing the outbox stopped: take its leased rows back now."""
        self._peer_died = True
        self.wake()

    async def release_dead_owners(self) -> int:
        """Rows leased by processes that are not alive go back to pending (liveness)."""
        self._peer_died = False
        if self.coordinator is None:
            return 0
        owners = await self.outbox.lease_owners()
        try:
            dead = await self.coordinator.dead_among(owners - {self.owner})
        except BaseResilienceError as exc:  # coordination unreachable: judge again on the next round
            self._peer_died = True
            log.warning("cannot tell which lease owners are alive (%s); will ask again", exc)
            return 0
        released = await self.outbox.release_owners(dead)
        if released:
            self.taken_over += released
            log.info("took over %d deliveries leased by stopped session(s) %s", released, ", ".join(sorted(dead)))
        return released

    def hold_reason(self, priority: str, event: Event | None = None) -> str | None:
        """Why a new event of ``priority`` is queued without a direct attempt (the mode, then
        the recovery levers ``paused`` and ``min_priority``), or None when it may be sent at once."""
        held = self.mode.hold_reason(event) if self.mode is not None else None
        if held is not None:
            return held
        if self.paused:
            return (
                "delivery is paused by recovery (fallback mode): the event is stored and goes out when delivery resumes"
            )
        if PRIORITY_RANK.get(priority, 1) < PRIORITY_RANK.get(self.min_priority, 0):
            return (
                f"degraded mode: only {self.min_priority}-priority events or above are sent now; "
                "this one waits in the outbox"
            )
        return None

    def _lock(self, chat_id: int) -> anyio.Lock:
        lock = self._chat_locks.get(chat_id)
        if lock is None:
            if len(self._chat_locks) > 10_000:
                self._chat_locks = {k: v for k, v in self._chat_locks.items() if v.locked()}
            lock = self._chat_locks[chat_id] = anyio.Lock()
        return lock

    async def send_parts(self, delivery: Delivery, message_ids: list[int], deadline: float | None) -> None:
        """Send the parts not yet sent, recording progress after each (Telegram delivery).

        Other delivery paths (the CCTelegram bridge) override this; everything else about
        leases, settling rows and classifying failures stays shared."""
        parts = render_event(delivery.event)
        operation = operation_for(delivery.event)
        for index in range(delivery.parts_sent, len(parts)):
            part = parts[index]
            await self.pacer.acquire(delivery.chat_id, deadline=deadline)
            slot = [True]  # the slot acquired above is still unused

            async def send(text: str = part.text, markup: Any = part.reply_markup, slot: list[bool] = slot) -> int:
                if not slot[0]:  # a retry is one more message for the rate limits: pace it too
                    await self.pacer.acquire(delivery.chat_id, deadline=deadline)
                slot[0] = False
                try:
                    return await self.sender.send_message(delivery.chat_id, text, reply_markup=markup)
                except TelegramRateLimited as exc:
                    # The limit is per bot: hold every other send too, not just this retry.
                    await self.pacer.rate_limited(exc.retry_after or 1.0)
                    raise

            try:
                message_ids.append(
                    await self.pipeline.call(operation, send, deadline=deadline, event_type=delivery.event.type)
                )
            except CircuitBreakerError:
                if slot[0]:  # rejected before anything left: give the slot back
                    await self.pacer.give_back(delivery.chat_id)
                raise
            if index + 1 < len(parts):
                await self.outbox.record_part(delivery.id, index + 1, message_ids)

    async def drain(self, grace_s: float) -> int:
        """Shutdown: claim nothing new, give deliveries in progress up to ``grace_s`` (real
        time) to finish; returns how many were still running (they go back to pending when
        cancelled)."""
        self.paused = True
        self.wake()
        with anyio.move_on_after(grace_s):
            while self.active:
                self._idle = anyio.Event()
                await self._idle.wait()
        return self.active

    async def deliver(self, delivery: Delivery, *, deadline: float | None = None) -> Outcome:
        """Send the remaining parts of one leased delivery and settle its row."""
        self.active += 1
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew, delivery.id)
                outcome = await self._deliver(delivery, deadline)
                tg.cancel_scope.cancel()
            return outcome
        finally:
            self.active -= 1
            if not self.active:
                self._idle.set()

    async def confirm(self, outcome: Outcome, deadline: float) -> Outcome:
        """What a send tool may call ``outcome`` by ``deadline``. Telegram accepting the message
        is delivery, so here it is the outcome as it is; bridge delivery overrides it (a file
        is delivered only once the bridge consumed it)."""
        return outcome

    async def _settle_delivered(self, delivery: Delivery, message_ids: list[int], attempts: int) -> Outcome:
        """Record a delivery Telegram accepted; if the record cannot be written it is still delivered."""
        note = None
        try:
            await self.outbox.mark_delivered(delivery.id, message_ids)
            self.unsettled.pop(delivery.id, None)
        except BaseResilienceError as exc:
            self.unsettled[delivery.id] = list(message_ids)
            self.settle_failures += 1
            note = f"Telegram accepted it, but recording that failed ({exc}); it is not sent again"
            log.error("delivery %s to chat %s: %s", delivery.id, delivery.chat_id, note)
        self.delivered += 1
        return Outcome(delivery.id, delivery.chat_id, "delivered", message_ids, note, attempts=attempts)

    async def settle_unsettled(self) -> int:
        """Write the records that failed before (the disk had room again?); how many are left."""
        for delivery_id, message_ids in list(self.unsettled.items()):
            try:
                await self.outbox.mark_delivered(delivery_id, message_ids)
            except BaseResilienceError:
                break  # still failing: keep them all for the next round
            self.unsettled.pop(delivery_id, None)
        return len(self.unsettled)

    async def _renew(self, delivery_id: int) -> None:
        """Keep the lease while the attempt runs: a slow Telegram never lets another worker
        (or process) take the row and send it a second time."""
        while True:
            await self.clock.sleep(self.lease_s / 3)
            try:
                if not await self.outbox.renew(delivery_id, self.owner, self.lease_s):
                    return
            except Exception as exc:  # the store failing must not cut the attempt short
                log.warning("could not renew the lease of delivery %s: %s", delivery_id, exc)

    async def _deliver(self, delivery: Delivery, deadline: float | None) -> Outcome:
        message_ids = list(delivery.message_ids)
        attempts = delivery.attempts + 1
        if delivery.id in self.unsettled:  # accepted before; only our record of it is missing
            return await self._settle_delivered(delivery, self.unsettled[delivery.id], attempts)
        try:
            async with self._lock(delivery.chat_id):
                await self.send_parts(delivery, message_ids, deadline)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self.outbox.record_part(delivery.id, len(message_ids), message_ids)
                await self.outbox.release(delivery.id, "cancelled before delivery finished", self.clock.time())
            raise
        except Exception as exc:  # every failure settles the row; nothing accepted is dropped
            error = classify(exc)  # a 429 already paused the pacer where it was raised (send_parts)
            if message_ids:
                await self.outbox.record_part(delivery.id, len(message_ids), message_ids)
            reason = str(error)
            if is_permanent(error):
                await self.outbox.mark_dead(delivery.id, reason)
                self.dead += 1
                log.warning("delivery %s to chat %s is dead: %s", delivery.id, delivery.chat_id, reason)
                return Outcome(
                    delivery.id, delivery.chat_id, "dead", message_ids, reason, error.code, attempts=attempts
                )
            due = self.clock.time() + requeue_delay(attempts, error)
            await self.outbox.release(delivery.id, reason, due)
            if not isinstance(error, (DeadlineExceededError, TelegramRateLimited)):
                self._failing = True  # Telegram failed: rows back off until it answers again
            self.requeued += 1
            self.wake()
            return Outcome(
                delivery.id, delivery.chat_id, "queued", message_ids, reason, error.code, due, attempts=attempts
            )
        outcome = await self._settle_delivered(delivery, message_ids, attempts)
        if self._failing:
            # Telegram answers again: the backlog's backoff has done its job. Every pending row
            # is due now (any process's); the pacer meters them to the limits.
            self._failing = False
            pulled = await self.outbox.retry_now()
            if pulled:
                log.info("Telegram is back: %d queued deliveries are due now", pulled)
                self.wake()
        return outcome

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver due rows until cancelled. Expired leases (a crash) go back first."""
        recovered = await self.outbox.recover_expired_leases()
        if recovered:
            log.info("returned %d deliveries leased by a stopped process to the queue", recovered)
        await self.release_dead_owners()
        self._failing = True  # rows from before a restart carry the old process's backoff
        self.running = True
        task_status.started()
        limiter = anyio.CapacityLimiter(self.concurrency)
        try:
            while True:
                self.heartbeat = self.clock.monotonic()
                if self.unsettled:
                    await self.settle_unsettled()
                if self._peer_died:
                    await self.release_dead_owners()
                mode = self.mode.get() if self.mode is not None else "nomad"
                if self.paused or mode == "muted":
                    batch: list[Delivery] = []
                else:
                    # At most one second's worth of rows per chat (1 at Telegram's 1 msg/s): the
                    # batch is waited for as a whole, so a chat with more rows than its rate lets
                    # out would hold every other chat's backlog back.
                    with anyio.CancelScope(shield=True):  # a claim committed is a claim recorded
                        batch = await self.outbox.claim_due(
                            self.owner,
                            self.lease_s,
                            limit=self.concurrency * 4,
                            min_priority=self.min_priority,
                            per_chat=max(1, int(self.pacer.settings.per_chat_per_second)),
                            skip_answer_requests=mode == "local",
                        )
                        self._claimed.update(d.id for d in batch)
                if batch:
                    async with anyio.create_task_group() as tg:
                        for delivery in batch:
                            tg.start_soon(self._deliver_limited, delivery, limiter)
                    continue
                await self.outbox.recover_expired_leases()
                # The next row the claim above would take (same filter): a row the levers or
                # local mode hold back must not be what the loop waits for, nor hide one due soon.
                due = await self.outbox.next_due_at(
                    min_priority=self.min_priority, skip_answer_requests=mode == "local"
                )
                held = self.paused or mode == "muted"
                gated = held or self.min_priority != "low" or mode == "local"
                if due is not None and due <= self.clock.time() and gated:
                    due = None  # nothing claimable was due a moment ago: don't spin
                wait = self.idle_poll_s if due is None else min(self.idle_poll_s, max(0.0, due - self.clock.time()))
                if wait > 0 or held:
                    with self.clock.timeout_scope(wait if not held else self.idle_poll_s):
                        await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            self.running = False
            with anyio.CancelScope(shield=True):
                # Only the rows this loop claimed and did not finish: a send tool delivering
                # under the same owner keeps its lease (releasing it let the next loop send
                # the message a second time while the tool's attempt was still running).
                claimed, self._claimed = self._claimed, set()
                await self.outbox.release_leases(self.owner, claimed)

    async def _deliver_limited(self, delivery: Delivery, limiter: anyio.CapacityLimiter) -> None:
        async with limiter:
            deadline = self.clock.monotonic() + self.send_timeout_s
            with self.clock.timeout_scope(self.send_timeout_s + BACKGROUND_CANCEL_MARGIN_S):
                await self.deliver(delivery, deadline=deadline)
        self._claimed.discard(delivery.id)  # settled; a row left by a cancel is released by run()
