"""Events: the catalogue of the 47 CCTelegram event types, the Event model, and rendering
to Telegram text (HTML escaping, 4096-character splitting, approval keyboards)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, iso_z
from cctg_mcp.resilience.config_tables import Priority as Priority

CATALOGUE: dict[str, dict[str, str]] = {
    "Task Management": {
        "task_completion": "A task finished successfully",
        "task_started": "A task started",
        "task_failed": "A task failed",
        "task_progress": "Progress on a running task",
        "task_cancelled": "A task was cancelled",
    },
    "Code Operations": {
        "code_generation": "Code was generated",
        "code_analysis": "Code was analysed",
        "code_refactoring": "Code was refactored",
        "code_review": "A code review is ready or done",
        "code_testing": "Code is being tested",
        "code_deployment": "Code was deployed",
    },
    "File System": {
        "file_created": "A file was created",
        "file_modified": "A file was modified",
        "file_deleted": "A file was deleted",
        "directory_created": "A directory was created",
        "directory_deleted": "A directory was deleted",
    },
    "Build & Development": {
        "build_started": "A build started",
        "build_completed": "A build completed",
        "build_failed": "A build failed",
        "test_suite_run": "A test suite ran",
        "test_passed": "Tests passed",
        "test_failed": "Tests failed",
        "lint_check": "A lint check ran",
        "type_check": "A type check ran",
    },
    "Git": {
        "git_commit": "A commit was made",
        "git_push": "Commits were pushed",
        "git_merge": "Branches were merged",
        "git_branch": "A branch was created or switched",
        "git_tag": "A tag was created",
        "pull_request_created": "A pull request was opened",
        "pull_request_merged": "A pull request was merged",
    },
    "System Monitoring": {
        "system_health": "A system health report",
        "performance_alert": "A performance threshold was exceeded",
        "security_alert": "A security concern",
        "error_occurred": "An error occurred",
        "resource_usage": "Resource usage figures",
    },
    "User Interaction": {
        "approval_request": "A decision is needed from the person (buttons)",
        "user_response": "A person answered",
        "command_executed": "A command was executed",
    },
    "Notifications": {
        "progress_update": "A progress update",
        "status_change": "A status changed",
        "alert_notification": "An alert for the person",
        "info_notification": "Information for the person",
    },
    "Integration": {
        "api_call": "An API was called",
        "webhook_received": "A webhook arrived",
        "service_integration": "A service integration event",
    },
    "Custom": {"custom_event": "Anything else"},
}

EVENT_TYPES: tuple[str, ...] = tuple(t for types in CATALOGUE.values() for t in types)
CATEGORY_OF: dict[str, str] = {t: cat for cat, types in CATALOGUE.items() for t in types}

EventType = Literal[
    "task_completion",
    "task_started",
    "task_failed",
    "task_progress",
    "task_cancelled",
    "code_generation",
    "code_analysis",
    "code_refactoring",
    "code_review",
    "code_testing",
    "code_deployment",
    "file_created",
    "file_modified",
    "file_deleted",
    "directory_created",
    "directory_deleted",
    "build_started",
    "build_completed",
    "build_failed",
    "test_suite_run",
    "test_passed",
    "test_failed",
    "lint_check",
    "type_check",
    "git_commit",
    "git_push",
    "git_merge",
    "git_branch",
    "git_tag",
    "pull_request_created",
    "pull_request_merged",
    "system_health",
    "performance_alert",
    "security_alert",
    "error_occurred",
    "resource_usage",
    "approval_request",
    "user_response",
    "command_executed",
    "progress_update",
    "status_change",
    "alert_notification",
    "info_notification",
    "api_call",
    "webhook_received",
    "service_integration",
    "custom_event",
]


#: Default priority per event type (the seed's per-event settings); others are "normal".
EVENT_PRIORITY: dict[str, Priority] = {
    "task_completion": "high",
    "task_failed": "high",
    "performance_alert": "critical",
    "error_occurred": "critical",
    "security_alert": "critical",
    "approval_request": "high",
    "info_notification": "low",
}


class _Prioritised(Protocol):
    @property
    def priority(self) -> Priority: ...


def event_priority(
    event_type: str, configured: Mapping[str, _Prioritised] | None = None, default: Priority | None = None
) -> Priority:
    """The configuration's ``events.<type>.priority`` (``configured``: the resilience config's
    ``events`` table) if set, else ``default``, else the catalogue's. Pure and cheap: the
    service and the hook both use it, so a hook event gets the configured priority too."""
    entry = configured.get(event_type) if configured is not None else None
    if entry is not None:
        return entry.priority
    return default if default is not None else EVENT_PRIORITY.get(event_type, "normal")


TELEGRAM_TEXT_LIMIT = 4096


def utc_iso(epoch_s: float) -> str:
    """An epoch time as ISO 8601 UTC with a ``Z`` (the CCTelegram events' timestamp form)."""
    return iso_z(epoch_s, "auto")


def utc_now_iso() -> str:
    """Now, from the system clock (the default of ``Event.timestamp``; the service passes its own)."""
    return utc_iso(SYSTEM_CLOCK.time())


class Event(BaseModel):
    """An accepted notification, in the CCTelegram bridge's field names."""

    event_id: str
    type: str
    title: str
    description: str
    source: str = "claude-code"
    task_id: str
    timestamp: str = Field(default_factory=utc_now_iso)
    data: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"

    @property
    def category(self) -> str:
        return CATEGORY_OF.get(self.type, "Custom")


class RenderedPart(BaseModel):
    """One Telegram message: HTML text (≤ 4096 chars) and an optional inline keyboard."""

    text: str
    reply_markup: dict[str, Any] | None = None


def escape_html(text: str) -> str:
    """Escape ``< > &`` (and quotes) for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)
