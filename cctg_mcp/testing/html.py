"""Telegram's validation of ``sendMessage`` input: HTML entity parsing, length, keyboards.

Mirrors what the Bot API rejects with a 400, so escaping bugs fail in tests.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

TEXT_LIMIT = 4096
SUPPORTED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a"}
    | {"tg-spoiler", "tg-emoji", "span", "blockquote"}
)
_TAG_RE = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)"
    r"((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'<>]+))?)*)\s*>"
)
_ENTITY_RE = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_SPECIAL_RE = re.compile(r"[<&]")


class BadRequest(Exception):
    """A Telegram 400; ``description`` is the full Bot API description."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Bad Request: {detail}")
        self.description = f"Bad Request: {detail}"


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def parse_telegram_html(text: str) -> str:
    """Parse ``parse_mode=HTML`` text like Telegram; return the plain text or raise BadRequest."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while True:
        m = _SPECIAL_RE.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        j = m.start()
        out.append(text[i:j])
        where = f"at byte offset {len(text[:j].encode())}"
        if text[j] == "&":
            ent = _ENTITY_RE.match(text, j)
            if ent is None:
                raise BadRequest(f"can't parse entities: Unsupported entity {where}")
            out.append(html.unescape(ent.group()))
            i = ent.end()
            continue
        tag = _TAG_RE.match(text, j)
        if tag is None:
            raise BadRequest(f"can't parse entities: Unexpected character '<' {where}")
        name = tag.group(2).lower()
        if name not in SUPPORTED_TAGS:
            raise BadRequest(f'can\'t parse entities: Unsupported start tag "{name}" {where}')
        if tag.group(1):
            if not stack or stack[-1] != name:
                raise BadRequest(f'can\'t parse entities: Unexpected end tag "{name}" {where}')
            stack.pop()
        else:
            stack.append(name)
        i = tag.end()
    if stack:
        raise BadRequest(f"can't parse entities: Can't find end tag corresponding to start tag {stack[-1]}")
    return "".join(out)


def validate_markup(raw: Any) -> dict[str, Any] | None:
    """The ``reply_markup`` as Telegram would accept it (None when absent), or raise BadRequest."""
    if raw is None or raw == "":
        return None
    try:
        markup = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise BadRequest("can't parse reply keyboard markup JSON object") from None
    if not isinstance(markup, dict):
        raise BadRequest("can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard", [])
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise BadRequest('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not button.get("text"):
            raise BadRequest("BUTTON_TEXT_INVALID")
        data = button.get("callback_data")
        if data is not None and not (isinstance(data, str) and 1 <= len(data.encode()) <= 64):
            raise BadRequest("BUTTON_DATA_INVALID")
    return markup


def chat_id_of(value: Any) -> int | None:
    """A ``chat_id`` parameter as an int, or None when it is not a numeric id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None
