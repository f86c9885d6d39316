"""Per-event settings act: ``events.<type>.priority`` orders the outbox (and is what degraded
mode looks at, see test_breaker_e2e), ``events.<type>.timeout`` is the send tool's budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_settings

from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.config import parse_resilience_config

pytestmark = pytest.mark.anyio


def service(tmp_path: Path, events: dict[str, object] | None = None) -> NotificationService:
    config = parse_resilience_config({"events": events or {}})
    return NotificationService(make_settings(None, tmp_path), None, None, resilience=config)


async def test_configured_priority_decides_the_claim_order(tmp_path: Path) -> None:
    svc = service(tmp_path, {"task_started": {"priority": "critical"}, "task_failed": {"priority": "low"}})
    failed = svc.build_event(type="task_failed", title="t", description="catalogue says high")
    started = svc.build_event(type="task_started", title="t", description="catalogue says normal")
    assert (failed.priority, started.priority) == ("low", "critical")
    box = await Outbox.open(tmp_path / "outbox.sqlite3")
    try:
        await box.enqueue(failed, [1])  # older, but configured low
        await box.enqueue(started, [1])
        claimed = await box.claim_due("me", 60, limit=2)
    finally:
        await box.close()
    assert [d.event.type for d in claimed] == ["task_started", "task_failed"]


def test_seed_event_priorities_apply_by_default(tmp_path: Path) -> None:
    svc = service(tmp_path)
    assert svc.build_event(type="system_health", title="t", description="d").priority == "normal"
    assert svc.build_event(type="performance_alert", title="t", description="d").priority == "critical"
    assert svc.build_event(type="git_push", title="t", description="d").priority == "normal"  # not in the table


def test_event_timeout_is_the_send_budget(tmp_path: Path) -> None:
    svc = service(tmp_path, {"performance_alert": {"timeout": 700}})
    assert svc.budget("sendPerformanceAlert", "performance_alert") == 0.7  # the event's, over the operation's
    assert svc.budget("sendEvent", "git_push") == 10.0  # no event entry: the operation's (seed sendEvent)
    assert svc.budget("sendEvent", "task_completion") == 8.0  # seed events.task_completion
