"""Task results in the original's shape (REFERENCE §A 2.4): pydantic models, no I/O."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

TaskSystem = Literal["claude-code", "taskmaster", "both"]
Status = Literal["pending", "in_progress", "completed", "blocked"]
Section = Literal["completed", "current", "upcoming", "blocked"]

#: The four statuses the tools filter and count by, from every spelling the two systems use
#: (TaskMaster writes ``done`` and ``in-progress``). Its ``review``, ``deferred`` and
#: ``cancelled`` count in no summary (``Summary.total`` and ``grand_total`` add up these four
#: only); they count in a result's ``total_count`` only.
NORMALISED: dict[str, Status] = {
    "pending": "pending",
    "todo": "pending",
    "in_progress": "in_progress",
    "in-progress": "in_progress",
    "completed": "completed",
    "done": "completed",
    "blocked": "blocked",
}


def normalise(status: Any) -> Status | None:
    return NORMALISED.get(status.strip().lower()) if isinstance(status, str) else None


class Todo(BaseModel):
    """One Claude Code todo, as ``register_claude_todos`` takes it."""

    id: str = Field(min_length=1, max_length=100)
    content: str = Field(min_length=1, max_length=1000)
    status: Status


class RegisterResult(BaseModel):
    """Whether a session's todos were registered, and how many."""

    success: bool
    message: str
    registered_count: int
    session_id: str


class Summary(BaseModel):
    """Task counts by status."""

    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    blocked: int = 0

    def add(self, status: Status | None) -> None:
        if status is not None:
            setattr(self, status, getattr(self, status) + 1)

    @property
    def total(self) -> int:
        return self.pending + self.in_progress + self.completed + self.blocked


class TaskItem(BaseModel):
    """One task, as a task system wrote it."""

    id: str
    title: str
    description: str | None = None
    status: str = Field(description="As the task system wrote it (e.g. done, in-progress).")
    priority: str | None = None
    dependencies: list[str] = Field(default_factory=list)
    parent_id: str | None = None
    is_subtask: bool = False


class ClaudeCodeTasks(BaseModel):
    """Claude Code's todos: where they were found and what they hold."""

    available: bool
    source: str | None = Field(
        default=None, description="registered:<session_id>, or the todo file (relative to the project root)."
    )
    session_active: bool = Field(default=False, description="Updated within the last 5 minutes.")
    last_updated: str | None = None
    total_count: int = 0
    filtered_count: int = 0
    summary: Summary | None = None
    tasks: list[TaskItem] | None = None
    message: str | None = None
    attempted_sources: list[str] = Field(default_factory=list)
    error: str | None = None


class TaskmasterTasks(BaseModel):
    """TaskMaster's tasks: where they were found, the tag read, and what they hold."""

    available: bool
    source: str | None = None
    current_tag: str | None = None
    total_count: int = 0
    filtered_count: int = 0
    main_tasks_count: int = 0
    subtasks_count: int = 0
    summary: Summary | None = None
    tasks: list[TaskItem] | None = None
    error: str | None = None


class Breakdown(BaseModel):
    """Task counts by status for each task system."""

    claude_code: dict[str, int]
    taskmaster: dict[str, int]


class CombinedSummary(BaseModel):
    """Task counts by status over both task systems."""

    total_pending: int
    total_in_progress: int
    total_completed: int
    total_blocked: int
    grand_total: int
    breakdown: Breakdown


class TaskStatus(BaseModel):
    """The tasks of both task systems, filtered and summarised."""

    timestamp: str
    task_system: TaskSystem
    status_filter: str = Field(description="The filter applied, or 'all'.")
    summary_only: bool
    project_root: str
    claude_code_tasks: ClaudeCodeTasks | None = None
    taskmaster_tasks: TaskmasterTasks | None = None
    combined_summary: CombinedSummary | None = None


def combine(claude: Summary | None, taskmaster: Summary | None) -> CombinedSummary:
    a, b = claude or Summary(), taskmaster or Summary()
    return CombinedSummary(
        total_pending=a.pending + b.pending,
        total_in_progress=a.in_progress + b.in_progress,
        total_completed=a.completed + b.completed,
        total_blocked=a.blocked + b.blocked,
        grand_total=a.total + b.total,
        breakdown=Breakdown(
            claude_code={**a.model_dump(), "total": a.total},
            taskmaster={**b.model_dump(), "total": b.total},
        ),
    )
