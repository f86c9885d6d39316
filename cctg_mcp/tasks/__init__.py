"""Tasks: Claude Code todos and TaskMaster tasks under a project root (the original's task
tools, REFERENCE §A 2.4). ``files`` reads (never outside the root), ``service`` holds the use
cases, ``dashboard`` renders the ``todo`` Markdown, ``models`` the results."""

from cctg_mcp.tasks.models import RegisterResult, Section, Status, TaskStatus, TaskSystem, Todo
from cctg_mcp.tasks.service import TaskService

__all__ = ["RegisterResult", "Section", "Status", "TaskService", "TaskStatus", "TaskSystem", "Todo"]
