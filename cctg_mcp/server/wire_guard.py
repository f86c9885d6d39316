"""Every line on stdio gets an answer: the lines the SDK's reader cannot take are answered here.

The MCP SDK's stdio reader hands a line it cannot validate (``validate_json``) to the session
as an exception, and the session answers nothing: the client waits forever. Two kinds of
valid-looking requests hit that: strings holding a lone surrogate (``"\\ud800"``, not valid
Unicode, which the SDK's JSON parser refuses) and values nested deeper than its parser's
recursion limit (200). Over HTTP the same bytes get an immediate parse error.

``screen(line)`` runs the SDK's own validation; for a line it refuses it returns the
JSON-RPC error to send back: ``-32602 Invalid params`` naming the field (``arguments.message
holds a lone surrogate``, ``arguments.data is nested ... deep``) when the request id can be
read, ``-32600 Invalid Request`` for JSON that is not JSON-RPC, ``-32700 Parse error`` (id
null) for a line that is not JSON at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import mcp_types as types

#: The SDK's JSON parser refuses documents nested deeper than this.
SDK_MAX_DEPTH = 200
_SURROGATE = re.compile("[\ud800-\udfff]")
_ID = re.compile(r'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


@dataclass(frozen=True)
class Rejection:
    """The JSON-RPC error a refused line gets (``request_id`` None: the id could not be read)."""

    request_id: int | str | None
    code: int
    message: str

    def to_message(self) -> types.JSONRPCError:
        return types.JSONRPCError(
            jsonrpc="2.0", id=self.request_id, error=types.ErrorData(code=self.code, message=self.message)
        )


def _field(path: list[str | int], method: str | None) -> str:
    parts = [str(p) for p in path]
    if parts[:1] == ["params"]:
        parts = parts[1:]
    if method == "tools/call" and parts[:1] == ["arguments"] and len(parts) > 1:
        parts = parts[:2]  # name the tool's own field, not the path inside it
    return ".".join(parts) or "the request"


def _find_problem(doc: Any) -> tuple[list[str | int], str] | None:
    """The first place (path, what) that holds a lone surrogate or lies too deep."""
    stack: list[tuple[Any, list[str | int]]] = [(doc, [])]
    while stack:
        value, path = stack.pop()
        if len(path) >= SDK_MAX_DEPTH - 5:
            return path, "deep"
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path, "surrogate"
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):
                    return [*path, key.encode("utf-8", "backslashreplace").decode()], "surrogate"
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, i]) for i, item in enumerate(value))
    return None


def _request_id(doc: Any) -> int | str | None:
    if isinstance(doc, dict):
        rid = doc.get("id")
        if isinstance(rid, str) and not _SURROGATE.search(rid):
            return rid
        if isinstance(rid, int) and not isinstance(rid, bool):
            return rid
    return None


def screen(line: str) -> Rejection | None:
    """None when the SDK takes the line; otherwise the error to answer it with."""
    if not line.strip():
        return None  # blank lines: nothing to answer
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None
    except ValueError:
        pass
    try:
        doc = json.loads(line)
    except RecursionError:
        found = _ID.search(line)
        rid: int | str | None = None
        if found:
            raw = found.group(1)
            rid = int(raw) if raw[0] != '"' else json.loads(raw)
        return Rejection(
            rid, types.INVALID_PARAMS, f"Invalid params: a value is nested more than {SDK_MAX_DEPTH} levels deep."
        )
    except json.JSONDecodeError as exc:
        return Rejection(None, types.PARSE_ERROR, f"Parse error: the line is not JSON ({exc.msg}).")
    rid = _request_id(doc)
    method = doc.get("method") if isinstance(doc, dict) else None
    problem = _find_problem(doc)
    if problem is not None:
        path, what = problem
        field = _field(path, method if isinstance(method, str) else None)
        if what == "surrogate":
            text = (
                f"Invalid params: {field} holds a lone surrogate (such as \\ud800), which is not valid "
                "Unicode text; send valid UTF-8."
            )
        else:
            text = f"Invalid params: {field} is nested more than {SDK_MAX_DEPTH} levels deep; flatten it."
        return Rejection(rid, types.INVALID_PARAMS, text)
    if rid is None and isinstance(doc, dict) and "id" not in doc:
        return None  # a malformed notification: JSON-RPC answers notifications with nothing
    return Rejection(rid, types.INVALID_REQUEST, "Invalid Request: not a valid JSON-RPC 2.0 message.")
