"""Use cases, free of MCP: accept an event, commit it, try to deliver it within a deadline.

The MCP tools (server.py) and the library client share this service. Errors it raises are
``BaseResilienceError`` subclasses whose message says what to fix; the server turns them
into tool errors.
"""

from __future__ import annotations

import difflib
import json
import re
import uuid
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, Field

from cctg_mcp.config import Settings
from cctg_mcp.delivery.coordination import Coordinator
from cctg_mcp.delivery.dispatcher import Dispatcher, Outcome
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import CATALOGUE, EVENT_TYPES, Event, Priority, event_priority, utc_iso
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock, iso_z
from cctg_mcp.resilience.config import ResilienceConfig
from cctg_mcp.resilience.errors import BaseResilienceError, ConfigurationError, ValidationError
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.transports.api import BotApi
from cctg_mcp.transports.bridge.process import BridgeProcessManager, bridge_manager

if TYPE_CHECKING:  # these import the service module back (each is built before the service in app.py)
    from cctg_mcp.answers.service import AnswerSource
    from cctg_mcp.delivery.mode import ModeStore
    from cctg_mcp.delivery.supervisor import DispatcherSupervisor

#: Namespace for event ids derived from (type, task_id): the same task event is one event.
EVENT_NAMESPACE = uuid.UUID("6f1d1b1e-4a8c-4c0e-9a51-2f0c2b6d7e10")
#: Bytes (UTF-8, as stored) of an event's free-form ``data``.
MAX_DATA_BYTES = 16_384
#: Bytes of ``data`` a tool composes from its own schema-bounded fields (task completion at
#: its schema's maxima: 5000-character results and 50 paths of 500 characters, 4 bytes each).
MAX_COMPOSED_DATA_BYTES = 131_072
MAX_DATA_DEPTH = 32

#: How long a send tool waits for delivery before answering ``queued`` (seconds), per
#: operation, from the seed's per-operation table. The pipeline issue makes this configurable.
DEFAULT_TOOL_DEADLINES = {
    "sendEvent": 10.0,
    "sendMessage": 5.0,
    "sendTaskCompletion": 8.0,
    "sendPerformanceAlert": 3.0,
    "sendApprovalRequest": 5.0,
}


class NotConfiguredError(ConfigurationError):
    """Raised by every use case while required settings are missing: nothing is sent or stored."""

    code = "NOT_CONFIGURED"


class DeliveryFailedError(BaseResilienceError):
    """A permanent delivery failure: the event is dead for at least one recipient."""

    code = "DELIVERY_FAILED"


class RecipientResult(BaseModel):
    """What happened to an event for one recipient."""

    chat_id: int
    status: Literal["delivered", "queued", "dead"]
    message_ids: list[int] = Field(default_factory=list)
    attempts: int = 0
    reason: str | None = None


class SendResult(BaseModel):
    """What happened to an accepted event."""

    event_id: str = Field(description="Id of the event; the same task_id always gives the same event_id.")
    status: Literal["delivered", "queued", "duplicate"] = Field(
        description="delivered: Telegram accepted it for every recipient. queued: stored durably and "
        "will be delivered automatically (do not send it again). duplicate: this event was already "
        "accepted earlier and was not sent again."
    )
    message: str
    recipients: list[RecipientResult] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="Why it is queued (redacted).")
    next_attempt_at: str | None = Field(default=None, description="When the next delivery attempt is due (UTC).")
    retry_in_seconds: float | None = None


class EventTypeInfo(BaseModel):
    """One event type of the catalogue, with its category and meaning."""

    type: str
    category: str
    description: str


class EventTypeList(BaseModel):
    """The event types of the catalogue (optionally one category)."""

    count: int
    event_types: list[EventTypeInfo]


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ID100 = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _text(field: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be non-empty text.")
    if len(value) > limit:
        raise ValidationError(f"{field} is {len(value)} characters; the limit is {limit}.")


def _check_data(data: dict[str, Any]) -> None:
    """``data`` must survive the outbox round trip: bounded nesting (checked without recursion;
    deeper JSON is stored but cannot be read back, which wedged the row), text that is valid
    UTF-8 (no lone surrogates) and no NaN/Infinity."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            raise ValidationError(f"data is nested more than {MAX_DATA_DEPTH} levels deep; flatten it.")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("data contains invalid text (a lone UTF-16 surrogate); send valid Unicode.") from None
    except ValueError:
        raise ValidationError("data contains NaN or Infinity, which JSON cannot carry; use null or a string.") from None


def _iso(epoch: float) -> str:
    return iso_z(epoch)


class NotificationService:
    """The use cases, free of MCP: build, accept, commit and deliver events."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox | None,
        dispatcher: Dispatcher | None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        pipelines: PipelineSet | None = None,
        metrics: MetricsRegistry | None = None,
        resilience: ResilienceConfig | None = None,
        transport: BotApi | None = None,
        coordinator: Coordinator | None = None,
        supervisor: DispatcherSupervisor | None = None,
        answers: AnswerSource | None = None,
        mode: ModeStore | None = None,
        bridge: BridgeProcessManager | None = None,
        deadlines: dict[str, float] | None = None,
    ) -> None:
        """Everything arrives here, built by the composition root (app.py); nothing is attached
        later (assigning an attribute afterwards raises). None means the part is not running:
        ``outbox``/``dispatcher`` when not configured, ``transport``/``mode`` in bridge delivery."""
        self.settings = settings
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.clock = clock
        self.pipelines = pipelines
        self.metrics = metrics
        self.resilience = resilience
        self.transport = transport
        self.coordinator = coordinator  # the sessions sharing this bot (coordination.py)
        self.supervisor = supervisor  # restarts the delivery loop
        self.answers = answers  # getUpdates answers, or the bridge's response files
        self.mode = mode  # direct delivery's mode (nomad/local/muted)
        #: The CCTelegram bridge process (start/stop/restart tools, bridge recovery); building
        #: it touches nothing, so it always exists.
        restart_delay = resilience.recovery.seconds("restart_delay") if resilience is not None else 2.0
        self.bridge = bridge or bridge_manager(settings, restart_delay_s=restart_delay, clock=clock)
        self.deadlines = {**DEFAULT_TOOL_DEADLINES, **(deadlines or {})}
        if resilience is not None:
            for operation in DEFAULT_TOOL_DEADLINES:
                self.deadlines[operation] = resilience.timeout_for(operation)
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"NotificationService is built whole by app.py; {name} cannot be assigned afterwards")
        object.__setattr__(self, name, value)

    # ---- catalogue ----------------------------------------------------------------------

    @staticmethod
    def list_event_types(category: str | None = None) -> EventTypeList:
        needle = (category or "").strip().lower()
        items = [
            EventTypeInfo(type=t, category=cat, description=desc)
            for cat, types in CATALOGUE.items()
            if needle in cat.lower()
            for t, desc in types.items()
        ]
        return EventTypeList(count=len(items), event_types=items)

    # ---- sending ------------------------------------------------------------------------

    def build_event(
        self,
        *,
        type: str,
        title: str,
        description: str,
        task_id: str | None = None,
        source: str = "claude-code",
        data: dict[str, Any] | None = None,
        priority: Priority | None = None,
        max_description: int = 2000,
        data_fields: str = "data",
        max_data_bytes: int = MAX_DATA_BYTES,
    ) -> Event:
        """Validate and build an event. The MCP schema checks the same limits first; this
        guards the library path and anything that bypasses the schema."""
        if type not in EVENT_TYPES:
            near = difflib.get_close_matches(type.strip().lower(), EVENT_TYPES, n=3, cutoff=0.5)
            hint = f"the nearest are {', '.join(near)}; " if near else ""
            raise ValidationError(
                f"type {type!r} is not an event type: {hint}use custom_event for anything else "
                f"(list_event_types lists all {len(EVENT_TYPES)})."
            )
        _text("title", title, 200)
        _text("description", description, max_description)
        if task_id is not None and not _ID.fullmatch(task_id):
            raise ValidationError("task_id must be 1-64 characters of letters, digits, - and _.")
        if not _ID100.fullmatch(source):
            raise ValidationError("source must be 1-100 characters of letters, digits, - and _.")
        data = dict(data or {})
        _check_data(data)
        size = len(json.dumps(data, ensure_ascii=False, default=str).encode("utf-8", "replace"))
        if size > max_data_bytes:  # real bytes, as stored; named as the caller knows the fields
            raise ValidationError(f"{data_fields} take {size} bytes (UTF-8 JSON); the limit is {max_data_bytes}.")
        if task_id:
            event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"{type}:{task_id}"))
        else:
            event_id = str(uuid.uuid4())
            task_id = event_id
        return Event(
            event_id=event_id,
            type=type,
            title=title.strip(),
            description=description.strip(),
            source=source,
            task_id=task_id,
            data=data,
            priority=priority or self.event_priority(type),
            timestamp=utc_iso(self.clock.time()),
        )

    def event_priority(self, event_type: str) -> Priority:
        """The configuration's ``events.<type>.priority`` if set, else the catalogue's."""
        return event_priority(event_type, self.resilience.events if self.resilience is not None else None)

    def message_event(self, message: str, *, source: str = "claude-code") -> Event:
        """A free-form message (send_telegram_message): an info notification up to 20 000 chars."""
        if not message.strip():  # e.g. only U+001C..U+001F: non-blank to a JSON schema, blank to Python
            raise ValidationError("message must be non-empty text.")
        return self.build_event(
            type="info_notification",
            title="Message",
            description=message,
            source=source,
            data={"message": True},
            max_description=20_000,
        )

    def not_configured(self) -> NotConfiguredError:
        """The one "not configured" answer every use case gives, word for word (send, answers,
        modes, recovery, chaos): nothing was sent or stored, and what to set."""
        problems = self.settings.problems() or ["The delivery path is not running (see the server's log)."]
        return NotConfiguredError("cctg-mcp is not configured, so nothing was sent or stored. " + " ".join(problems))

    def ready(self) -> tuple[Outbox, Dispatcher]:
        """The outbox and dispatcher, or ``not_configured()``."""
        if self.settings.problems() or self.outbox is None or self.dispatcher is None:
            raise self.not_configured()
        return self.outbox, self.dispatcher

    def recipients(self) -> list[int]:
        return self.settings.recipients()

    def budget(self, operation: str, event_type: str) -> float:
        """Seconds a send tool waits for its immediate attempt: the configuration's
        ``events.<type>.timeout`` when set, else the operation's."""
        if self.resilience is not None and event_type in self.resilience.events:
            return self.resilience.timeout_for(operation, event_type)
        return self.deadlines.get(operation, self.deadlines["sendEvent"])

    async def submit(self, event: Event, *, operation: str = "sendEvent", bypass_holds: bool = False) -> SendResult:
        """Commit ``event`` durably, then try to deliver it before the operation's deadline.

        While a recovery lever holds delivery (fallback pause, degraded mode below the event's
        priority) the event is only queued; ``bypass_holds`` (recovery's own alert) sends anyway."""
        outbox, dispatcher = self.ready()
        held = None if bypass_holds else dispatcher.hold_reason(event.priority, event)
        lease = None if held else (dispatcher.owner, dispatcher.lease_s)
        claimed = await outbox.enqueue(event, self.recipients(), lease=lease)
        if claimed is None:
            recipients = []
            for d in await outbox.deliveries(event.event_id):
                # pending and in_flight rows are both still queued to a caller
                status, reason = await dispatcher.as_settled(
                    event, d.status if d.status in ("delivered", "dead") else "queued", d.last_error
                )
                recipients.append(
                    RecipientResult(
                        chat_id=d.chat_id,
                        status=status,  # type: ignore[arg-type]
                        message_ids=d.message_ids,
                        attempts=d.attempts,
                        reason=reason,
                    )
                )
            return SendResult(
                event_id=event.event_id,
                status="duplicate",
                message="This event was already accepted earlier (same type and task_id); it was not sent again.",
                recipients=recipients,
            )
        if held:
            return await self._result(
                event, [Outcome(d.id, d.chat_id, "queued", [], held, None, d.next_attempt_at) for d in claimed]
            )
        budget = self.budget(operation, event.type)
        deadline = self.clock.monotonic() + budget
        outcomes: list[Outcome] = []

        async def one(delivery: Any) -> None:
            outcomes.append(await dispatcher.confirm(await dispatcher.deliver(delivery, deadline=deadline), deadline))

        with self.clock.timeout_scope(budget + 2.0):
            async with anyio.create_task_group() as tg:
                for delivery in claimed:
                    tg.start_soon(one, delivery)
        return await self._result(event, outcomes, complete=len(outcomes) == len(claimed))

    async def _result(self, event: Event, outcomes: list[Outcome], *, complete: bool = False) -> SendResult:
        """``complete``: every delivery has an outcome, so the rows need not be read back."""
        assert self.outbox is not None
        rows = {} if complete else {d.id: d for d in await self.outbox.deliveries(event.event_id)}
        seen = {o.delivery_id for o in outcomes}
        for row in rows.values():  # cut short by the safety timeout: report the row as it is
            if row.id not in seen:
                outcomes.append(
                    Outcome(
                        row.id,
                        row.chat_id,
                        "queued",
                        row.message_ids,
                        row.last_error or "the delivery deadline was reached",
                        None,
                        row.next_attempt_at,
                    )
                )
        recipients = [
            RecipientResult(
                chat_id=o.chat_id, status=o.status, message_ids=o.message_ids, attempts=o.attempts, reason=o.reason
            )
            for o in sorted(outcomes, key=lambda o: o.chat_id)
        ]
        dead = [o for o in outcomes if o.status == "dead"]
        if dead:
            delivered = sum(o.status == "delivered" for o in outcomes)
            raise DeliveryFailedError(
                f"Event {event.event_id} cannot be delivered to {len(dead)} of {len(outcomes)} recipient(s) "
                f"({delivered} delivered; do not resend): {dead[0].reason} " + _advice(dead[0].error_code),
                code=dead[0].error_code or "DELIVERY_FAILED",
            )
        queued = [o for o in outcomes if o.status == "queued"]
        if not queued:
            return SendResult(
                event_id=event.event_id,
                status="delivered",
                message=f"Delivered to {len(outcomes)} recipient(s).",
                recipients=recipients,
            )
        due = min((o.next_attempt_at for o in queued if o.next_attempt_at), default=self.clock.time())
        if self.dispatcher is not None:
            self.dispatcher.wake()
        return SendResult(
            event_id=event.event_id,
            status="queued",
            message=_HELD_MESSAGE.get(
                queued[0].reason or "",
                "Stored durably; it will be delivered automatically when Telegram is reachable. Do not send it again.",
            ),
            recipients=recipients,
            reason=queued[0].reason,
            # Held by the mode: no attempt is due until the mode changes.
            next_attempt_at=None if queued[0].reason in _HELD_MESSAGE else _iso(due),
            retry_in_seconds=None if queued[0].reason in _HELD_MESSAGE else round(max(0.0, due - self.clock.time()), 3),
        )


#: What a send held by the mode (delivery/mode.py) answers.
_HELD_MESSAGE = {
    "muted": "Muted: nothing is sent now. Stored durably; it goes out when the mode is switched back "
    "(switch_to_nomad_mode or switch_to_local_mode, or /cct:nomad in Telegram). Do not send it again.",
    "local": "Local mode: approval requests are not sent now. Stored durably; it goes out in nomad mode "
    "(switch_to_nomad_mode, or /cct:nomad in Telegram). Do not send it again.",
}


def _advice(code: str | None) -> str:
    return {
        "TELEGRAM_INVALID_TOKEN": "Fix TELEGRAM_BOT_TOKEN (the bot token was rejected) and restart the server.",
        "TELEGRAM_FORBIDDEN": "The recipient must open the bot in Telegram and press Start (or unblock it).",
        "TELEGRAM_BAD_REQUEST": "Check TELEGRAM_ALLOWED_USERS (chat not found?) and the message content.",
    }.get(code or "", "See get_resilience_status for details.")
