"""Resources (read-only views a person or client can pick) and prompts (ready-made asks).

Static resources get no request context in the SDK, so they read the running service
through ``current()``, which the server's lifespan keeps pointing at the live runtime.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from cctg_mcp.answers import answers_of
from cctg_mcp.delivery.bridge import bridge_status
from cctg_mcp.events.catalogue import CATALOGUE
from cctg_mcp.ops.status import resilience_status
from cctg_mcp.runtime import Runtime
from cctg_mcp.server.common import resource_errors
from cctg_mcp.server.toolsets import Registrar

EVENT_TEMPLATES: list[dict[str, Any]] = [
    {
        "name": "claude-task-complete",
        "tool": "send_task_completion",
        "arguments": {
            "task_id": "feature-x",
            "title": "Implement feature X",
            "results": "All tests pass",
            "duration_ms": 120000,
        },
    },
    {
        "name": "build-success",
        "tool": "send_telegram_event",
        "arguments": {"type": "build_completed", "title": "Build succeeded", "description": "main is green"},
    },
    {
        "name": "performance-warning",
        "tool": "send_performance_alert",
        "arguments": {"title": "p95 latency", "current_value": 850, "threshold": 500, "severity": "high"},
    },
    {
        "name": "approval-needed",
        "tool": "send_approval_request",
        "arguments": {
            "title": "Deploy to production?",
            "description": "v1.4.0 passed staging",
            "options": ["Approve", "Deny"],
        },
    },
]


def register(mcp: Registrar, current: Callable[[], Runtime]) -> None:
    def event_types() -> str:
        return json.dumps(
            [
                {"type": t, "category": cat, "description": d}
                for cat, types in CATALOGUE.items()
                for t, d in types.items()
            ],
            indent=2,
        )

    def event_templates() -> str:
        return json.dumps(EVENT_TEMPLATES, indent=2)

    async def bridge() -> str:
        with resource_errors():
            return (await bridge_status(current().service)).model_dump_json(indent=2)

    async def responses() -> str:
        with resource_errors():
            return (await answers_of(current().service).responses(limit=20)).model_dump_json(indent=2)

    # Our names, then the original CCTelegram server's (REFERENCE §A 2.6), which resolve too.
    for uri, name, title, fn, description in (
        (
            "cctg://event-types",
            "event_types",
            "Event types",
            event_types,
            "Every event type send_telegram_event accepts, by category.",
        ),
        (
            "cctg://event-templates",
            "event_templates",
            "Event templates",
            event_templates,
            "Ready-made arguments for the common notifications.",
        ),
        (
            "cctelegram://event-types",
            "cctelegram_event_types",
            "Event types (CCTelegram name)",
            event_types,
            "The original's name for event-types.",
        ),
        (
            "cctelegram://event-templates",
            "cctelegram_event_templates",
            "Event templates (CCTelegram name)",
            event_templates,
            "The original's name for event-templates.",
        ),
        (
            "cctelegram://bridge-status",
            "cctelegram_bridge_status",
            "Bridge status",
            bridge,
            "The bridge status (get_bridge_status).",
        ),
        (
            "cctelegram://responses",
            "cctelegram_responses",
            "Recent answers",
            responses,
            "The 20 newest answers from the person.",
        ),
    ):
        mcp.resource(uri, name=name, title=title, mime_type="application/json", description=description)(fn)

    @mcp.resource(
        "cctg://status",
        title="Channel status",
        mime_type="application/json",
        description="The resilience status: breakers, retries, outbox, issues in words.",
    )
    async def status() -> str:
        with resource_errors():
            return (await resilience_status(current())).model_dump_json(indent=2)

    @mcp.prompt(
        title="Notify me when done", description="Work on a task and notify me on Telegram when it is finished."
    )
    def notify_me_when_done(task: Annotated[str, Field(description="The task to work on, in your words.")]) -> str:
        return (
            f"Work on this task: {task}\n\nWhen it is finished (or if it fails), call send_task_completion "
            "with a short task_id you choose, a title, the results in two or three sentences, the files you "
            "changed and how long it took. If it fails, use send_telegram_event with type task_failed instead. "
            "If a send answers `queued`, it will be delivered automatically: do not send it again."
        )

    @mcp.prompt(
        title="Ask me before",
        description="Ask me on Telegram before doing something risky, and wait for my answer.",
    )
    def ask_me_before(
        action: Annotated[str, Field(description="What you are about to do, e.g. 'deploy v1.4 to production'.")],
    ) -> str:
        return (
            f"Before you {action}, call send_approval_request with a clear title and what will happen, with "
            "the options Approve and Deny. Then call wait_for_response with the returned event_id. If it "
            "answers that no answer arrived yet, call wait_for_response again with the same event_id (each "
            "call waits up to 45 seconds; keep calling for as long as the action can wait). Act only on an "
            "Approve. If the answer is Deny, or you stop waiting, do not proceed; say so."
        )

    @mcp.prompt(
        title="Check my notification channel",
        description="Check whether my Telegram notifications are working, and why not.",
    )
    def check_notification_channel() -> str:
        return (
            "Call get_resilience_status (and get_health_report if available). Tell me in plain words whether "
            "notifications reach me, what is queued, and what I should fix (for example a bad token, a bot "
            "I blocked, or Telegram being down). If a breaker is open because of a cause that is now fixed, "
            "offer to call trigger_recovery."
        )
