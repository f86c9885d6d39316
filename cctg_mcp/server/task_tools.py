"""Task tools: Claude Code todos and TaskMaster tasks, as in the original (REFERENCE §A 2.4).

Files are read only under ``project_root`` (default: the server's working directory); a file
whose real path leaves it is reported, not read. See cctg_mcp/tasks/."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import Field

from cctg_mcp.server.common import ACT, READ, call, service_of
from cctg_mcp.server.toolsets import Registrar
from cctg_mcp.tasks import RegisterResult, Section, Status, TaskService, TaskStatus, TaskSystem, Todo

TOOLSET = "tasks"  # server/toolsets.py: which selection lists these tools

ProjectRoot = Annotated[
    str | None,
    Field(
        max_length=500,
        description="The project's directory (default: the server's working directory). Only files "
        "inside it are read: .taskmaster/tasks/tasks.json and the project's Claude Code todo files.",
    ),
]


def _tasks(ctx: Context) -> TaskService:
    service = service_of(ctx)
    return TaskService(service.settings.data_dir, clock=service.clock)


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Task status", annotations=READ)
    async def get_task_status(
        ctx: Context,
        project_root: ProjectRoot = None,
        task_system: Annotated[TaskSystem, Field(description="Which tasks to read.")] = "both",
        status_filter: Annotated[Status | None, Field(description="Only tasks with this status.")] = None,
        summary_only: Annotated[bool, Field(description="Counts only, no task lists.")] = False,
    ) -> TaskStatus:
        """Task status from Claude Code todos (registered with register_claude_todos, or the project's
        todo files) and TaskMaster (.taskmaster/tasks/tasks.json), with per-status counts."""
        return await call(_tasks(ctx).status(project_root, task_system, status_filter, summary_only))

    @mcp.tool(title="Register Claude todos", annotations=ACT)
    async def register_claude_todos(
        ctx: Context,
        todos: Annotated[list[Todo], Field(max_length=100, description="The current todo list (≤ 100 items).")],
        session_id: Annotated[
            str, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9\-_]+$", description="Your session's id.")
        ] = "default",
    ) -> RegisterResult:
        """Register Claude Code's current todos so get_task_status and todo can show them (the newest
        session registered within the last hour is shown)."""
        return await call(_tasks(ctx).register(todos, session_id))

    @mcp.tool(title="Todo dashboard", annotations=READ)
    async def todo(
        ctx: Context,
        project_root: ProjectRoot = None,
        task_system: Annotated[TaskSystem, Field(description="Which tasks to show.")] = "taskmaster",
        sections: Annotated[
            list[Section], Field(min_length=1, max_length=4, description="Sections, in this order.")
        ] = ["completed", "current", "upcoming"],  # noqa: B006  (pydantic copies defaults)
        limit_completed: Annotated[int, Field(ge=1, le=50, description="Completed tasks shown.")] = 5,
        show_subtasks: Annotated[bool, Field(description="List TaskMaster subtasks under their task.")] = True,
    ) -> str:
        """A Markdown todo dashboard (# 📋 Live Todo Dashboard): completed, current and upcoming tasks."""
        return await call(_tasks(ctx).dashboard(project_root, task_system, sections, limit_completed, show_subtasks))
