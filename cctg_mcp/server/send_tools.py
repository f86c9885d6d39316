"""Send tools: one per kind of notification, all through the service's durable submit."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from cctg_mcp.delivery.service import MAX_COMPOSED_DATA_BYTES, EventTypeList, NotificationService, SendResult
from cctg_mcp.server.common import READ, SEND, Description, NonBlank, Source, TaskId, Title, call, checked, service_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "send"  # server/toolsets.py: which selection lists these tools


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Send a Telegram event", annotations=SEND)
    async def send_telegram_event(
        ctx: Context,
        type: Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="Event type, e.g. build_failed; custom_event for anything else (see list_event_types).",
            ),
        ],
        title: Title,
        description: Description,
        task_id: TaskId | None = None,
        source: Source = "claude-code",
        data: Annotated[dict[str, Any] | None, Field(description="Extra structured fields.")] = None,
    ) -> SendResult:
        """Send a typed event (build done, tests failed, deploy...) to the person on Telegram."""
        svc = service_of(ctx)
        return await call(
            svc.submit(
                checked(
                    svc.build_event,
                    type=type,
                    title=title,
                    description=description,
                    task_id=task_id,
                    source=source,
                    data=data,
                ),
                operation="sendEvent",
            )
        )

    @mcp.tool(title="Send a Telegram message", annotations=SEND)
    async def send_telegram_message(
        ctx: Context,
        message: Annotated[
            str,
            Field(min_length=1, max_length=20_000, pattern=NonBlank, description="Plain text."),
        ],
        source: Source = "claude-code",
    ) -> SendResult:
        """Send a free-form text message to the person on Telegram (long text is split)."""
        svc = service_of(ctx)
        event = checked(svc.message_event, message, source=source)
        return await call(svc.submit(event, operation="sendMessage"))

    @mcp.tool(title="Report a finished task", annotations=SEND)
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
        svc = service_of(ctx)
        data: dict[str, Any] = {"status": "completed"}
        if results:
            data["results"] = results
        if files_affected:
            data["files_affected"] = files_affected
        if duration_ms is not None:
            data["duration_ms"] = duration_ms
        event = checked(
            svc.build_event,
            type="task_completion",
            title=title,
            description=f'Task "{title}" completed successfully',
            task_id=task_id,
            data=data,
            data_fields="results and files_affected together",
            max_data_bytes=MAX_COMPOSED_DATA_BYTES,
        )
        return await call(svc.submit(event, operation="sendTaskCompletion"))

    @mcp.tool(title="Send a performance alert", annotations=SEND)
    async def send_performance_alert(
        ctx: Context,
        title: Title,
        current_value: Annotated[float, Field(allow_inf_nan=False, description="Measured value.")],
        threshold: Annotated[float, Field(allow_inf_nan=False, description="The limit it crossed.")],
        severity: Literal["low", "medium", "high", "critical"] = "medium",
    ) -> SendResult:
        """Alert the person that a measured value crossed its threshold."""
        svc = service_of(ctx)
        data = {
            "current_value": current_value,
            "threshold": threshold,
            "severity": severity,
            "error_message": f"{title} is {current_value}, which exceeds threshold of {threshold}",
        }
        event = checked(
            svc.build_event,
            type="performance_alert",
            title=title,
            description=f"Performance threshold exceeded: {title}",
            data=data,
            data_fields="title, current_value and threshold together",
            max_data_bytes=MAX_COMPOSED_DATA_BYTES,
            priority="critical" if severity in ("high", "critical") else "high",
        )
        return await call(svc.submit(event, operation="sendPerformanceAlert"))

    @mcp.tool(title="Ask for approval", annotations=SEND)
    async def send_approval_request(
        ctx: Context,
        title: Title,
        description: Description,
        options: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=100, pattern=NonBlank)]],
            Field(min_length=1, max_length=10, description="Buttons to show."),
        ] = ["Approve", "Deny"],  # noqa: B006  (pydantic copies defaults)
    ) -> SendResult:
        """Ask the person a question with buttons on Telegram (e.g. before deploying)."""
        svc = service_of(ctx)
        data = {
            "approval_prompt": description,
            "options": list(options),
            "requires_response": True,
            "response_options": list(options),
            "timeout_minutes": 30,
        }
        event = checked(
            svc.build_event,
            type="approval_request",
            title=title,
            description=description,
            data=data,
            data_fields="description and options together",
            max_data_bytes=MAX_COMPOSED_DATA_BYTES,
        )
        return await call(svc.submit(event, operation="sendApprovalRequest"))

    @mcp.tool(title="List event types", annotations=READ)
    async def list_event_types(
        category: Annotated[
            str | None, Field(max_length=100, description="Case-insensitive part of a category name.")
        ] = None,
    ) -> EventTypeList:
        """List the event types send_telegram_event accepts, with their categories."""
        return NotificationService.list_event_types(category)
