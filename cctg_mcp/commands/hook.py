"""``cctg-mcp hook``: a Claude Code hook event on stdin becomes a Telegram notification.

Claude Code runs the command with the event as JSON on stdin (``hook_event_name``,
``session_id``, ``cwd``; ``message`` / ``title`` for ``Notification``; ``stop_hook_active``
for ``Stop``). A hook must never break the agent, so this command

- exits 0 whatever happens, and prints nothing on stdout (which Claude Code may read as a
  decision); one line on stderr says what happened;
- returns within ``LIMIT`` (2 s) of its process start: a watchdog ends the process at
  ``LIMIT - MARGIN`` even if a disk or a socket hangs.

The notification goes through the same durable outbox as the server's: it is committed first,
then this process tries to deliver it itself, leased (so nobody sends it twice), until its
deadline. What is not delivered by then stays queued, its lease is handed back, and a running
server (whose dispatcher looks for due rows at least every 5 s) or the next one to start
delivers it. While the person's mode holds the event (muted; local for one asking for an
answer), it is only committed, unleased, and goes out when the mode is switched back.

Imports are kept to the delivery path (not ``app.py``, which loads the whole server): on a
busy machine importing the server alone can take most of the two seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any

#: Claude Code's hook events (https://docs.anthropic.com/en/docs/claude-code/hooks).
HOOK_EVENTS = (
    "PreToolUse",
    "PostToolUse",
    "Notification",
    "UserPromptSubmit",
    "Stop",
    "SubagentStop",
    "PreCompact",
    "SessionStart",
    "SessionEnd",
)
DEFAULT_EVENTS = ("Stop", "Notification")
#: Seconds from process start within which the command returns, and the margin kept for exiting.
LIMIT = 2.0
MARGIN = 0.25
#: Below this many seconds left, the hook only commits the event and leaves delivery to a server.
MIN_ATTEMPT = 0.15
MAX_INPUT = 1 << 20
#: Seconds this process leases the rows it tries to send: if it dies, a server takes them back then.
LEASE = 5.0


def _say(text: str) -> None:
    try:
        sys.stderr.write(f"cctg-mcp hook: {text}\n")
        sys.stderr.flush()
    except Exception:  # stderr closed: nothing to tell anyone
        pass


def process_started_at() -> float:
    """When this process started (wall clock), so the 2 s include the interpreter's start-up.

    Read from /proc on Linux; elsewhere the time the ``cctg_mcp`` package was imported, which
    misses only the interpreter's own start."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return time.time() - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        from cctg_mcp import IMPORTED_AT

        return IMPORTED_AT


def parse_events(raw: str | None) -> tuple[str, ...]:
    """``--events Stop,Notification``; unknown names are reported and skipped, never fatal."""
    if raw is None:
        return DEFAULT_EVENTS
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in HOOK_EVENTS]
    if unknown:
        _say(f"ignoring unknown event name(s) {', '.join(unknown)}; known: {', '.join(HOOK_EVENTS)}")
    return tuple(n for n in names if n in HOOK_EVENTS)


@dataclass(frozen=True)
class Notice:
    """What the person is told about one hook event."""

    type: str
    title: str
    description: str
    priority: str
    data: dict[str, Any]


def _text(value: Any, limit: int) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def notice_for(payload: dict[str, Any], wanted: tuple[str, ...]) -> Notice | str:
    """The notification for ``payload``, or why there is none."""
    name = _text(payload.get("hook_event_name"), 64)
    if not name:
        return "no hook_event_name in the input; nothing sent"
    if name not in wanted:
        return f"{name} is not in --events ({','.join(wanted) or 'none'}); nothing sent"
    cwd = _text(payload.get("cwd"), 500)
    session = _text(payload.get("session_id"), 100)
    project = PurePath(cwd).name if cwd else "an unknown folder"
    where = "\n".join(x for x in (f"Folder: {cwd}" if cwd else "", f"Session: {session[:8]}" if session else "") if x)
    data = {"hook_event_name": name, "session_id": session or None, "cwd": cwd or None}
    if name == "Stop":
        if payload.get("stop_hook_active") is True:
            return "Stop with stop_hook_active: another stop hook keeps Claude going; nothing sent"
        return Notice(
            "task_completion",
            f"Claude Code finished in {project}"[:200],
            f"Claude stopped and waits for you.\n{where}".strip(),
            "normal",
            data,
        )
    if name == "Notification":
        message = _text(payload.get("message"), 2000) or "Claude Code is waiting for you."
        title = _text(payload.get("title"), 150) or "Claude Code needs you"
        return Notice("info_notification", f"{title} ({project})"[:200], f"{message}\n{where}".strip(), "high", data)
    if name == "SubagentStop":
        return Notice(
            "info_notification", f"A subagent finished in {project}"[:200], where or "A subagent finished.", "low", data
        )
    return Notice("info_notification", f"Claude Code: {name} in {project}"[:200], where or name, "normal", data)


def read_input(stream: IO[bytes], timeout: float) -> bytes | None:
    """Up to 1 MiB from ``stream``, or None if it does not end within ``timeout`` seconds."""
    box: list[bytes] = []

    def read() -> None:
        try:
            box.append(stream.read(MAX_INPUT))
        except Exception:
            box.append(b"")

    reader = threading.Thread(target=read, name="hook-stdin", daemon=True)
    reader.start()
    reader.join(max(0.0, timeout))
    return box[0] if box else None


def _watchdog(at: float) -> None:
    """End the process at wall-clock ``at``, whatever it is doing (a hung disk or socket)."""

    def bail() -> None:
        committed, outcome = _STATE["committed"], _STATE["outcome"]
        if outcome:  # delivery finished (or partly): say what was observed, not "queued"
            _say(f"{outcome} (out of time while closing)")
        elif committed:
            _say(f"{committed} queued (out of time; a running server delivers it once the lease of {LEASE:g} s ends)")
        else:
            _say("out of time before the event was committed; nothing sent")
        os._exit(0)

    timer = threading.Timer(max(0.0, at - time.time()), bail)
    timer.daemon = True
    timer.start()


def run_hook(events: str | None = None, *, stdin: IO[bytes] | None = None, limit: float = LIMIT) -> int:
    """The ``hook`` command. Always returns 0."""
    started = process_started_at()
    end = started + limit - MARGIN
    _watchdog(end)
    logging.disable(logging.CRITICAL)  # one line on stderr says what happened; no token-bearing noise
    try:
        wanted = parse_events(events)
        raw = read_input(stdin if stdin is not None else sys.stdin.buffer, min(1.0, end - time.time() - 0.3))
        if raw is None:
            _say("stdin did not end in time; nothing sent")
            # The reader thread still holds stdin's lock, which aborts a normal interpreter exit.
            os._exit(0)
        try:
            payload = json.loads(raw.decode("utf-8", errors="replace") or "null")
        except ValueError:
            _say("the input is not JSON; nothing sent")
            return 0
        if not isinstance(payload, dict):
            _say("the input is not a JSON object; nothing sent")
            return 0
        notice = notice_for(payload, wanted)
        if isinstance(notice, str):
            _say(notice)
            return 0
        import anyio

        with contextlib.redirect_stdout(sys.stderr):  # stdout is Claude Code's: nothing may land there
            _say(anyio.run(_notify, notice, end))
    except BaseException as exc:  # a hook must never fail the agent
        from cctg_mcp.resilience.errors import redact

        _say(f"nothing sent: {redact(str(exc))[:300] or type(exc).__name__}")
    return 0


#: What the watchdog can truthfully say if it has to end the process.
_STATE = {"committed": "", "outcome": ""}


async def _notify(notice: Notice, end: float) -> str:
    """Commit the notice to the outbox (light imports first), then try to deliver it before
    ``end`` (wall clock) with the dispatcher's own ``deliver``, leased to this process."""
    import anyio

    from cctg_mcp.config import load_settings
    from cctg_mcp.delivery.mode import MODE_FILE, ModeStore
    from cctg_mcp.delivery.outbox import Outbox
    from cctg_mcp.events.catalogue import Event, event_priority
    from cctg_mcp.resilience.config import load_resilience_config

    settings = load_settings()
    problems = settings.problems()
    if problems:
        return "not configured, nothing sent: " + " ".join(problems)
    config = load_resilience_config(dict(os.environ), settings.config_path)
    event_id = str(uuid.uuid4())
    event = Event(
        event_id=event_id,
        type=notice.type,
        title=notice.title,
        description=notice.description,
        source="claude-code-hook",
        task_id=event_id,
        data=notice.data,
        # The configured events.<type>.priority, as the service gives; else the hook's own.
        priority=event_priority(notice.type, config.events, notice.priority),  # type: ignore[arg-type]
    )
    # The person's mode (muted, local) holds the event as it holds the server's; in bridge
    # delivery the bridge owns the mode, as in the dispatcher.
    held = ModeStore(settings.data_dir / MODE_FILE).hold_reason(event) if settings.delivery == "telegram" else None
    recipients = settings.recipients()  # as NotificationService.recipients()
    owner = f"hook-{uuid.uuid4().hex[:12]}"
    outbox = await Outbox.open(
        settings.outbox_path, max_pending=settings.outbox_max_pending, max_bytes=settings.outbox_max_bytes
    )
    try:
        # With Redis coordination the bot's budget lives in Redis, which this short-lived
        # process does not join: it only commits, and a server on this data dir sends.
        shared = settings.redis_url is not None
        attempt = held is None and not shared and end - time.time() - 0.2 >= MIN_ATTEMPT
        claimed = await outbox.enqueue(event, recipients, lease=(owner, LEASE) if attempt else None) or []
        _STATE["committed"] = event_id
        if held is not None:
            return f"{event_id} queued ({held}: the mode holds it; it goes out when the mode is switched back)"
        if shared:
            return f"{event_id} queued (Redis coordination: a server on this data dir sends it, in the shared budget)"
        budget = end - time.time() - 0.2
        if not attempt or budget < MIN_ATTEMPT:
            return f"{event_id} queued (no time left to send it; a running server will)"

        def line(outcomes: list[Any]) -> str:
            if settings.delivery == "bridge":  # a written file is not a delivery until the bridge takes it
                return f"{event_id} " + ", ".join(
                    "event file written for the bridge" if o.status == "delivered" else o.status for o in outcomes
                )
            done = ", ".join(f"chat {o.chat_id}: {o.status}" for o in sorted(outcomes, key=lambda o: o.chat_id))
            rest = len(claimed) - len(outcomes)
            return f"{event_id} {done}" + (f"; {rest} more queued" if rest > 0 else "")

        def record(outcomes: list[Any]) -> None:
            _STATE["outcome"] = line(outcomes)  # what the watchdog says if it ends the process now

        try:
            with anyio.move_on_after(budget):
                return line(await _deliver(settings, config, outbox, owner, claimed, budget, record))
            return (
                _STATE["outcome"] or f"{event_id} queued (not delivered within {budget:.2f} s; a running server will)"
            )
        finally:
            with anyio.CancelScope(shield=True):  # hand the lease back at once: a server may take it now
                await outbox.release_owner(owner)
    finally:
        with anyio.CancelScope(shield=True):
            await outbox.close()


async def _deliver(
    settings: Any,
    config: Any,
    outbox: Any,
    owner: str,
    claimed: list[Any],
    budget: float,
    record: Callable[[list[Any]], None],
) -> list[Any]:
    """A one-shot delivery path: the dispatcher's ``deliver`` without its background loop."""
    import anyio

    from cctg_mcp.delivery.dispatcher import Dispatcher
    from cctg_mcp.delivery.local_coordination import LocalCoordinator
    from cctg_mcp.delivery.pacing import Pacer
    from cctg_mcp.resilience.clock import SYSTEM_CLOCK
    from cctg_mcp.resilience.pipeline import PipelineSet

    pipelines = PipelineSet(config)
    # The bot's rate budget is shared with every server on this data dir (coordination).
    coordinator = LocalCoordinator(settings.data_dir)
    await coordinator.start()
    pacer = Pacer(settings.pacing, shared=coordinator)
    transport: Any = None
    dispatcher: Any
    if settings.delivery == "bridge":
        from cctg_mcp.delivery.bridge import bridge_dispatcher

        dispatcher = bridge_dispatcher(settings, outbox, pipelines, pacer)
    else:
        from cctg_mcp.transports.telegram import TelegramTransport

        transport = TelegramTransport(settings.token, settings.api_base_url, timeout=budget, connect_timeout=budget)
        dispatcher = Dispatcher(
            outbox, transport, pipelines.for_component("telegram"), pacer, lease_s=LEASE, send_timeout_s=budget
        )
    dispatcher.owner = owner
    deadline = SYSTEM_CLOCK.monotonic() + budget
    outcomes: list[Any] = []
    try:

        async def one(delivery: Any) -> None:
            outcomes.append(await dispatcher.deliver(delivery, deadline=deadline))
            record(list(outcomes))

        async with anyio.create_task_group() as tg:
            for delivery in claimed:
                tg.start_soon(one, delivery)
    finally:
        with anyio.CancelScope(shield=True):
            if transport is not None:
                await transport.aclose()
            await coordinator.aclose()
    return sorted(outcomes, key=lambda o: o.chat_id)
