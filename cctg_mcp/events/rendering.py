"""Rendering events to Telegram messages: HTML text split into ≤ 4096-character parts, and
inline keyboards for approval requests. Pure functions, no I/O.

Lengths are measured conservatively: the *escaped* HTML text in UTF-16 code units (Telegram
counts UTF-16 units of the text after entity parsing, which is never longer). Markup (the
bold title, the italic footer) lives in short atomic blocks, so no tag spans two parts;
everything long is plain text, escaped piece by piece, so no cut lands inside an escape.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from cctg_mcp.events.catalogue import TELEGRAM_TEXT_LIMIT, Event, RenderedPart, escape_html

#: Markup blocks longer than this are rendered as plain (splittable) text instead.
_ATOMIC_MAX = 512
#: Don't start a plain-text block in a part with less room than this; start a new part.
_MIN_FILL = 256
CALLBACK_DATA_MAX_BYTES = 64

_EMOJI_BY_TYPE = {
    "task_completion": "✅",
    "build_completed": "✅",
    "test_passed": "✅",
    "pull_request_merged": "✅",
    "code_deployment": "🚀",
    "task_started": "🚀",
    "build_started": "🔨",
    "task_progress": "⏳",
    "progress_update": "⏳",
    "task_cancelled": "🚫",
    "error_occurred": "❌",
    "performance_alert": "⚠️",
    "alert_notification": "⚠️",
    "security_alert": "🛡️",
    "approval_request": "🔐",
    "user_response": "💬",
    "info_notification": "\u2139\ufe0f",
    "status_change": "🔄",
}
_EMOJI_BY_CATEGORY = {
    "Task Management": "📋",
    "Code Operations": "💻",
    "File System": "📁",
    "Build & Development": "🔨",
    "Git": "🌿",
    "System Monitoring": "📊",
    "User Interaction": "💬",
    "Notifications": "🔔",
    "Integration": "🔌",
    "Custom": "📌",
}
_PRIORITY_MARK = {"high": "🟠 high", "critical": "🔴 critical"}

#: data keys shown under the description, in this order, with their labels.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("results", "Results"),
    ("error_message", "Error"),
    ("exit_code", "Exit code"),
    ("files_affected", "Files"),
    ("duration_ms", "Duration"),
    ("duration", "Duration"),
    ("current_value", "Current value"),
    ("threshold", "Threshold"),
    ("severity", "Severity"),
    ("build_target", "Target"),
    ("test_count", "Tests"),
    ("tests_passed", "Passed"),
    ("tests_failed", "Failed"),
    ("coverage", "Coverage"),
    ("branch", "Branch"),
    ("commit", "Commit"),
    ("url", "Link"),
    ("memory_usage", "Memory"),
    ("cpu_usage", "CPU"),
)

_APPROVE_WORDS = {"approve", "approved", "yes", "allow", "accept", "ok", "confirm", "proceed", "continue", "lgtm", "go"}
_DENY_WORDS = {"deny", "denied", "no", "reject", "decline", "cancel", "abort", "stop", "block"}
_REF_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
_CALLBACK_RE = re.compile(r"(approve|deny|opt|ack):([A-Za-z0-9_-]{1,40}):(\d{1,3})")
_LEGACY_RE = re.compile(r"(approve|deny|ack)_([A-Za-z0-9_-]{1,64})")


def telegram_len(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def _char_cost(ch: str) -> int:
    """Escaped length of one character in UTF-16 units."""
    if ch == "&":
        return 5  # &amp;
    if ch in "<>":
        return 4  # &lt; &gt;
    return 2 if ord(ch) > 0xFFFF else 1


# -- splitting -------------------------------------------------------------------------------


def _take(text: str, budget: int) -> int:
    """How many characters of ``text`` to put in a part with ``budget`` units of room.

    Prefers a paragraph, then a line, then a word boundary (kept with the earlier piece);
    cuts hard only when a single word is longer than the room. Returns 0 if nothing fits.
    """
    used = 0
    end = 0
    for ch in text:
        cost = _char_cost(ch)
        if used + cost > budget:
            break
        used += cost
        end += 1
    if end == len(text) or end == 0:
        return end
    for sep, floor in (("\n\n", end // 2), ("\n", end // 2), (" ", end // 4)):
        pos = text.rfind(sep, 0, end)
        if pos >= 0 and pos + len(sep) > floor:
            return pos + len(sep)
    return end


@dataclass(frozen=True)
class _Block:
    """Either ``markup`` (atomic HTML, already escaped) or ``text`` (plain, splittable)."""

    markup: str | None = None
    text: str | None = None
    sep: str = "\n\n"  # put before the block when it does not start a part


def _pack(blocks: list[_Block], limit: int) -> list[str]:
    parts: list[str] = []
    cur = ""
    for block in blocks:
        sep = block.sep if cur else ""
        if block.markup is not None:
            if cur and telegram_len(cur + sep + block.markup) > limit:
                parts.append(cur)
                cur, sep = "", ""
            cur += sep + block.markup
            continue
        rest = block.text or ""
        while rest:
            room = limit - telegram_len(cur + sep)
            n = _take(rest, room) if room > 0 else 0
            if cur and n < len(rest) and (n == 0 or room < _MIN_FILL):
                parts.append(cur)  # too little room here: start the text in a new part
                cur, sep = "", ""
                continue
            cur += sep + escape_html(rest[:n])
            rest = rest[n:]
            sep = ""
            if rest:
                parts.append(cur)
                cur = ""
    if cur:
        parts.append(cur)
    return parts


def split_text(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Escape plain ``text`` into HTML parts of ≤ ``limit`` units; unescaping and joining the
    parts gives back ``text`` exactly."""
    if limit < 5:
        raise ValueError("limit must leave room for one escaped character")
    return _pack([_Block(text=text)], limit)


# -- events ----------------------------------------------------------------------------------


def emoji_for(event: Event) -> str:
    if event.type in _EMOJI_BY_TYPE:
        return _EMOJI_BY_TYPE[event.type]
    if event.type.endswith("_failed"):
        return "❌"
    return _EMOJI_BY_CATEGORY.get(event.category, "📌")


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if key == "duration_ms" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:g} ms"
    return str(value)


def _field_lines(data: dict[str, Any]) -> str:
    lines: list[str] = []
    seen_labels: set[str] = set()
    for key, label in _FIELDS:
        value = data.get(key)
        if value is None or value == "" or value == [] or label in seen_labels:
            continue
        seen_labels.add(label)
        lines.append(f"• {label}: {_format_value(key, value)}")
    return "\n".join(lines)


def callback_ref(event_id: str) -> str:
    """The event reference used in callback data: the id itself if short and safe, else a hash."""
    if _REF_RE.fullmatch(event_id):
        return event_id
    return hashlib.sha256(event_id.encode()).hexdigest()[:16]


def _verb(option: str) -> str:
    words = re.findall(r"[a-z]+", option.lower())
    first = words[0] if words else ""
    if first in _APPROVE_WORDS:
        return "approve"
    if first in _DENY_WORDS:
        return "deny"
    return "opt"


def approval_keyboard(event: Event) -> dict[str, Any]:
    """One button per ``data["options"]`` (default Approve / Deny), ``callback_data`` ≤ 64 bytes."""
    raw = event.data.get("options")
    options = [str(o) for o in raw] if isinstance(raw, (list, tuple)) and raw else ["Approve", "Deny"]
    ref = callback_ref(event.event_id)
    icons = {"approve": "✅ ", "deny": "❌ ", "opt": ""}
    buttons = []
    for index, option in enumerate(options[:100]):  # Telegram allows at most 100 buttons
        verb = _verb(option)
        label = option.strip()[:64] or f"Option {index + 1}"
        if verb != "opt" and label[:1].isalnum():
            label = icons[verb] + label
        buttons.append({"text": label, "callback_data": f"{verb}:{ref}:{index}"})
    short = len(buttons) <= 3 and all(len(b["text"]) <= 20 for b in buttons)
    rows = [buttons] if short else [[b] for b in buttons]
    return {"inline_keyboard": rows}


def ack_keyboard(event: Event) -> dict[str, Any]:
    return {"inline_keyboard": [[{"text": "✅ Acknowledge", "callback_data": f"ack:{callback_ref(event.event_id)}:0"}]]}


def parse_callback_data(data: str) -> tuple[str, str, int] | None:
    """``(verb, ref, option_index)`` from our callback data, or from the bridge's legacy
    ``approve_<task_id>`` / ``deny_<task_id>`` / ``ack_<task_id>`` (index 0, 1, 0)."""
    m = _CALLBACK_RE.fullmatch(data)
    if m:
        return m.group(1), m.group(2), int(m.group(3))
    m = _LEGACY_RE.fullmatch(data)
    if m:
        return m.group(1), m.group(2), 1 if m.group(1) == "deny" else 0
    return None


def render_event(event: Event, *, ack_button: bool = False) -> list[RenderedPart]:
    """Render ``event`` as one or more Telegram HTML messages (the keyboard on the last)."""
    title = event.title.strip() or event.type.replace("_", " ").capitalize()
    head = f"{emoji_for(event)} <b>{escape_html(title)}</b>"
    blocks = [_Block(markup=head) if telegram_len(head) <= _ATOMIC_MAX else _Block(text=title)]
    description = event.description.strip()
    if description:
        blocks.append(_Block(text=description))
    fields = _field_lines(event.data)
    if fields:
        blocks.append(_Block(text=fields))
    footer = [escape_html(event.source[:64]), f"#{escape_html(event.event_id[:8])}"]
    if event.priority in _PRIORITY_MARK:
        footer.append(_PRIORITY_MARK[event.priority])
    blocks.append(_Block(markup=f"<i>{' · '.join(footer)}</i>"))
    texts = [t for t in _pack(blocks, TELEGRAM_TEXT_LIMIT) if t.strip()]
    parts = [RenderedPart(text=t) for t in texts]
    if event.type == "approval_request":
        parts[-1].reply_markup = approval_keyboard(event)
    elif ack_button and event.type == "task_completion":
        parts[-1].reply_markup = ack_keyboard(event)
    return parts
