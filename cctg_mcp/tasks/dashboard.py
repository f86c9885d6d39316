"""The ``todo`` tool's Markdown dashboard (``# 📋 Live Todo Dashboard``), from a TaskStatus."""

from __future__ import annotations

from cctg_mcp.tasks.models import Section, Summary, TaskItem, TaskStatus, normalise

ICON = {"completed": "✅", "in_progress": "🔄", "pending": "📋", "blocked": "🚧"}
TITLE = {
    "completed": "✅ Completed Tasks",
    "current": "🔄 Current Work",
    "upcoming": "📋 Upcoming Tasks",
    "blocked": "🚧 Blocked Tasks",
}
STATUS_OF = {"completed": "completed", "current": "in_progress", "upcoming": "pending", "blocked": "blocked"}
RANK = {"critical": 4, "high": 3, "urgent": 3, "medium": 2, "normal": 2, "low": 1}


def _line(task: TaskItem, system: str, indent: str = "") -> str:
    icon = ICON.get(normalise(task.status) or "", "❓")
    priority = f" [{task.priority.upper()}]" if task.priority else ""
    return f"{indent}{icon} **{task.title}** `{system}`{priority}"


def _section(status: TaskStatus, section: Section, limit_completed: int) -> list[tuple[TaskItem, str]]:
    wanted = STATUS_OF[section]
    rows: list[tuple[TaskItem, str]] = []
    groups = [
        (status.claude_code_tasks.tasks if status.claude_code_tasks else None, "Claude"),
        (status.taskmaster_tasks.tasks if status.taskmaster_tasks else None, "TaskMaster"),
    ]
    for tasks, system in groups:
        chosen = [t for t in tasks or [] if not t.is_subtask and normalise(t.status) == wanted]
        if section == "completed":
            chosen = chosen[-limit_completed:]  # the most recent ones
        rows += [(t, system) for t in chosen]
    rows.sort(key=lambda row: -RANK.get((row[0].priority or "").lower(), 0))  # stable: file order within a rank
    return rows


def _counts(summary: Summary) -> str:
    return f"• **Active:** {summary.in_progress} | **Pending:** {summary.pending} | **Done:** {summary.completed}"


def render_dashboard(status: TaskStatus, sections: list[Section], limit_completed: int, show_subtasks: bool) -> str:
    lines = ["# 📋 Live Todo Dashboard", f"*Last updated: {status.timestamp}*"]
    claude, taskmaster = status.claude_code_tasks, status.taskmaster_tasks
    if claude is not None and claude.available:
        badge = "🟢 LIVE" if claude.session_active else "🟡 CACHED"
        lines.append(f"*{badge} Claude Code Session ({claude.last_updated})*")
    lines.append("")
    subtasks: dict[str, list[TaskItem]] = {}
    for task in (taskmaster.tasks if taskmaster else None) or []:
        if task.parent_id is not None:
            subtasks.setdefault(task.parent_id, []).append(task)
    shown = 0
    for section in dict.fromkeys(sections):  # each section once, in the order asked
        rows = _section(status, section, limit_completed)
        if not rows:
            continue
        lines += [f"## {TITLE[section]} ({len(rows)})", ""]
        for task, system in rows:
            shown += 1
            lines.append(_line(task, system))
            if show_subtasks and system == "TaskMaster":
                lines += [_line(sub, system, "  → ") for sub in subtasks.get(task.id, [])]
            lines.append("")
    if not shown:
        lines += ["*No tasks in the chosen sections.*", ""]
    if claude is not None and not claude.available:
        lines += [f"> {claude.error or claude.message}", ""]
    if taskmaster is not None and not taskmaster.available:
        lines += [f"> {taskmaster.error}", ""]
    lines += ["---", "## 📊 Live Summary"]
    if claude is not None and claude.summary is not None:
        lines += ["### 🎯 Claude Code Session", _counts(claude.summary)]
    if taskmaster is not None and taskmaster.summary is not None:
        lines += ["### 📋 TaskMaster Project", _counts(taskmaster.summary)]
        if taskmaster.summary.blocked:
            lines.append(f"• **Blocked:** {taskmaster.summary.blocked}")
    if status.combined_summary is not None:
        c = status.combined_summary
        lines += [
            "### 🔄 Combined Total",
            f"• **All Active:** {c.total_in_progress} | **All Pending:** {c.total_pending} "
            f"| **All Done:** {c.total_completed}",
        ]
    return "\n".join(lines)
