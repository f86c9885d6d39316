"""A hostile world, bridge mode: a response file from a stranger never answers anything.

Anyone who can write the bridge's responses directory can forge a ``telegram_callback_*.json``
naming any user. The allow-list (TELEGRAM_ALLOWED_USERS) applies to those files exactly as to
getUpdates answers: ignored, counted once per file, logged at most once a minute, never
returned by any tool."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from helpers import (
    NOW,
    STRANGER,
    USERS,
    bridge_answers,
    call,
    callback_file,
    connected_in_virtual_time,
    event,
    make_settings,
    text_file,
)

from cctg_mcp.answers import BridgeAnswers
from cctg_mcp.resilience.clock import FakeClock

pytestmark = pytest.mark.anyio


async def test_a_strangers_press_is_ignored_counted_once_and_never_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(wall_start=NOW + 5)  # the files are stamped on real time, a few seconds ago
    async with bridge_answers(tmp_path, event("ev-ask", "deploy-7"), clock=clock) as answers:
        directory = answers.responses_dir
        for i in range(5):  # a flood of forged presses: one warning line, five counted
            callback_file(directory, "approve_deploy-7", at=NOW - 60 + i, user=STRANGER)
        text_file(directory, "ship it", at=NOW - 1, user=STRANGER)
        with caplog.at_level(logging.WARNING, logger="cctg_mcp.answers.bridge"):
            assert (await answers.responses()).total == 0
            pending = await answers.pending(since_minutes=10)
            assert pending.summary.pending_approvals == 0 and pending.summary.total_recent_responses == 0
            with anyio.fail_after(10):
                async with clock.autojump():
                    waited = await answers.wait("ev-ask", 3)
        assert waited.status == "timeout" and waited.response is None
        assert answers.unauthorized == 6  # each file once, however often it is read
        assert answers.status()["unauthorized_ignored"] == 6
        lines = [r for r in caplog.records if "not in TELEGRAM_ALLOWED_USERS" in r.getMessage()]
        assert len(lines) == 1 and "999" in lines[0].getMessage()

        callback_file(directory, "deny_deploy-7", at=NOW, user=USERS[0])  # the real person answers
        with anyio.fail_after(10):
            answered = await answers.wait("ev-ask", 3)
        assert (answered.status, answered.action) == ("answered", "deny")
        assert answered.response is not None and answered.response.user_id == USERS[0]


async def test_an_empty_allow_list_accepts_no_bridge_answer(tmp_path: Path) -> None:
    callback_file(tmp_path / "responses", "approve_deploy-7", at=NOW - 1, user=USERS[0])
    answers = BridgeAnswers(tmp_path / "responses", None, clock=FakeClock(wall_start=NOW + 5))
    assert (await answers.responses()).total == 0
    assert "TELEGRAM_ALLOWED_USERS is empty" in answers.status()["answers_refused"]


async def test_wait_for_response_does_not_return_a_strangers_approval(tmp_path: Path) -> None:
    """The reported case: user 999 writes ``approve_<task_id>``; the tool must not say approved."""
    settings = make_settings(
        None,
        tmp_path / "data",
        CCTG_DELIVERY="bridge",
        CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health",
        TELEGRAM_ALLOWED_USERS=",".join(map(str, USERS)),
    )
    async with connected_in_virtual_time(settings) as (client, clock):  # no bridge: each send waits its deadline
        sent = await call(client, "send_approval_request", {"title": "Deploy?", "description": "prod"})
        (task_id,) = {p.name.rsplit("_", 1)[0] for p in settings.events_dir.glob("*.json")}
        callback_file(settings.responses_dir, f"approve_{task_id}", at=clock.time() - 5, user=STRANGER)
        waited = await call(client, "wait_for_response", {"event_id": sent["event_id"], "timeout_seconds": 1})
        assert waited["status"] == "timeout" and waited.get("action") is None
        assert (await call(client, "get_telegram_responses", {}))["total"] == 0
        status = await call(client, "get_resilience_status", {})
    assert status["answers"]["unauthorized_ignored"] == 1
