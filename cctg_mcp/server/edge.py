"""What the model reads: lean tool listings, compact result text, argument errors in plain words.

``CctgServer`` is the SDK's ``MCPServer`` with two public methods refined
(the third point is part of ``call_tool``):

- ``list_tools`` drops the ``title`` keys pydantic puts into every input schema (the property
  name already says it; the tool's own ``title`` is kept) and lists ``X | None = None`` as ``X``,
  to keep ``tools/list`` small;
- ``call_tool`` writes the text content of a structured result as compact JSON (the full
  document stays in ``structuredContent``);
- an argument that fails the input schema becomes a ``ToolError`` naming the field and what is
  allowed in plain words (no pydantic class names or URLs).
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent
from mcp.types import Tool as MCPTool
from pydantic import ValidationError
from pydantic_core import ErrorDetails

#: Patterns of our argument types, in words.
PATTERNS = {
    r"\S": "must contain a character other than a space",
    r"^[A-Za-z0-9_-]+$": "may contain only letters, digits, - and _",
}


def lean_schema(node: Any) -> Any:
    """A JSON schema as listed: no ``title`` annotations (property names and ``$defs`` keys kept),
    and an optional argument (``anyOf [X, null]``, default null) listed as ``X``: it is not in
    ``required``, so a client leaves it out (an explicit null is still accepted)."""
    if isinstance(node, list):
        return [lean_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if (
        isinstance(options, list)
        and len(options) == 2
        and {"type": "null"} in options
        and node.get("default", 0) is None
    ):
        (kept,) = [option for option in options if option != {"type": "null"}]
        node = {**kept, **{k: v for k, v in node.items() if k not in ("anyOf", "default")}}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: lean_schema(sub) for name, sub in value.items()}
        else:
            out[key] = lean_schema(value)
    return out


def _got(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(err: ErrorDetails) -> str:
    """One error as '`field` <what is wrong>: <what is allowed>'."""
    field = ".".join(str(part) for part in err["loc"]) or "arguments"
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    kind = err["type"]
    got = f" (got {_got(err['input'])})" if kind != "missing" else ""
    wording = {
        "missing": "is required",
        "string_too_short": f"is too short: use at least {ctx.get('min_length')} character(s)",
        "string_too_long": f"is too long: use at most {ctx.get('max_length')} characters",
        "too_short": f"has too few items: use at least {ctx.get('min_length')}",
        "too_long": f"has too many items: use at most {ctx.get('max_length')}",
        "literal_error": f"is not allowed: use one of {str(ctx.get('expected', '')).replace(' or ', ', ')}",
        "enum": f"is not allowed: use one of {str(ctx.get('expected', '')).replace(' or ', ', ')}",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be text",
        "list_type": "must be a list",
        "dict_type": "must be an object",
        "greater_than_equal": f"is too small: use {ctx.get('ge')} or more",
        "greater_than": f"is too small: use more than {ctx.get('gt')}",
        "less_than_equal": f"is too large: use {ctx.get('le')} or less",
        "less_than": f"is too large: use less than {ctx.get('lt')}",
        "extra_forbidden": "is not an argument of this tool",
    }
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        text = PATTERNS.get(pattern, f"does not have the allowed form (regular expression {pattern})")
    else:
        text = wording.get(kind) or str(err["msg"]).replace("Input should be", "should be")
    return f"`{field}` {text}{got}"


def friendly(tool: str, exc: ValidationError) -> str:
    """A schema error for the model: every field at fault and what is allowed."""
    problems = "; ".join(_problem(err) for err in exc.errors(include_url=False))
    return f"Invalid arguments for {tool}: {problems}."


class CctgServer(MCPServer[Any]):
    """``MCPServer`` with lean listings, compact result text and friendly argument errors."""

    async def list_tools(self) -> list[MCPTool]:
        return [
            tool.model_copy(update={"input_schema": lean_schema(tool.input_schema)})
            for tool in await super().list_tools()
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                raise ToolError(friendly(name, cause)) from None
            raise
        if isinstance(result, CallToolResult) and result.structured_content is not None and not result.is_error:
            result = _compact(result, result.structured_content)
        return result


def _compact(result: CallToolResult, document: dict[str, Any]) -> CallToolResult:
    """The text block that serialises ``document`` rewritten as compact JSON; a tool whose text is
    not that document (e.g. a Markdown string wrapped as ``{"result": ...}``) keeps its text."""
    content = list(result.content)
    for index, block in enumerate(content):
        if isinstance(block, TextContent) and block.text.lstrip().startswith("{"):
            try:
                same = json.loads(block.text) == document
            except ValueError:
                same = False
            if same:
                compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)
                content[index] = TextContent(type="text", text=compact)
    return result.model_copy(update={"content": content})
