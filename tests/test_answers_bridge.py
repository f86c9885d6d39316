"""Answers in bridge mode (the CCTelegram bridge's response files) and the answers' status.

Unit tests drive ``BridgeAnswers`` with a real outbox and real files, and its re-scan on a
fake clock (virtual time: the documented 1-second re-scan takes no wall time). End to end,
a real ``mcp.Client`` talks to the real server in bridge delivery (no token); the test plays
the bridge by writing its response files. The poller's status runs against the stand-in."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import (
    ALICE,
    NOW,
    USERS,
    bridge_answers,
    call,
    callback_file,
    connected_in_virtual_time,
    event,
    fast_config,
    make_settings,
    stamp,
    text_file,
    text_of,
)
from mcp import Client

from cctg_mcp.answers import (
    ANSWERS_FILE,
    Answers,
    BridgeAnswers,
    EventIndex,
    ResponsePoller,
    ResponseStore,
    UnknownEventError,
    WaitResult,
    updates_pipeline,
)
from cctg_mcp.answers.report import CONFLICT_ISSUE
from cctg_mcp.app import open_service
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.ops.status import resilience_status
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.transports.telegram import TelegramTransport

pytestmark = pytest.mark.anyio


class WatchedClock(FakeClock):
    """A fake clock that also tells the test when a sleep starts (the waiter is between scans)."""

    def __init__(self) -> None:
        super().__init__(wall_start=NOW + 5)
        self.started = 0
        self._started: anyio.Event | None = None

    async def sleep(self, seconds: float) -> None:
        self.started += 1
        if self._started is not None:
            self._started.set()
        await super().sleep(seconds)

    async def until_sleeps(self, n: int) -> None:
        while self.started < n:
            self._started = anyio.Event()
            await self._started.wait()


def junk(directory: Path) -> list[Path]:
    """What must be skipped: malformed response files, bridge_mode.json, other files."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "telegram_callback_111_20240101_000000.json": "{not json",
        "telegram_callback_111_20240101_000001.json": json.dumps({"user_id": 111}),  # no timestamp, no data
        "telegram_response_111_20240101_000002.json": json.dumps(["a list"]),
        "bridge_mode.json": json.dumps("Nomad"),
        "notes.json": json.dumps({"timestamp": stamp(NOW), "user_id": ALICE, "callback_data": "approve_x"}),
    }
    for name, body in files.items():
        (directory / name).write_text(body)
    return [directory / name for name in files]


# ---- BridgeAnswers -------------------------------------------------------------------------


async def test_responses_resolve_presses_to_events_and_skip_junk(tmp_path: Path) -> None:
    done = event("ev-done", "deploy-7", "task_completion")  # same task id, not an approval
    ask = event("ev-ask", "deploy-7")
    async with bridge_answers(tmp_path, ask, done) as answers:
        directory = answers.responses_dir
        assert (await answers.responses()).total == 0  # the directory does not exist yet
        junk(directory)
        callback_file(directory, "approve_deploy-7", at=NOW - 60)
        callback_file(directory, "deny_unknown-task", at=NOW - 30)
        text_file(directory, "looks good", at=NOW - 10)
        listed = await answers.responses(limit=2)
        assert (listed.count, listed.total) == (2, 3)
        assert [(r.kind, r.action) for r in listed.responses] == [("text", "text"), ("callback", "deny")]
        everything = (await answers.responses(limit=10)).responses
        press = everything[-1]
        assert (press.action, press.option, press.task_id, press.event_id) == (
            "approve",
            "Approve",
            "deploy-7",
            "ev-ask",
        )
        assert press.user_id == ALICE and press.username == "alice"
        assert everything[1].event_id is None  # a task this server never sent
        recent = await answers.responses(since_minutes=1)
        assert [r.action for r in recent.responses] == ["text", "deny"]  # by the answers' own timestamps

        pending = await answers.pending(since_minutes=10)
        s = pending.summary
        assert (s.total_recent_responses, s.actionable_responses, s.pending_approvals, s.pending_denials) == (
            3,
            2,
            1,
            1,
        )
        assert [a.event_id for a in pending.actionable_responses] == [None, "ev-ask"]
        joined = " ".join(pending.recommendations)
        assert "proceed with event(s) ev-ask" in joined and "could not be tied" in joined


async def test_clear_deletes_only_old_response_files_by_mtime(tmp_path: Path) -> None:
    async with bridge_answers(tmp_path) as answers:
        directory = answers.responses_dir
        old = [callback_file(directory, "approve_a", at=NOW - 3), text_file(directory, "old", at=NOW - 3)]
        fresh = callback_file(directory, "deny_b", at=NOW - 1)
        others = junk(directory)
        (directory / "telegram_callback_dir.json").mkdir()  # a directory with a response-like name
        for path in [*old, *others]:
            os.utime(path, (NOW - 48 * 3600, NOW - 48 * 3600))
        os.utime(fresh, (NOW - 3600, NOW - 3600))
        result = await answers.clear(older_than_hours=24, now=NOW)
        assert result.deleted_count == 5  # the two old answers and the three malformed old response files
        assert "Cleared 5 old response files" in result.message
        left = sorted(p.name for p in directory.iterdir())
        assert left == sorted([fresh.name, "telegram_callback_dir.json", "bridge_mode.json", "notes.json"])
        assert not any(p.exists() for p in old) and fresh.exists()
        assert (directory / "bridge_mode.json").exists() and (directory / "notes.json").exists()
        assert (directory / "telegram_callback_dir.json").is_dir()
        assert (await answers.clear(older_than_hours=24, now=NOW)).deleted_count == 0
        assert (await answers.clear(older_than_hours=1, now=NOW + 1)).deleted_count == 1  # now the fresh one


async def test_wait_rescans_every_second_on_the_clock_and_returns_the_first_tied_answer(tmp_path: Path) -> None:
    clock = WatchedClock()
    async with bridge_answers(tmp_path, event("ev-ask", "deploy-7"), clock=clock) as answers:
        directory = answers.responses_dir
        callback_file(directory, "approve_other-task", at=NOW - 5)  # not ours: does not answer
        results: list[WaitResult] = []

        async def waiter() -> None:
            results.append(await answers.wait("ev-ask", 60))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await clock.until_sleeps(1)
                assert results == [] and clock.sleeps == [1.0]  # scanned, found nothing, re-scans in 1 s
                await clock.advance(1.0)
                await clock.until_sleeps(2)
                assert results == []
                callback_file(directory, "deny_deploy-7", at=NOW - 1)  # the bridge writes the press
                callback_file(directory, "approve_deploy-7", at=NOW - 2, user=222)  # earlier, by someone else
                await clock.advance(1.0)
        (result,) = results
        assert (result.status, result.action, result.waited_seconds) == ("answered", "approve", 2.0)
        assert result.response is not None and result.response.user_id == 222  # the first answer, by timestamp
        assert clock.sleeps == [1.0, 1.0]


async def test_wait_times_out_reports_progress_and_refuses_unknown_events(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=NOW + 5)
    async with bridge_answers(tmp_path, event("ev-ask", "deploy-7"), clock=clock) as answers:
        with pytest.raises(UnknownEventError):
            await answers.wait("ev-never-sent", 5)
        progress: list[tuple[float, float]] = []

        async def on_progress(elapsed: float, total: float, _message: str) -> None:
            progress.append((elapsed, total))

        answers.progress_interval = 2.0
        with anyio.fail_after(10):
            async with clock.autojump():
                result = await answers.wait("ev-ask", 5, on_progress=on_progress)
        assert (result.status, result.waited_seconds) == ("timeout", 5.0)
        assert clock.sleeps == [1.0] * 5  # one re-scan a second, never more often
        assert progress == [(2.0, 5.0), (4.0, 5.0)]


async def test_wait_answers_at_once_when_already_answered(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=NOW + 5)
    async with bridge_answers(tmp_path, event("ev-ask", "deploy-7"), clock=clock) as answers:
        callback_file(answers.responses_dir, "approve_deploy-7", at=NOW - 1)
        with anyio.fail_after(10):
            result = await answers.wait("ev-ask", 30)
    assert (result.status, result.waited_seconds, clock.sleeps) == ("answered", 0.0, [])


async def test_without_a_readable_outbox_answers_are_listed_unresolved(tmp_path: Path) -> None:
    assert EventIndex.open_sync(tmp_path / "missing" / "outbox.sqlite3") is None
    callback_file(tmp_path / "responses", "ack_build-1", at=NOW - 1)
    answers = BridgeAnswers(tmp_path / "responses", None, clock=FakeClock(wall_start=NOW + 5), allowed_users=USERS)
    listed = await answers.responses()
    assert listed.total == 1
    (press,) = listed.responses
    assert (press.action, press.event_id, press.task_id) == ("acknowledge", None, "build-1")
    assert answers.status() == {
        "mode": "bridge",
        "responses_dir": str(tmp_path / "responses"),
        "poller": None,
        "events_resolvable": False,
        "allowed_users": 2,
        "unauthorized_ignored": 0,
    }


# ---- end to end through the MCP tools ------------------------------------------------------


def event_files(events_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in events_dir.glob("*.json")]


async def send_approval(client: Client, events_dir: Path, title: str) -> tuple[str, str]:
    sent = await call(client, "send_approval_request", {"title": title, "description": "prod"})
    assert sent["status"] == "queued"  # written; no bridge runs here to consume it, so not "delivered"
    assert "has not picked it up" in sent["reason"]
    (body,) = [b for b in event_files(events_dir) if b["title"] == title]
    assert body["event_id"] == sent["event_id"]
    return sent["event_id"], body["task_id"]


async def test_bridge_mode_answers_through_the_mcp_tools(tmp_path: Path) -> None:
    settings = make_settings(
        None,
        tmp_path / "data",
        CCTG_DELIVERY="bridge",
        CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health",
        TELEGRAM_ALLOWED_USERS=",".join(map(str, USERS)),
    )
    assert settings.token == "" and settings.delivery == "bridge"
    responses = settings.responses_dir
    # Virtual time: with no bridge, each approval request waits its whole deadline for the file to be taken.
    async with connected_in_virtual_time(settings) as (client, clock):
        event_id, task_id = await send_approval(client, settings.events_dir, "Deploy?")
        junk(responses)
        callback_file(responses, f"approve_{task_id}", at=clock.time() - 5)

        listed = await call(client, "get_telegram_responses", {"limit": 10})
        assert listed["total"] == 1 and listed["count"] == 1
        (press,) = listed["responses"]
        assert (press["event_id"], press["task_id"], press["action"]) == (event_id, task_id, "approve")

        pending = await call(client, "process_pending_responses", {})
        assert pending["summary"]["pending_approvals"] == 1 and pending["summary"]["actionable_responses"] == 1
        assert pending["actionable_responses"][0]["event_id"] == event_id

        answered = await call(client, "wait_for_response", {"event_id": event_id, "timeout_seconds": 30})
        assert (answered["status"], answered["action"]) == ("answered", "approve")

        # A second approval, answered while the tool waits: the file is written from here.
        second_id, second_task = await send_approval(client, settings.events_dir, "Migrate?")
        results: list[dict[str, Any]] = []

        async def waiter() -> None:
            results.append(await call(client, "wait_for_response", {"event_id": second_id, "timeout_seconds": 60}))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await clock.sleep(1.0)  # the tool has been waiting for a virtual second
                assert results == []
                callback_file(responses, f"deny_{second_task}", at=clock.time() + 1)
        (result,) = results
        assert (result["status"], result["action"], result["response"]["event_id"]) == ("answered", "deny", second_id)

        unknown = await client.call_tool("wait_for_response", {"event_id": "nope", "timeout_seconds": 1})
        assert unknown.is_error and "No event 'nope'" in text_of(unknown)

        for path in responses.iterdir():
            os.utime(path, (clock.time() - 48 * 3600,) * 2)
        cleared = await call(client, "clear_old_responses", {"older_than_hours": 24})
        assert cleared["deleted_count"] == 5  # two answers, three malformed response files
        assert sorted(p.name for p in responses.iterdir()) == ["bridge_mode.json", "notes.json"]
        assert (await call(client, "get_telegram_responses", {}))["total"] == 0

        status = await call(client, "get_resilience_status", {})
    assert status["answers"]["mode"] == "bridge" and status["answers"]["poller_running"] is None
    assert status["answers"]["responses_dir"] == str(responses)
    assert not any("answers from telegram" in issue.lower() for issue in status["active_issues"])


# ---- the poller's status -------------------------------------------------------------------


async def test_a_409_conflict_is_an_active_issue_through_the_mcp_tool(standin: TelegramStandIn, tmp_path: Path) -> None:
    standin.set_fault(FaultMode.SERVER_ERROR, methods={"getUpdates"}, status=409)
    services: list[NotificationService] = []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        async with open_service(make_settings(standin, tmp_path), resilience=fast_config(), poll_timeout=1) as runtime:
            services.append(runtime.service)
            yield runtime

    async with Client(build_server(opened)) as client:
        answers = services[-1].answers
        assert isinstance(answers, Answers) and answers.poller is not None
        with anyio.fail_after(10):
            while answers.poller.conflicts < 1:
                await answers.poller.round_done().wait()
        status = await call(client, "get_resilience_status", {})
    summary = status["answers"]
    assert summary["mode"] == "telegram" and summary["poller_running"] is True
    assert summary["in_conflict"] is True and summary["getupdates_conflicts"] >= 1
    assert "409" in summary["last_error"] and standin.token not in summary["last_error"]
    assert f"Answers from Telegram are not read: {CONFLICT_ISSUE}." in status["active_issues"]
    assert status["overall"] in ("degraded", "unhealthy")


async def test_a_poller_that_keeps_failing_is_an_issue_until_it_reads_again(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path)
    config = fast_config(circuitBreaker={"telegram": {"failureThreshold": 100, "successThreshold": 1}})
    store = await ResponseStore.open(tmp_path / ANSWERS_FILE)
    try:
        async with TelegramTransport(standin.token, standin.base_url) as transport:
            poller = ResponsePoller(
                store, transport, updates_pipeline(PipelineSet(config)), allowed_users=USERS, poll_timeout=0
            )
            poller.running = True  # as inside run(); rounds are driven one by one here
            service = Runtime(service=NotificationService(settings, None, None, answers=Answers(store, poller)))

            async def issues() -> list[str]:
                return [
                    i for i in (await resilience_status(service)).active_issues if "answers from telegram" in i.lower()
                ]

            assert await issues() == []
            standin.set_fault(FaultMode.SERVER_ERROR, methods={"getUpdates"}, status=502)
            for _ in range(2):
                await poller._poll_guarded()
            assert await issues() == []  # two failures: not yet "keeps failing"
            await poller._poll_guarded()
            (issue,) = await issues()
            assert "getUpdates failed 3 times in a row" in issue and "502" in issue
            status = await resilience_status(service)
            assert status.answers is not None and not status.answers.healthy
            assert status.overall == "unknown"  # no health monitor in this hand-built service: nothing checked

            standin.set_fault(FaultMode.SERVER_ERROR, methods={"getUpdates"}, status=409)
            assert await poller._poll_guarded() == poller.conflict_backoff
            assert await issues() == [f"Answers from Telegram are not read: {CONFLICT_ISSUE}."]

            standin.clear_fault()
            assert await poller._poll_guarded() == 0.0
            assert await issues() == []
            summary = (await resilience_status(service)).answers
            assert summary is not None and summary.healthy and not summary.in_conflict
            assert summary.getupdates_conflicts == 1 and summary.last_error is None
            poller.running = False
            assert await issues() == ["The getUpdates poller is not running: answers from Telegram are not read."]
    finally:
        await store.close()
