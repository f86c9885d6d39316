"""Reading task files under a project root, never outside it.

Every file is named relative to the project root and read only when its real path (symlinks
resolved) is inside the root's real path: a ``tasks.json`` that is a symlink to ``/etc/...``
or a ``.claude`` directory linked elsewhere is reported, not read. Files are capped at
``MAX_FILE_BYTES``. Parsing turns the formats the two task systems write into ``TaskItem``s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cctg_mcp.resilience.errors import ValidationError
from cctg_mcp.tasks.models import TaskItem

MAX_FILE_BYTES = 5 * 1024 * 1024
#: Project-local todo files the original looked in, then Claude Code's per-session folder.
TODO_FILES = (".claude/session/todos.json", ".claude/todos.json", ".cc_todos.json", ".claude_session.json")
TODO_DIR = ".claude/todos"
TASKMASTER_FILE = ".taskmaster/tasks/tasks.json"
TASKMASTER_STATE = ".taskmaster/state.json"


class OutsideRootError(ValueError):
    """A task file whose real path is outside the project root."""


def project_root(raw: str | None) -> Path:
    """The real path of ``raw`` (the server's working directory when not given), which must be a directory."""
    if raw is not None and "\x00" in raw:
        raise ValidationError("project_root contains a NUL character.")
    path = Path(raw).expanduser() if raw else Path.cwd()
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ValidationError(f"project_root {raw!r} does not exist; give the project's directory.") from None
    if not resolved.is_dir():
        raise ValidationError(f"project_root {raw!r} is not a directory; give the project's directory.")
    return resolved


def inside(root: Path, relative: str | Path) -> Path | None:
    """The real path of ``root / relative`` when it exists, None when it does not; raises
    ``OutsideRootError`` when it resolves outside ``root`` (a symlink, ``..``)."""
    candidate = root / relative
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root):
        raise OutsideRootError(f"{relative} resolves outside the project root; it was not read")
    return resolved


def read_json(path: Path, shown: str) -> Any:
    """Parse a JSON file, at most ``MAX_FILE_BYTES``; errors name the file as ``shown``."""
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{shown} is larger than {MAX_FILE_BYTES} bytes; not read")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown} is not valid JSON ({exc})") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def todo_items(data: Any) -> list[TaskItem] | None:
    """Todos from an array, ``{"todos": [...]}`` or ``{"tasks": [...]}``; None if it is not todo data."""
    items = data if isinstance(data, list) else None
    if isinstance(data, dict):
        items = next((data[k] for k in ("todos", "tasks") if isinstance(data.get(k), list)), None)
    if items is None:
        return None
    todos = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        title = _text(item.get("content")) or _text(item.get("title")) or _text(item.get("description"))
        if title is None:
            continue
        todos.append(
            TaskItem(
                id=str(item.get("id", index + 1)),
                title=title,
                status=str(item.get("status") or "pending"),
                priority=_text(item.get("priority")),
            )
        )
    return todos if todos or not items else None


@dataclass
class TodoFile:
    """A task file found under the project root."""

    shown: str  # relative to the project root
    path: Path
    mtime: float


@dataclass
class Search:
    """The task files a search found, the paths it tried, and those it refused (outside the root)."""

    found: list[TodoFile] = field(default_factory=list)
    attempted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def find_todo_files(root: Path) -> Search:
    """The project's todo files that exist inside the root, newest first."""
    search = Search()
    names: list[str] = list(TODO_FILES)
    try:
        folder = inside(root, TODO_DIR)
    except OutsideRootError as exc:
        search.refused.append(str(exc))
        folder = None
    if folder is not None and folder.is_dir():
        names += sorted(f"{TODO_DIR}/{p.name}" for p in folder.glob("*.json"))[:200]
    for name in names:
        search.attempted.append(name)
        try:
            path = inside(root, name)
        except OutsideRootError as exc:
            search.refused.append(str(exc))
            continue
        if path is not None and path.is_file():
            search.found.append(TodoFile(name, path, path.stat().st_mtime))
    search.found.sort(key=lambda f: f.mtime, reverse=True)
    return search


def taskmaster_tasks(data: Any, prefer: str | None = None) -> tuple[str | None, list[Any]]:
    """(tag, raw tasks) from the formats TaskMaster has written: tagged ``{"master": {"tasks"}}``,
    ``{"tags": {"master": {"tasks"}}}``, ``{"data": {"tasks"}}``, ``{"tasks"}`` or a bare array.
    Of several tags, ``prefer`` (TaskMaster's current tag), else ``master``, else the first."""
    if isinstance(data, list):
        return None, data
    if not isinstance(data, dict):
        raise ValueError("tasks.json is neither a list of tasks nor an object holding them")
    if isinstance(data.get("tasks"), list):
        return None, data["tasks"]
    inner = data.get("data")
    if isinstance(inner, dict) and isinstance(inner.get("tasks"), list):
        return None, inner["tasks"]
    tags = data["tags"] if isinstance(data.get("tags"), dict) else data
    tagged = {k: v for k, v in tags.items() if isinstance(v, dict) and isinstance(v.get("tasks"), list)}
    if not tagged:
        raise ValueError("tasks.json holds no task list (expected tasks, data.tasks or <tag>.tasks)")
    tag = prefer if prefer in tagged else "master" if "master" in tagged else next(iter(tagged))
    return tag, tagged[tag]["tasks"]


def flatten_taskmaster(raw: list[Any]) -> tuple[list[TaskItem], int, int]:
    """TaskMaster tasks and their subtasks (ids ``<parent>.<sub>``): (items, main count, subtask count)."""
    items: list[TaskItem] = []
    main = subs = 0

    def item(task: dict[str, Any], task_id: str, parent: str | None) -> TaskItem:
        return TaskItem(
            id=task_id,
            title=_text(task.get("title")) or _text(task.get("description")) or "Untitled task",
            description=_text(task.get("description")),
            status=str(task.get("status") or "pending"),
            priority=_text(task.get("priority")),
            dependencies=[str(d) for d in task.get("dependencies") or [] if isinstance(d, (str, int))],
            parent_id=parent,
            is_subtask=parent is not None,
        )

    for task in raw:
        if not isinstance(task, dict):
            continue
        parent_id = str(task.get("id", main + 1))
        items.append(item(task, parent_id, None))
        main += 1
        for sub in task.get("subtasks") or []:
            if isinstance(sub, dict):
                items.append(item(sub, f"{parent_id}.{sub.get('id', subs + 1)}", parent_id))
                subs += 1
    return items, main, subs


def current_tag(root: Path) -> str | None:
    """TaskMaster's current tag from ``.taskmaster/state.json`` (None when absent or unreadable)."""
    try:
        path = inside(root, TASKMASTER_STATE)
        state = read_json(path, TASKMASTER_STATE) if path is not None else None
    except (OSError, ValueError):
        return None
    tag = state.get("currentTag") if isinstance(state, dict) else None
    return tag if isinstance(tag, str) else None
