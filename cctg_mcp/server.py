"""The MCP surface: thin tools over the service. The only module that imports ``mcp``.

``build_server(open_service)`` takes an async context manager factory that yields the
service, so tests can wire fakes; the lifespan opens it (starting the dispatcher and the
other background tasks) and closes it on exit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from cctg_mcp import __version__
from cctg_mcp.events import EventType
from cctg_mcp.resilience.errors import BaseResilienceError, redact
from cctg_mcp.service import EventTypeList, NotificationService, SendResult
from cctg_mcp.status import ResilienceStatus, resilience_status

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTRUCTIONS = """\
Notify the person on Telegram and read their answers.
- Use send_telegram_message for a short free-form note, send_task_completion when a task ends,
  send_performance_alert for a threshold breach, send_approval_request to ask a question with
  buttons, and send_telegram_event for anything else (pick `type` from list_event_types).
- A send answers `delivered`, or `queued`: the event is stored durably and will be delivered
  automatically; do NOT send it again. `duplicate` means the same event was already accepted.
- A tool error says what is wrong and what to fix; do not retry the same call unchanged.
"""

# Reusable argument types: the limits live in the input schema, so bad arguments are
# rejected (naming the field) before anything runs or is stored.
NonBlank = r"\S"
Title = Annotated[
    str, Field(min_length=1, max_length=200, pattern=NonBlank, description="Short title (≤ 200 characters).")
]
Description = Annotated[
    str, Field(min_length=1, max_length=2000, pattern=NonBlank, description="What happened (≤ 2000 characters).")
]
TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Your id for the task (letters, digits, - and _; e.g. a UUID). The same type and "
        "task_id is one event: sending it again is answered `duplicate`, so retries are safe.",
    ),
]
Source = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", description="Who sends it.")
]
SEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def _service(ctx: Context) -> NotificationService:
    return cast(NotificationService, ctx.request_context.lifespan_context)


async def _call(coro: Awaitable[T]) -> T:
    """Run a service call; our errors become tool errors the model can act on."""
    try:
        return await coro
    except BaseResilienceError as exc:
        raise ToolError(redact(str(exc))) from None


def build_server(
    open_service: Callable[[], AbstractAsyncContextManager[NotificationService]],
    *,
    name: str = "cctg-mcp",
) -> MCPServer[Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[NotificationService]:
        async with open_service() as service:
            yield service

    mcp: MCPServer[Any] = MCPServer(name, version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)

    @mcp.tool(annotations=SEND)
    async def send_telegram_event(
        ctx: Context,
        type: Annotated[EventType, Field(description="Event type; see list_event_types.")],
        title: Title,
        description: Description,
        task_id: TaskId | None = None,
        source: Source = "claude-code",
        data: Annotated[
            dict[str, Any] | None, Field(description="Extra structured fields (e.g. results, files_affected).")
        ] = None,
    ) -> SendResult:
        """Send a typed event (build finished, tests failed, deploy done...) to the person on Telegram.

        Answers `delivered` or `queued` (stored; will be delivered automatically; do not resend)."""
        svc = _service(ctx)
        return await _call(svc.submit(
            svc.build_event(type=type, title=title, description=description, task_id=task_id,
                            source=source, data=data), operation="sendEvent"))  # fmt: skip

    @mcp.tool(annotations=SEND)
    async def send_telegram_message(
        ctx: Context,
        message: Annotated[
            str,
            Field(min_length=1, max_length=20_000, pattern=NonBlank, description="Plain text (≤ 20 000 characters)."),
        ],
        source: Source = "claude-code",
    ) -> SendResult:
        """Send a free-form text message to the person on Telegram. Long text is split into parts."""
        svc = _service(ctx)
        event = svc.build_event(type="info_notification", title="Message", description=message,
                                source=source, data={"message": True})  # fmt: skip
        return await _call(svc.submit(event, operation="sendMessage"))

    @mcp.tool(annotations=SEND)
    async def send_task_completion(
        ctx: Context,
        task_id: TaskId,
        title: Title,
        results: Annotated[str | None, Field(max_length=5000, description="Outcome summary.")] = None,
        files_affected: Annotated[
            list[Annotated[str, Field(max_length=500)]] | None, Field(max_length=50, description="≤ 50 paths.")
        ] = None,
        duration_ms: Annotated[int | None, Field(ge=0, le=86_400_000, description="How long it took.")] = None,
    ) -> SendResult:
        """Tell the person a task finished, with results, files touched and duration."""
        svc = _service(ctx)
        data: dict[str, Any] = {"status": "completed"}
        if results:
            data["results"] = results
        if files_affected:
            data["files_affected"] = files_affected
        if duration_ms is not None:
            data["duration_ms"] = duration_ms
        event = svc.build_event(type="task_completion", title=title,
                                description=f'Task "{title}" completed successfully',
                                task_id=task_id, data=data)  # fmt: skip
        return await _call(svc.submit(event, operation="sendTaskCompletion"))

    @mcp.tool(annotations=SEND)
    async def send_performance_alert(
        ctx: Context,
        title: Title,
        current_value: Annotated[float, Field(allow_inf_nan=False, description="Measured value.")],
        threshold: Annotated[float, Field(allow_inf_nan=False, description="The limit it crossed.")],
        severity: Literal["low", "medium", "high", "critical"] = "medium",
    ) -> SendResult:
        """Alert the person that a measured value crossed its threshold."""
        svc = _service(ctx)
        data = {"current_value": current_value, "threshold": threshold, "severity": severity,
                "error_message": f"{title} is {current_value}, which exceeds threshold of {threshold}"}  # fmt: skip
        event = svc.build_event(type="performance_alert", title=title,
                                description=f"Performance threshold exceeded: {title}", data=data,
                                priority="critical" if severity in ("high", "critical") else "high")  # fmt: skip
        return await _call(svc.submit(event, operation="sendPerformanceAlert"))

    @mcp.tool(annotations=SEND)
    async def send_approval_request(
        ctx: Context,
        title: Title,
        description: Description,
        options: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=100, pattern=NonBlank)]],
            Field(min_length=1, max_length=10, description="Buttons to show (1-10, each ≤ 100 characters)."),
        ] = ["Approve", "Deny"],  # noqa: B006  (pydantic copies defaults)
    ) -> SendResult:
        """Ask the person a question with buttons on Telegram (e.g. before deploying)."""
        svc = _service(ctx)
        data = {"approval_prompt": description, "options": list(options), "requires_response": True,
                "response_options": list(options), "timeout_minutes": 30}  # fmt: skip
        event = svc.build_event(type="approval_request", title=title, description=description, data=data)
        return await _call(svc.submit(event, operation="sendApprovalRequest"))

    @mcp.tool(annotations=READ)
    async def list_event_types(
        category: Annotated[
            str | None, Field(max_length=100, description="Case-insensitive part of a category name.")
        ] = None,
    ) -> EventTypeList:
        """List the event types send_telegram_event accepts, with their categories."""
        return NotificationService.list_event_types(category)

    @mcp.tool(annotations=READ)
    async def get_resilience_status(ctx: Context) -> ResilienceStatus:
        """Is the notification channel healthy? Breakers, retries, the outbox backlog and issues in words.

        Use it when a send came back `queued` or failed, before deciding what to tell the person."""
        return await _call(resilience_status(_service(ctx)))

    return mcp
