"""What a permission request shows the person: a readable, bounded summary of a tool call.

Plain text (the renderer escapes it for Telegram's HTML): the command for ``Bash``, the path
and a diff excerpt for ``Edit`` / ``MultiEdit`` / ``Write``, the URL for ``WebFetch``, the
main argument for the other built-in tools, compact JSON for anything else. Every field is
cut to a bound and the whole to ``limit`` characters, so a huge input cannot flood the chat
or break Telegram's 4096-character limit. Pure functions, no I/O.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

SUMMARY_LIMIT = 1500
_FIELD_LIMIT = 600
_DIFF_LINES = 24


def clip(text: str, limit: int) -> str:
    """``text`` without control characters (tabs and newlines kept), at most ``limit`` characters."""
    clean = "".join(c if c in "\n\t" or (c.isprintable() and c not in "\u2028\u2029") else " " for c in text)
    if len(clean) <= limit:
        return clean
    more = len(clean) - limit
    return clean[: max(0, limit - 40)].rstrip() + f"… ({more} more characters)"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _diff(old: str, new: str) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=1))[2:]  # drop ---/+++
    if len(lines) > _DIFF_LINES:
        lines = [*lines[:_DIFF_LINES], f"… ({len(lines) - _DIFF_LINES} more diff lines)"]
    return "\n".join(line[:200] for line in lines)


def _bash(i: dict[str, Any]) -> list[str]:
    out = [f"$ {clip(_str(i.get('command', '')), _FIELD_LIMIT)}"]
    if i.get("description"):
        out.append(f"Why: {clip(_str(i['description']), 200)}")
    return out


def _edit(i: dict[str, Any]) -> list[str]:
    out = [f"File: {clip(_str(i.get('file_path', '?')), 300)}"]
    if "edits" in i and isinstance(i["edits"], list):  # MultiEdit
        edits = [e for e in i["edits"] if isinstance(e, dict)]
        out.append(f"{len(edits)} edit(s)")
        pairs = [(_str(e.get("old_string", "")), _str(e.get("new_string", ""))) for e in edits[:3]]
    else:
        pairs = [(_str(i.get("old_string", "")), _str(i.get("new_string", "")))]
        if i.get("replace_all"):
            out.append("(every occurrence)")
    out.extend(clip(_diff(old, new), _FIELD_LIMIT) for old, new in pairs)
    return out


def _write(i: dict[str, Any]) -> list[str]:
    content = _str(i.get("content", ""))
    lines = content.splitlines()
    out = [f"File: {clip(_str(i.get('file_path', '?')), 300)} (write {len(lines)} lines, {len(content)} characters)"]
    excerpt = "\n".join(f"+{line[:200]}" for line in lines[:_DIFF_LINES])
    if len(lines) > _DIFF_LINES:
        excerpt += f"\n… ({len(lines) - _DIFF_LINES} more lines)"
    out.append(clip(excerpt, _FIELD_LIMIT))
    return out


def _fields(*names: str) -> Callable[[dict[str, Any]], list[str]]:
    def show(i: dict[str, Any]) -> list[str]:
        return [f"{n}: {clip(_str(i[n]), 400)}" for n in names if i.get(n) not in (None, "")]

    return show


_BY_TOOL: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "Bash": _bash,
    "Edit": _edit,
    "MultiEdit": _edit,
    "Write": _write,
    "WebFetch": _fields("url", "prompt"),
    "WebSearch": _fields("query"),
    "Read": _fields("file_path"),
    "NotebookEdit": _fields("notebook_path", "edit_mode"),
    "Glob": _fields("pattern", "path"),
    "Grep": _fields("pattern", "path", "glob"),
}


def summarise(tool_name: str, tool_input: dict[str, Any], limit: int = SUMMARY_LIMIT) -> str:
    """The plain-text summary of one tool call, at most ``limit`` characters."""
    show = _BY_TOOL.get(tool_name)
    lines = show(tool_input) if show is not None else []
    if not lines:
        raw = json.dumps(tool_input, ensure_ascii=False, default=str, separators=(", ", ": "))
        lines = [f"Input: {clip(raw, _FIELD_LIMIT)}"]
    return clip("\n".join(lines), limit)


def matches(tool_name: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern (exact name or shell wildcard) that ``tool_name`` matches."""
    return next((p for p in patterns if fnmatchcase(tool_name, p)), None)
