"""``permission_prompt``: Claude Code's ``--permission-prompt-tool``, answered on Telegram.

Run ``claude -p --permission-prompt-tool mcp__cctg__permission_prompt "..."`` and each
permission decision becomes a message with Allow / Deny buttons. The text content is exactly
the JSON Claude Code reads; the decision itself is ``permissions.PermissionGate``'s.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from cctg_mcp.permissions import PermissionGate
from cctg_mcp.server.common import service_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "permissions"  # server/toolsets.py: which selection lists these tools (not listed by default)

#: Asks a person and waits: not read-only, not idempotent (each call is a new question).
ASK = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Ask permission on Telegram", annotations=ASK)
    async def permission_prompt(
        ctx: Context,
        tool_name: Annotated[
            str, Field(min_length=1, max_length=200, description="The tool Claude Code wants to run (e.g. Bash).")
        ],
        input: Annotated[dict[str, Any], Field(description="The arguments of that tool call.")],
        tool_use_id: Annotated[
            str | None, Field(max_length=200, description="Claude Code's id for this tool call.")
        ] = None,
    ) -> CallToolResult:
        """Ask the person on Telegram whether a tool call may run (Allow / Deny buttons); for Claude Code's
        --permission-prompt-tool. Returns {"behavior":"allow","updatedInput":...} or
        {"behavior":"deny","message":...}; denies when nobody answers in time or Telegram is unreachable."""

        async def progress(elapsed: float, total: float, message: str) -> None:
            await ctx.report_progress(elapsed, total, message)

        gate = PermissionGate(service_of(ctx))
        decision = await gate.decide(tool_name, input, tool_use_id, on_progress=progress)
        return CallToolResult(content=[TextContent(type="text", text=decision.to_json())])
