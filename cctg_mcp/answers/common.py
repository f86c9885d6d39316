"""What both answer sources share: the pending-responses summary and the wait loop.

``Answers`` (direct mode, SQLite store fed by the getUpdates poller) and ``BridgeAnswers``
(bridge mode, the CCTelegram bridge's response files) differ only in where answers come
from and how a waiter learns that something changed; the summary of decisions and the
timing of ``wait_for_response`` (deadline, progress notifications) are the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cctg_mcp.answers.models import (
    ACTIONABLE,
    ActionableResponse,
    PendingResponses,
    PendingSummary,
    TelegramResponse,
    WaitResult,
)
from cctg_mcp.resilience.clock import Clock
from cctg_mcp.resilience.errors import ValidationError

#: ``await on_progress(elapsed_s, total_s, message)`` while waiting.
ProgressFn = Callable[[float, float, str], Awaitable[None]]


class UnknownEventError(ValidationError):
    """Raised when an answer tool names an event id this server never sent."""

    code = "UNKNOWN_EVENT"


def unknown_event(event_id: str) -> UnknownEventError:
    return UnknownEventError(
        f"No event {event_id!r} was sent by this server. Use the event_id returned by "
        "send_approval_request (or another send tool)."
    )


def _short(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def summarise_pending(total: int, rows: list[TelegramResponse], since_minutes: int) -> PendingResponses:
    """``process_pending_responses`` from the answers of the window (newest first)."""
    actionable = [
        ActionableResponse(
            action=r.action,  # type: ignore[arg-type]
            event_id=r.event_id,
            task_id=r.task_id,
            option=r.option,
            user_id=r.user_id,
            username=r.username,
            timestamp=r.timestamp,
            callback_data=r.callback_data,
        )
        for r in rows
        if r.action in ACTIONABLE
    ]
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


async def wait_for_answer(
    event_id: str,
    timeout_s: float,
    *,
    clock: Clock,
    check: Callable[[], Awaitable[TelegramResponse | None]],
    pause: Callable[[float], Awaitable[None]],
    progress_interval: float,
    on_progress: ProgressFn | None = None,
) -> WaitResult:
    """The first answer ``check()`` finds, or a timeout result after ``timeout_s``.

    ``pause(s)`` returns when something may have changed, or after at most ``s`` seconds
    (on ``clock``); ``check`` is called again after each pause."""
    start = clock.monotonic()
    deadline = start + timeout_s
    next_report = start + progress_interval
    while True:
        found = await check()
        now = clock.monotonic()
        if found is not None:
            return WaitResult(
                status="answered",
                event_id=event_id,
                waited_seconds=round(now - start, 3),
                action=found.action,
                option=found.option,
                response=found,
            )
        if now >= deadline:
            return WaitResult(
                status="timeout",
                event_id=event_id,
                waited_seconds=round(now - start, 3),
                message=f"No answer yet after {now - start:.0f}s; the question stays open. Call "
                f"wait_for_response again with event_id {event_id} to keep waiting.",
            )
        if on_progress is not None and now >= next_report:
            elapsed = now - start
            await on_progress(
                elapsed, timeout_s, f"Waiting for an answer on Telegram ({elapsed:.0f}s of {timeout_s:.0f}s)"
            )
            while next_report <= now:
                next_report += progress_interval
        until = min(deadline, next_report) if on_progress is not None else deadline
        await pause(max(0.0, until - now))


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
        out.append(
            f"{s.pending_denials} denial(s): do not proceed with event(s) {_short(events('deny'))}; "
            "ask the person what to change if unclear."
        )
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
            out.append(
                f"Event {event_id} got conflicting answers; the latest ({latest.option or latest.action} "
                f"at {latest.timestamp}) is the person's current decision."
            )
    unresolved = sum(a.event_id is None for a in actionable)
    if unresolved:
        out.append(
            f"{unresolved} press(es) could not be tied to an event sent by this server; check "
            "callback_data and task_id."
        )
    if texts:
        out.append(f"{texts} text message(s) arrived in {window}; read them with get_telegram_responses.")
    return out
