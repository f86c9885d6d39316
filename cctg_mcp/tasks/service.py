"""Task use cases, free of MCP: register Claude Code todos, read task status, the dashboard.

Registered todos are kept per session in ``<data dir>/todos/<session_id>.json`` (written
atomically, so every server process sharing the data dir reads the same ones; the original
kept them in memory and in one shared ``$TMPDIR`` file). ``get_task_status`` prefers todos
registered within the last hour (the newest session), then the newest todo file in the
project; TaskMaster tasks come from ``<project>/.taskmaster/tasks/tasks.json``. Every file
read is inside the project root (``tasks/files.py``).
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import partial
from pathlib import Path

import anyio.to_thread

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock, iso_z
from cctg_mcp.resilience.errors import ResourceError
from cctg_mcp.tasks import files
from cctg_mcp.tasks.dashboard import render_dashboard
from cctg_mcp.tasks.models import (
    ClaudeCodeTasks,
    RegisterResult,
    Section,
    Status,
    Summary,
    TaskItem,
    TaskmasterTasks,
    TaskStatus,
    TaskSystem,
    Todo,
    combine,
    normalise,
)

#: Registered todos are preferred for this long after registration (as in the original).
REGISTERED_FRESH_S = 3600.0
#: A todo source updated this recently counts as a live session.
ACTIVE_S = 300.0


def _iso(epoch: float) -> str:
    return iso_z(epoch)


def _filtered(items: list[TaskItem], status: Status | None) -> list[TaskItem]:
    return items if status is None else [t for t in items if normalise(t.status) == status]


def _summary(items: list[TaskItem]) -> Summary:
    summary = Summary()
    for item in items:
        summary.add(normalise(item.status))
    return summary


class TaskService:
    """The task tools' use cases: registered todos in the data dir, task files under a project root."""

    def __init__(self, data_dir: Path, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.todos_dir = data_dir / "todos"
        self.clock = clock

    # ---- register_claude_todos ---------------------------------------------------------

    async def register(self, todos: list[Todo], session_id: str = "default") -> RegisterResult:
        try:
            await anyio.to_thread.run_sync(self._write, todos, session_id)
        except OSError as exc:
            raise ResourceError(
                f"Could not store the todos in {self.todos_dir} ({exc.strerror}); make the data dir writable.",
                code="TODOS_NOT_SAVED",
            ) from None
        return RegisterResult(
            success=True,
            message=f"Successfully registered {len(todos)} todos for session {session_id}",
            registered_count=len(todos),
            session_id=session_id,
        )

    def _write(self, todos: list[Todo], session_id: str) -> None:
        self.todos_dir.mkdir(parents=True, exist_ok=True)
        doc = {"session_id": session_id, "todos": [t.model_dump() for t in todos], "timestamp": _iso(self.clock.time())}
        fd, tmp = tempfile.mkstemp(prefix=f".{session_id}.", dir=self.todos_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            os.replace(tmp, self.todos_dir / f"{session_id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ---- get_task_status ---------------------------------------------------------------

    async def status(
        self,
        project_root: str | None = None,
        task_system: TaskSystem = "both",
        status_filter: Status | None = None,
        summary_only: bool = False,
    ) -> TaskStatus:
        return await anyio.to_thread.run_sync(
            partial(self._status, project_root, task_system, status_filter, summary_only)
        )

    def _status(
        self, raw_root: str | None, task_system: TaskSystem, status_filter: Status | None, summary_only: bool
    ) -> TaskStatus:
        root = files.project_root(raw_root)
        result = TaskStatus(
            timestamp=_iso(self.clock.time()),
            task_system=task_system,
            status_filter=status_filter or "all",
            summary_only=summary_only,
            project_root=str(root),
        )
        if task_system in ("claude-code", "both"):
            result.claude_code_tasks = self._claude(root, status_filter, summary_only)
        if task_system in ("taskmaster", "both"):
            result.taskmaster_tasks = self._taskmaster(root, status_filter, summary_only)
        claude, taskmaster = result.claude_code_tasks, result.taskmaster_tasks
        if claude is not None and taskmaster is not None:  # "both"
            result.combined_summary = combine(claude.summary, taskmaster.summary)
        return result

    def _registered(self) -> tuple[str, list[TaskItem], float] | None:
        """The newest registered session younger than an hour: (session, todos, mtime)."""
        try:
            candidates = sorted(
                ((p.stat().st_mtime, p) for p in self.todos_dir.glob("*.json")), key=lambda c: c[0], reverse=True
            )
        except OSError:
            return None
        for mtime, path in candidates:
            if self.clock.time() - mtime > REGISTERED_FRESH_S:
                break
            try:
                doc = files.read_json(path, path.name)
            except (OSError, ValueError):
                continue
            items = files.todo_items(doc)
            if items:
                return str(doc.get("session_id", path.stem)), items, mtime
        return None

    def _claude(self, root: Path, status_filter: Status | None, summary_only: bool) -> ClaudeCodeTasks:
        registered = self._registered()
        search = files.find_todo_files(root)
        source: tuple[str, list[TaskItem], float] | None = None
        if registered is not None:
            source = (f"registered:{registered[0]}", registered[1], registered[2])
        errors: list[str] = list(search.refused)
        for found in search.found if source is None else []:
            try:
                items = files.todo_items(files.read_json(found.path, found.shown))
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
                continue
            if items is not None:
                source = (found.shown, items, found.mtime)
                break
        if source is None:
            return ClaudeCodeTasks(
                available=False,
                message="No Claude Code todos found: register them with register_claude_todos, or keep them in "
                "one of the project's todo files.",
                attempted_sources=search.attempted[:10],
                error="; ".join(errors) or None,
            )
        name, items, mtime = source
        chosen = _filtered(items, status_filter)
        return ClaudeCodeTasks(
            available=True,
            source=name,
            session_active=self.clock.time() - mtime < ACTIVE_S,
            last_updated=_iso(mtime),
            total_count=len(items),
            filtered_count=len(chosen),
            summary=_summary(items),
            tasks=None if summary_only else chosen,
            error="; ".join(errors) or None,
        )

    def _taskmaster(self, root: Path, status_filter: Status | None, summary_only: bool) -> TaskmasterTasks:
        try:
            path = files.inside(root, files.TASKMASTER_FILE)
            if path is None or not path.is_file():
                return TaskmasterTasks(
                    available=False,
                    error=f"TaskMaster file not found ({files.TASKMASTER_FILE}). Run task-master init to set up "
                    "TaskMaster.",
                )
            tag, raw = files.taskmaster_tasks(files.read_json(path, files.TASKMASTER_FILE), files.current_tag(root))
        except (OSError, ValueError) as exc:  # OutsideRootError is a ValueError
            return TaskmasterTasks(available=False, error=f"Failed to read TaskMaster tasks: {exc}")
        items, main, subs = files.flatten_taskmaster(raw)
        chosen = _filtered(items, status_filter)
        return TaskmasterTasks(
            available=True,
            source=files.TASKMASTER_FILE,
            current_tag=tag,
            total_count=len(items),
            filtered_count=len(chosen),
            main_tasks_count=main,
            subtasks_count=subs,
            summary=_summary(items),
            tasks=None if summary_only else chosen,
        )

    # ---- todo --------------------------------------------------------------------------

    async def dashboard(
        self,
        project_root: str | None = None,
        task_system: TaskSystem = "taskmaster",
        sections: list[Section] | None = None,
        limit_completed: int = 5,
        show_subtasks: bool = True,
    ) -> str:
        status = await self.status(project_root, task_system)
        return render_dashboard(
            status, sections or ["completed", "current", "upcoming"], limit_completed, show_subtasks
        )
