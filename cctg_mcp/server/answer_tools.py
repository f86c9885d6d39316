"""Response tools: what the person answered on Telegram (buttons and text), and waiting for it.

The same four tools in both delivery modes: ``answers_of`` gives the getUpdates-fed store in
telegram mode and the CCTelegram bridge's response files in bridge mode."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from cctg_mcp.answers import AnswerSource, ClearResult, PendingResponses, ResponseList, WaitResult, answers_of
from cctg_mcp.server.common import READ, call, checked, service_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "answers"  # server/toolsets.py: which selection lists these tools

#: Deletes stored answers: not read-only, idempotent for the same age.
CLEAR = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
#: Only reads, but waits; calling it twice may give a different answer (one may arrive).
WAIT = ToolAnnotations(read_only_hint=True, idempotent_hint=False, open_world_hint=True)


def _answers(ctx: Context) -> AnswerSource:
    """The live answers, or the "not configured" tool error the send tools give."""
    return checked(answers_of, service_of(ctx))


def register(mcp: Registrar) -> None:
    @mcp.tool(title="List answers", annotations=READ)
    async def get_telegram_responses(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=100, description="How many to return.")] = 10,
        since_minutes: Annotated[int | None, Field(ge=1, le=10080, description="Only the last N minutes.")] = None,
    ) -> ResponseList:
        """List the person's answers (button presses, text), newest first, with the event_id each answers."""
        return await call(_answers(ctx).responses(limit, since_minutes))

    @mcp.tool(title="Clear old answers", annotations=CLEAR)
    async def clear_old_responses(
        ctx: Context,
        older_than_hours: Annotated[int, Field(ge=1, le=8760, description="Age in hours.")] = 24,
    ) -> ClearResult:
        """Delete stored answers older than N hours (in bridge mode: the bridge's response files)."""
        return await call(_answers(ctx).clear(older_than_hours))

    @mcp.tool(title="Summarise recent answers", annotations=READ)
    async def process_pending_responses(
        ctx: Context,
        since_minutes: Annotated[int, Field(ge=1, le=1440, description="Window in minutes.")] = 10,
    ) -> PendingResponses:
        """Summarise recent decisions (approve, deny, other choices) with their event and task ids, and
        what to do next."""
        return await call(_answers(ctx).pending(since_minutes))

    @mcp.tool(title="Wait for an answer", annotations=WAIT)
    async def wait_for_response(
        ctx: Context,
        event_id: Annotated[
            str,
            Field(min_length=1, max_length=100, description="The event_id returned by send_approval_request."),
        ],
        timeout_seconds: Annotated[int, Field(ge=1, le=3600, description="Seconds this call waits.")] = 45,
    ) -> WaitResult:
        """Wait for the person's answer to an event (e.g. Approve/Deny); returns when it arrives. On
        `timeout` the question stays open: call again."""
        answers = _answers(ctx)

        async def progress(elapsed: float, total: float, message: str) -> None:
            await ctx.report_progress(elapsed, total, message)

        return await call(answers.wait(event_id, float(timeout_seconds), on_progress=progress))
