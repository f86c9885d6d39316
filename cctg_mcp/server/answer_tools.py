"""Response tools: what the person answered on Telegram (buttons and text), and waiting for it.

The same four tools in both delivery modes: ``answers_of`` gives the getUpdates-fed store in
telegram mode and the CCTelegram bridge's response files in bridge mode."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from cctg_mcp.answers import AnswerSource, ClearResult, PendingResponses, ResponseList, WaitResult, answers_of
from cctg_mcp.resilience.errors import BaseResilienceError, redact
from cctg_mcp.server.common import READ, call, service_of

#: Deletes stored answers: not read-only, idempotent for the same age.
CLEAR = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
#: Only reads, but waits; calling it twice may give a different answer (one may arrive).
WAIT = ToolAnnotations(read_only_hint=True, idempotent_hint=False, open_world_hint=True)


def _answers(ctx: Context) -> AnswerSource:
    """The live answers, or the "not configured" tool error the send tools give."""
    try:
        return answers_of(service_of(ctx))
    except BaseResilienceError as exc:
        raise ToolError(redact(str(exc))) from None


def register(mcp: MCPServer[Any]) -> None:
    @mcp.tool(annotations=READ)
    async def get_telegram_responses(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=100, description="How many to return (1-100).")] = 10,
        since_minutes: Annotated[
            int | None, Field(ge=1, le=10080, description="Only answers from the last N minutes (≤ 7 days).")
        ] = None,
    ) -> ResponseList:
        """List the person's answers on Telegram (button presses and text messages), newest first.

        Each says which event it answers (event_id), the action (approve, deny, option, text...)
        and the pressed option's label."""
        return await call(_answers(ctx).responses(limit, since_minutes))

    @mcp.tool(annotations=CLEAR)
    async def clear_old_responses(
        ctx: Context,
        older_than_hours: Annotated[
            int, Field(ge=1, le=8760, description="Delete answers received more than N hours ago.")
        ] = 24,
    ) -> ClearResult:
        """Delete stored Telegram answers older than N hours (housekeeping; recent ones are kept).

        In bridge mode: deletes the bridge's response files whose modification time is older."""
        return await call(_answers(ctx).clear(older_than_hours))

    @mcp.tool(annotations=READ)
    async def process_pending_responses(
        ctx: Context,
        since_minutes: Annotated[int, Field(ge=1, le=1440, description="Window in minutes (1-1440).")] = 10,
    ) -> PendingResponses:
        """Summarise recent decisions from the person: approvals, denials and other choices, with the
        event and task ids they refer to, plus recommendations on what to do next."""
        return await call(_answers(ctx).pending(since_minutes))

    @mcp.tool(annotations=WAIT)
    async def wait_for_response(
        ctx: Context,
        event_id: Annotated[
            str,
            Field(min_length=1, max_length=100, description="The event_id returned by send_approval_request."),
        ],
        timeout_seconds: Annotated[int, Field(ge=1, le=3600, description="How long to wait (1-3600 s).")] = 300,
    ) -> WaitResult:
        """Wait until the person answers an event on Telegram (e.g. presses Approve or Deny), and return
        that answer as soon as it arrives. If they already answered, returns at once.

        status `timeout` means no answer yet: the question stays open; wait again or carry on."""
        answers = _answers(ctx)

        async def progress(elapsed: float, total: float, message: str) -> None:
            await ctx.report_progress(elapsed, total, message)

        return await call(answers.wait(event_id, float(timeout_seconds), on_progress=progress))
