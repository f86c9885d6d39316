"""The CCTelegram bridge's file protocol: event files out, response files in.

Event files (REFERENCE.md §B 3.2-3.4) go to ``CC_TELEGRAM_EVENTS_DIR`` as
``<task_id>_<epoch_ms>.json``: pretty JSON with exactly the fields the bridge's ``Event``
struct requires (``event_id``, ``type``, ``source``, ``timestamp`` RFC 3339 UTC,
``task_id``, ``title``, ``description``, ``data``), ``data`` completed so the bridge's
``validate_event`` accepts it (``approval_prompt`` and ``options`` for approvals, ``status``
for task completions). A write is atomic: a hidden ``.<name>.<random>.tmp`` in the same
directory (mode 0600, never matched by the bridge's ``*.json`` watcher), fsync, ``os.replace``,
fsync of the directory. A crash at any point leaves either no file or the whole file.

The file name is derived from the event (its task id and timestamp), so writing the same
event again (a retry after a crash) replaces its own file instead of adding a duplicate; a
different event that would land on the same name moves to the next free millisecond.
Nothing from an event reaches a path except its task id, which must be 1-64 characters of
``[A-Za-z0-9_-]`` (checked again here, whatever the caller checked).

OS errors become our errors here: ENOSPC a ``ResourceError`` (the row stays queued),
EACCES/EPERM/EROFS/ENOTDIR an ``EventsDirectoryError`` (permanent: the row goes dead with a
message naming the directory and the fix), EMFILE/EAGAIN a retryable ``FilesystemError``.

Response files (§B 3.6) come back from the bridge as ``telegram_callback_*.json`` and
``telegram_response_*.json``; ``read_bridge_responses`` turns them into the answers'
``TelegramResponse`` shape and skips anything malformed (and ``bridge_mode.json``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from cctg_mcp.answers.models import Action, TelegramResponse
from cctg_mcp.events.catalogue import Event
from cctg_mcp.events.rendering import parse_callback_data
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import (
    BaseResilienceError,
    ConfigurationError,
    ErrorCategory,
    FilesystemError,
    RecoveryStrategy,
    ResourceError,
    Severity,
    ValidationError,
    classify,
)

#: What a task id may be in a file name (the bridge's own ``CallbackHandler`` rule).
SAFE_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DEFAULT_OPTIONS = ("Approve", "Deny")
#: Our priorities in the bridge's ``data.priority`` vocabulary (low|normal|high|urgent).
BRIDGE_PRIORITY = {"low": "low", "normal": "normal", "high": "high", "critical": "urgent"}
RESPONSE_FILE = re.compile(r"telegram_(callback|response)_[A-Za-z0-9_.-]*\.json")
MAX_RESPONSE_BYTES = 65_536

Opener = Callable[[str, int, int], int]


class EventsDirectoryError(FilesystemError, ConfigurationError):
    """The events directory cannot be written (permissions, read-only, not a directory).

    A filesystem error that retrying cannot fix: a configuration problem for a person, so
    the delivery goes dead (the dispatcher treats configuration errors as permanent)."""

    code = "EVENTS_DIR_UNWRITABLE"
    category = ErrorCategory.FILESYSTEM
    severity = Severity.CRITICAL
    retryable = False
    counts_as_failure = False
    default_strategy = RecoveryStrategy.MANUAL


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(value: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 time as an aware UTC datetime (naive means UTC), or None.

    Accepts ``Z`` and any number of fractional digits (chrono writes nanoseconds)."""
    text = _FRACTION.sub(r"\1", value.strip().upper().replace("Z", "+00:00"), count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(value: str | None = None) -> tuple[str, int]:
    """``(timestamp, epoch_ms)`` in UTC with milliseconds (``2024-05-01T12:00:00.123Z``).

    ``value`` is an RFC 3339 time; None or unparsable: now."""
    moment = parse_time(value) if value else None
    if moment is None:
        moment = datetime.fromtimestamp(SYSTEM_CLOCK.time(), UTC)
    epoch_ms = int(moment.timestamp() * 1000)
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"), epoch_ms


def safe_task_id(task_id: str) -> str:
    """The task id, if it is safe in a file name; otherwise a ``ValidationError``."""
    if not isinstance(task_id, str) or not SAFE_TASK_ID.fullmatch(task_id):
        raise ValidationError(
            f"task_id {task_id!r} is refused: event files are named after it, so it must be 1-64 "
            "characters of letters, digits, - and _."
        )
    return task_id


def event_file_name(task_id: str, epoch_ms: int) -> str:
    return f"{safe_task_id(task_id)}_{int(epoch_ms)}.json"


def event_file_body(event: Event) -> tuple[dict[str, Any], int]:
    """The JSON object the bridge reads, and the event's time in epoch milliseconds."""
    data = dict(event.data)
    if event.type == "approval_request":
        prompt = data.get("approval_prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            data["approval_prompt"] = event.description
        options = data.get("options")
        if not (isinstance(options, list) and options and all(isinstance(o, str) and o for o in options)):
            data["options"] = list(DEFAULT_OPTIONS)
    if event.type == "task_completion" and not data.get("status"):
        data["status"] = "completed"
    data.setdefault("priority", BRIDGE_PRIORITY.get(event.priority, "normal"))
    timestamp, epoch_ms = rfc3339(event.timestamp)
    body = {
        "event_id": event.event_id,
        "type": event.type,
        "source": event.source,
        "timestamp": timestamp,
        "task_id": safe_task_id(event.task_id),
        "title": event.title,
        "description": event.description,
        "data": data,
    }
    return body, epoch_ms


_ADVICE = {
    "EACCES": "permission denied: make it writable by the user running cctg-mcp (e.g. chmod u+rwx) or set "
    "CC_TELEGRAM_EVENTS_DIR to a writable directory",
    "EPERM": "operation not permitted: make it writable by the user running cctg-mcp or set "
    "CC_TELEGRAM_EVENTS_DIR to a writable directory",
    "EROFS": "the file system is read-only: set CC_TELEGRAM_EVENTS_DIR to a directory on a writable file system",
    "ENOTDIR": "it is not a directory: set CC_TELEGRAM_EVENTS_DIR to a directory",
    "EISDIR": "a directory is in the way of the event file: remove it",
    "ENOENT": "it does not exist and could not be created: create it or fix CC_TELEGRAM_EVENTS_DIR",
}


class EventFileWriter:
    """Writes event files atomically into one directory. ``opener`` is the test seam (``os.open``)."""

    def __init__(self, events_dir: Path, *, opener: Opener | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.events_dir = Path(events_dir)
        self.clock = clock
        self.opener: Opener = opener or os.open
        self.last_written_at: float | None = None  # epoch seconds

    async def write(self, event: Event) -> Path:
        return await anyio.to_thread.run_sync(self.write_sync, event)

    def write_sync(self, event: Event) -> Path:
        body, epoch_ms = event_file_body(event)
        payload = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            for attempt in (1, 2):
                try:
                    path = self._write_once(event, epoch_ms, payload)
                    break
                except FileNotFoundError:  # the directory vanished under us: recreate it once
                    if attempt == 2:
                        raise
        except OSError as exc:
            raise self.classify(exc) from exc
        self.last_written_at = self.clock.time()
        return path

    def _write_once(self, event: Event, epoch_ms: int, payload: bytes) -> Path:
        directory = self.events_dir
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._target(directory, event, epoch_ms)
        tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = self.opener(str(tmp), flags, 0o600)
        try:
            with open(fd, "wb", closefd=True) as handle:
                with contextlib.suppress(AttributeError, NotImplementedError):
                    os.fchmod(handle.fileno(), 0o600)  # whatever the umask
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
        return target

    @staticmethod
    def _target(directory: Path, event: Event, epoch_ms: int) -> Path:
        """``<task_id>_<ms>.json``: this event's own file, or the next free millisecond."""
        for offset in range(1000):
            target = directory / event_file_name(event.task_id, epoch_ms + offset)
            if target.parent != directory:  # cannot happen with a safe task id; refuse anyway
                raise ValidationError(f"event file {target} would leave {directory}")
            try:
                existing = json.loads(target.read_bytes())
            except FileNotFoundError:
                return target
            except (OSError, ValueError):
                continue
            if isinstance(existing, dict) and existing.get("event_id") == event.event_id:
                return target  # the same event written again: replace it, do not duplicate
        raise ResourceError(f"no free event file name for task {event.task_id} in {directory}", code="EEXIST")

    def classify(self, exc: OSError) -> BaseResilienceError:
        error = classify(exc)
        where = str(self.events_dir)
        reason = exc.strerror or type(exc).__name__
        if isinstance(error, FilesystemError) and not error.retryable:
            advice = _ADVICE.get(error.code, "fix the directory or set CC_TELEGRAM_EVENTS_DIR")
            return EventsDirectoryError(
                f"Cannot write event files to {where} ({error.code}: {reason}): {advice}.", code=error.code
            )
        if isinstance(error, ResourceError) and exc.errno == errno.ENOSPC:
            return ResourceError(
                f"Cannot write event files to {where}: no space left on device (ENOSPC). The event stays "
                "queued and is written when space is freed.",
                code="ENOSPC",
                severity=Severity.CRITICAL,
            )
        error.message = f"Writing an event file to {where} failed: {error.message}"
        return error


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable. Some file systems cannot fsync a directory: that is not an error."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def waiting_event_files(events_dir: Path) -> tuple[int, float | None, float | None]:
    """``(count, oldest mtime, newest mtime)`` of event files not yet consumed by the bridge."""
    count, oldest, newest = 0, None, None
    try:
        entries = list(os.scandir(events_dir))
    except OSError:
        return 0, None, None
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                count += 1
                mtime = entry.stat(follow_symlinks=False).st_mtime
                newest = mtime if newest is None else max(newest, mtime)
                oldest = mtime if oldest is None else min(oldest, mtime)
    return count, oldest, newest


def event_file_waiting(events_dir: Path, task_id: str, event_id: str) -> Path | None:
    """The event file written for ``event_id`` that the bridge has not consumed yet, if any
    (files are named ``<task_id>_<epoch ms>.json``; the body names the event)."""
    try:
        candidates = sorted(events_dir.glob(f"{safe_task_id(task_id)}_*.json"))
    except (OSError, ValidationError):
        return None
    for path in candidates:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")).get("event_id") == event_id:
                return path
    return None


# ---- responses (bridge -> us) ------------------------------------------------------------

_VERB_ACTION: dict[str, Action] = {"approve": "approve", "deny": "deny", "ack": "acknowledge", "opt": "option"}
_VERB_LABEL = {"approve": "Approve", "deny": "Deny", "ack": "Acknowledge"}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parse_response(name: str, raw: bytes, resolve: Callable[[str], str | None] | None) -> TelegramResponse | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    user_id, stamp = _int(doc.get("user_id")), _str(doc.get("timestamp"))
    if user_id is None or not stamp:
        return None
    moment = parse_time(stamp)
    if moment is None:
        return None
    received = moment.timestamp()
    common: dict[str, Any] = {
        "id": zlib.crc32(name.encode()),
        "update_id": 0,
        "user_id": user_id,
        "username": _str(doc.get("username")),
        "first_name": _str(doc.get("first_name")),
        "timestamp": rfc3339(stamp)[0],
        "received_at": received,
    }
    if name.startswith("telegram_callback_"):
        data = _str(doc.get("callback_data"))
        if not data:
            return None
        parsed = parse_callback_data(data)
        action: Action = "other"
        task_id: str | None = None
        option: str | None = None
        index: int | None = None
        if parsed is not None:
            verb, ref, index = parsed
            action = _VERB_ACTION.get(verb, "other")
            option = _VERB_LABEL.get(verb)
            task_id = ref if ":" not in data else None  # the bridge's approve_<task_id> form
        elif data.startswith("details_"):
            task_id = data[len("details_") :] or None
        event_id = resolve(task_id) if (resolve is not None and task_id) else None
        return TelegramResponse(
            kind="callback",
            action=action,
            event_id=event_id,
            task_id=task_id,
            option=option,
            option_index=index,
            callback_data=data,
            **common,
        )
    text = _str(doc.get("message_text"))
    if text is None:
        return None
    return TelegramResponse(kind="text", action="text", event_id=None, text=text, **common)


def read_bridge_responses(
    responses_dir: Path,
    since: float | None = None,
    *,
    resolve: Callable[[str], str | None] | None = None,
) -> list[TelegramResponse]:
    """The bridge's response files as ``TelegramResponse``, newest first.

    ``since``: only answers at or after this epoch time (their own ``timestamp``).
    ``resolve(task_id) -> event_id`` ties ``approve_<task_id>`` presses to events when given.
    Malformed files, ``bridge_mode.json`` and anything not named like a response are skipped."""
    try:
        entries = sorted(os.scandir(responses_dir), key=lambda e: e.name)
    except OSError:
        return []
    out: list[TelegramResponse] = []
    for entry in entries:
        if not RESPONSE_FILE.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat().st_size > MAX_RESPONSE_BYTES:
                continue
            raw = Path(entry.path).read_bytes()
        except OSError:
            continue
        response = _parse_response(entry.name, raw, resolve)
        if response is not None and (since is None or response.received_at >= since):
            out.append(response)
    out.sort(key=lambda r: r.received_at, reverse=True)
    return out
