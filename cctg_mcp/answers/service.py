"""Response use cases, free of MCP: list, clear, summarise and wait for the person's answers.

``Answers`` bundles the store and the poller; the composition root (app.py) opens it in
telegram delivery mode and attaches it as ``service.answers``. ``answers_of(service)``
raises the same "not configured" error as the send tools when there is nothing to read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cctg_mcp.answers.models import (
    ACTIONABLE,
    ActionableResponse,
    ClearResult,
    PendingResponses,
    PendingSummary,
    ResponseList,
    TelegramResponse,
    WaitResult,
)
from cctg_mcp.answers.poller import DEFAULT_POLL_TIMEOUT, ResponsePoller, updates_pipeline
from cctg_mcp.answers.store import ANSWERS_FILE, ResponseStore
from cctg_mcp.config import Settings
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import ValidationError
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.service import NotConfiguredError, NotificationService

#: ``await on_progress(elapsed_s, total_s, message)`` while waiting.
ProgressFn = Callable[[float, float, str], Awaitable[None]]


class UnknownEventError(ValidationError):
    code = "UNKNOWN_EVENT"


def bot_id_of(token: str) -> int:
    head = token.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def answers_of(service: NotificationService) -> Answers:
    """The service's answers, or the "not configured" error the send tools give."""
    if isinstance(service.answers, Answers):
        return service.answers
    service._ready()  # raises NotConfiguredError naming what to set
    raise NotConfiguredError(
        "Answers from Telegram are read only in telegram delivery mode (CCTG_DELIVERY=telegram with "
        "TELEGRAM_BOT_TOKEN and TELEGRAM_ALLOWED_USERS set)."
    )


def _short(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


class Answers:
    def __init__(
        self,
        store: ResponseStore,
        poller: ResponsePoller | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        progress_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.poller = poller
        self.clock = clock
        #: Seconds between progress notifications of ``wait``.
        self.progress_interval = progress_interval

    @classmethod
    async def open(
        cls,
        settings: Settings,
        transport: Any,
        pipelines: PipelineSet,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: MetricsRegistry | None = None,
        poll_timeout: int = DEFAULT_POLL_TIMEOUT,
    ) -> Answers:
        """Open the store next to the outbox and build the poller (start ``poller.run`` yourself)."""
        store = await ResponseStore.open(
            settings.data_dir / ANSWERS_FILE, outbox_path=settings.outbox_path, bot_id=bot_id_of(settings.token)
        )
        poller = ResponsePoller(
            store, transport, updates_pipeline(pipelines), allowed_users=settings.allowed_users,
            clock=clock, metrics=metrics, poll_timeout=poll_timeout,
        )  # fmt: skip
        return cls(store, poller, clock=clock)

    async def aclose(self) -> None:
        await self.store.close()

    def status(self) -> dict[str, Any]:
        return {"poller": self.poller.status() if self.poller is not None else None}

    # ---- use cases ----------------------------------------------------------------------

    async def responses(
        self, limit: int = 10, since_minutes: int | None = None, *, now: float | None = None
    ) -> ResponseList:
        since_s = since_minutes * 60.0 if since_minutes is not None else None
        total, rows = await self.store.recent(limit=limit, since_s=since_s, now=now)
        return ResponseList(count=len(rows), total=total, responses=rows)

    async def clear(self, older_than_hours: int = 24, *, now: float | None = None) -> ClearResult:
        n = await self.store.delete_older_than(older_than_hours * 3600.0, now=now)
        return ClearResult(deleted_count=n, message=f"Cleared {n} old responses (older than {older_than_hours} h)")

    async def pending(self, since_minutes: int = 10, *, now: float | None = None) -> PendingResponses:
        total, rows = await self.store.recent(since_s=since_minutes * 60.0, now=now)
        actionable = [
            ActionableResponse(
                action=r.action, event_id=r.event_id, task_id=r.task_id, option=r.option,  # type: ignore[arg-type]
                user_id=r.user_id, username=r.username, timestamp=r.timestamp, callback_data=r.callback_data,
            )
            for r in rows
            if r.action in ACTIONABLE
        ]  # fmt: skip
        summary = PendingSummary(
            total_recent_responses=total,
            actionable_responses=len(actionable),
            pending_approvals=sum(a.action == "approve" for a in actionable),
            pending_denials=sum(a.action == "deny" for a in actionable),
            time_window_minutes=since_minutes,
        )
        return PendingResponses(
            summary=summary, actionable_responses=actionable, recommendations=_recommend(rows, actionable, summary)
        )

    async def wait(self, event_id: str, timeout_s: float, *, on_progress: ProgressFn | None = None) -> WaitResult:
        """The first answer to ``event_id``, as soon as it is stored, or a timeout result."""
        if await self.store.event_known(event_id) is False:
            raise UnknownEventError(
                f"No event {event_id!r} was sent by this server. Use the event_id returned by "
                "send_approval_request (or another send tool)."
            )
        clock = self.clock
        start = clock.monotonic()
        deadline = start + timeout_s
        next_report = start + self.progress_interval
        while True:
            changed = self.store.changed()  # taken before the read: a write in between wakes us
            found = await self.store.first_for_event(event_id)
            now = clock.monotonic()
            if found is not None:
                return WaitResult(status="answered", event_id=event_id, waited_seconds=round(now - start, 3),
                                  action=found.action, option=found.option, response=found)  # fmt: skip
            if now >= deadline:
                return WaitResult(status="timeout", event_id=event_id, waited_seconds=round(now - start, 3))
            if on_progress is not None and now >= next_report:
                elapsed = now - start
                await on_progress(elapsed, timeout_s, f"Waiting for an answer on Telegram ({elapsed:.0f}s of "
                                                      f"{timeout_s:.0f}s)")  # fmt: skip
                while next_report <= now:
                    next_report += self.progress_interval
            until = min(deadline, next_report) if on_progress is not None else deadline
            with clock.timeout_scope(max(0.0, until - now)):
                await changed.wait()


def _recommend(rows: list[TelegramResponse], actionable: list[ActionableResponse], s: PendingSummary) -> list[str]:
    out: list[str] = []
    window = f"the last {s.time_window_minutes} minutes"
    texts = sum(r.kind == "text" for r in rows)
    if not actionable:
        out.append(f"No button presses in {window}; nothing to act on.")

    def events(action: str) -> list[str]:
        return list(dict.fromkeys(a.event_id or a.task_id or "?" for a in actionable if a.action == action))

    if s.pending_approvals:
        out.append(f"{s.pending_approvals} approval(s): proceed with event(s) {_short(events('approve'))}.")
    if s.pending_denials:
        out.append(f"{s.pending_denials} denial(s): do not proceed with event(s) {_short(events('deny'))}; "
                   "ask the person what to change if unclear.")  # fmt: skip
    choices = [a for a in actionable if a.action == "option"]
    if choices:
        picked = [f"{a.option or '?'} (event {a.event_id or '?'})" for a in choices]
        out.append(f"{len(choices)} choice(s) made: {_short(picked)}.")
    by_event: dict[str, list[ActionableResponse]] = {}
    for a in actionable:  # newest first
        if a.event_id:
            by_event.setdefault(a.event_id, []).append(a)
    for event_id, answers in by_event.items():
        if len({(a.action, a.option) for a in answers}) > 1:
            latest = answers[0]
            out.append(f"Event {event_id} got conflicting answers; the latest ({latest.option or latest.action} "
                       f"at {latest.timestamp}) is the person's current decision.")  # fmt: skip
    unresolved = sum(a.event_id is None for a in actionable)
    if unresolved:
        out.append(f"{unresolved} press(es) could not be tied to an event sent by this server; check "
                   "callback_data and task_id.")  # fmt: skip
    if texts:
        out.append(f"{texts} text message(s) arrived in {window}; read them with get_telegram_responses.")
    return out
