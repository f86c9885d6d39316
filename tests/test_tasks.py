"""Task tools through the running server (a real mcp.Client, in memory): register_claude_todos,
get_task_status and todo read Claude Code todos and TaskMaster files under a project root and
never outside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import call, connected, make_settings, text_of
from mcp import Client

pytestmark = pytest.mark.anyio

TASKMASTER = {
    "master": {
        "tasks": [
            {"id": 1, "title": "Set up repo", "status": "done", "priority": "high", "dependencies": []},
            {
                "id": 2,
                "title": "Write the parser",
                "status": "in-progress",
                "priority": "medium",
                "dependencies": [1],
                "subtasks": [
                    {"id": 1, "title": "Tokenizer", "status": "done"},
                    {"id": 2, "title": "Grammar", "status": "pending"},
                ],
            },
            {"id": 3, "title": "Ship it", "status": "pending", "priority": "low", "dependencies": [2]},
            {"id": 4, "title": "Waiting on legal", "status": "blocked"},
        ]
    },
    "other-tag": {"tasks": [{"id": 9, "title": "Elsewhere", "status": "pending"}]},
}


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


async def error_of(client: Client, tool: str, args: dict[str, Any]) -> str:
    with anyio.fail_after(15):
        result = await client.call_tool(tool, args)
    assert result.is_error, result
    return text_of(result)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / ".taskmaster" / "tasks" / "tasks.json", TASKMASTER)
    return root


async def test_registered_todos_are_the_claude_code_tasks(tmp_path: Path, project: Path) -> None:
    todos = [
        {"id": "a", "content": "Read the issue", "status": "completed"},
        {"id": "b", "content": "Write the tests", "status": "in_progress"},
        {"id": "c", "content": "Land it", "status": "pending"},
    ]
    async with connected(make_settings(None, tmp_path / "data")) as client:
        registered = await call(client, "register_claude_todos", {"todos": todos, "session_id": "s-1"})
        status = await call(
            client,
            "get_task_status",
            {"project_root": str(project), "task_system": "claude-code", "status_filter": "in_progress"},
        )
    assert registered == {
        "success": True,
        "message": "Successfully registered 3 todos for session s-1",
        "registered_count": 3,
        "session_id": "s-1",
    }
    stored = json.loads((tmp_path / "data" / "todos" / "s-1.json").read_text())
    assert stored["session_id"] == "s-1" and [t["id"] for t in stored["todos"]] == ["a", "b", "c"]
    claude = status["claude_code_tasks"]
    assert (claude["available"], claude["source"], claude["session_active"]) == (True, "registered:s-1", True)
    assert (claude["total_count"], claude["filtered_count"]) == (3, 1)
    assert claude["summary"] == {"pending": 1, "in_progress": 1, "completed": 1, "blocked": 0}
    assert [t["title"] for t in claude["tasks"]] == ["Write the tests"]
    assert status["status_filter"] == "in_progress" and status.get("taskmaster_tasks") is None


async def test_register_rejects_bad_input_naming_the_field(tmp_path: Path) -> None:
    async with connected(make_settings(None, tmp_path / "data")) as client:
        bad_status = await error_of(
            client, "register_claude_todos", {"todos": [{"id": "a", "content": "x", "status": "done"}]}
        )
        bad_session = await error_of(
            client,
            "register_claude_todos",
            {"todos": [{"id": "a", "content": "x", "status": "pending"}], "session_id": "../../etc"},
        )
        too_many = await error_of(
            client,
            "register_claude_todos",
            {"todos": [{"id": str(i), "content": "x", "status": "pending"} for i in range(101)]},
        )
    assert "status" in bad_status and "in_progress" in bad_status
    assert "session_id" in bad_session
    assert "todos" in too_many and "100" in too_many
    assert not (tmp_path / "data" / "todos").exists() and not (tmp_path / "etc").exists()


async def test_taskmaster_tasks_with_subtasks_and_a_combined_summary(tmp_path: Path, project: Path) -> None:
    write(project / ".claude" / "todos.json", [{"id": 1, "content": "Review", "status": "pending"}])
    async with connected(make_settings(None, tmp_path / "data")) as client:
        both = await call(client, "get_task_status", {"project_root": str(project)})
        done = await call(
            client,
            "get_task_status",
            {"project_root": str(project), "task_system": "taskmaster", "status_filter": "completed"},
        )
        counts = await call(client, "get_task_status", {"project_root": str(project), "summary_only": True})
    tm = both["taskmaster_tasks"]
    assert (tm["available"], tm["current_tag"], tm["source"]) == (True, "master", ".taskmaster/tasks/tasks.json")
    assert (tm["main_tasks_count"], tm["subtasks_count"], tm["total_count"]) == (4, 2, 6)
    assert tm["summary"] == {"pending": 2, "in_progress": 1, "completed": 2, "blocked": 1}
    assert [t["id"] for t in tm["tasks"] if t["is_subtask"]] == ["2.1", "2.2"]
    assert both["claude_code_tasks"]["source"] == ".claude/todos.json"  # the project's todo file
    combined = both["combined_summary"]
    assert (combined["total_pending"], combined["total_completed"], combined["grand_total"]) == (3, 2, 7)
    assert combined["breakdown"]["claude_code"]["total"] == 1 and combined["breakdown"]["taskmaster"]["total"] == 6
    assert [t["title"] for t in done["taskmaster_tasks"]["tasks"]] == ["Set up repo", "Tokenizer"]  # done = completed
    assert counts["taskmaster_tasks"].get("tasks") is None
    assert counts["taskmaster_tasks"]["total_count"] == 6


async def test_no_file_outside_the_project_root_is_read(tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.json", {"tasks": [{"id": 1, "title": "SECRET", "status": "done"}]})
    project = tmp_path / "project"
    (project / ".taskmaster" / "tasks").mkdir(parents=True)
    (project / ".taskmaster" / "tasks" / "tasks.json").symlink_to(secret)  # a link out of the root
    (project / ".claude").symlink_to(secret.parent, target_is_directory=True)  # a whole folder out of it
    write(secret.parent / "todos.json", [{"id": 1, "content": "SECRET TODO", "status": "pending"}])
    async with connected(make_settings(None, tmp_path / "data")) as client:
        status = await call(client, "get_task_status", {"project_root": str(project)})
        dotted = await call(client, "get_task_status", {"project_root": f"{project}/../project"})
        missing = await error_of(client, "get_task_status", {"project_root": str(tmp_path / "nope")})
        a_file = await error_of(client, "get_task_status", {"project_root": str(secret)})
        dashboard = text_of(await client.call_tool("todo", {"project_root": str(project), "task_system": "both"}))
    tm, claude = status["taskmaster_tasks"], status["claude_code_tasks"]
    assert tm["available"] is False and "outside the project root" in tm["error"]
    assert claude["available"] is False and "outside the project root" in claude["error"]
    assert "SECRET" not in json.dumps(status) and "SECRET" not in dashboard
    assert dotted["project_root"] == str(project.resolve())  # '..' is resolved, then bounded the same way
    assert "project_root" in missing and "does not exist" in missing
    assert "project_root" in a_file and "not a directory" in a_file


async def test_todo_renders_the_dashboard(tmp_path: Path, project: Path) -> None:
    async with connected(make_settings(None, tmp_path / "data")) as client:
        default = text_of(await client.call_tool("todo", {"project_root": str(project)}))
        blocked = text_of(
            await client.call_tool(
                "todo",
                {"project_root": str(project), "sections": ["blocked"], "show_subtasks": False},
            )
        )
        bad = await error_of(client, "todo", {"project_root": str(project), "limit_completed": 0})
    assert default.startswith("# 📋 Live Todo Dashboard")
    assert "## ✅ Completed Tasks (1)" in default and "✅ **Set up repo** `TaskMaster` [HIGH]" in default
    assert "## 🔄 Current Work (1)" in default and "  → ✅ **Tokenizer** `TaskMaster`" in default
    assert "  → 📋 **Grammar** `TaskMaster`" in default
    assert "## 📋 Upcoming Tasks (1)" in default and "Waiting on legal" not in default.split("---")[0]
    assert "### 📋 TaskMaster Project" in default and "• **Blocked:** 1" in default
    assert "Claude Code Session" not in default  # task_system defaults to taskmaster
    assert "## 🚧 Blocked Tasks (1)" in blocked and "Tokenizer" not in blocked and "Completed" not in blocked
    assert "limit_completed" in bad
