"""Answers end to end: a real mcp.Client, the real server and poller, the stand-in over HTTP.

The approval round trip: send_approval_request -> the person presses a button in the
stand-in -> the poller stores it -> wait_for_response / process_pending_responses /
get_telegram_responses see it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, call, fast_config, make_settings, text_of
from mcp import Client
from mcp.shared.exceptions import MCPError

from cctg_mcp.answers import Answers, ParsedUpdate, ResponsePoller
from cctg_mcp.app import open_service
from cctg_mcp.config import Settings
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

ALICE, BOB = USERS
STRANGER = 999


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Client, list[NotificationService]]]:
    """The server with a 1-second long poll; also hands out the live service."""
    services: list[NotificationService] = []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        async with open_service(settings, resilience=fast_config(), poll_timeout=1) as runtime:
            services.append(runtime.service)
            yield runtime

    async with Client(build_server(opened)) as client:
        yield client, services


def answers(services: list[NotificationService]) -> Answers:
    assert isinstance(services[-1].answers, Answers)
    return services[-1].answers


def poller(services: list[NotificationService]) -> ResponsePoller:
    found = answers(services).poller
    assert found is not None
    return found


async def until_stored(svc: Answers, n: int) -> None:
    while True:
        changed = svc.store.changed()
        if (await svc.store.recent())[0] >= n:
            return
        await changed.wait()


async def acknowledged(standin: TelegramStandIn, n: int) -> list[str | None]:
    """The texts of answerCallbackQuery calls, once there are ``n`` of them."""
    done = await anyio.to_thread.run_sync(standin.wait_until, lambda: len(standin.answered_callbacks) >= n, 10)
    assert done, standin.answered_callbacks
    return [a.get("text") for a in standin.answered_callbacks]


async def send_approval(client: Client, standin: TelegramStandIn) -> tuple[str, list[str]]:
    sent = await call(client, "send_approval_request", {"title": "Deploy?", "description": "to prod"})
    assert sent["status"] == "delivered"
    message = standin.messages_for(ALICE)[-1]
    assert message.reply_markup is not None
    data = [b["callback_data"] for row in message.reply_markup["inline_keyboard"] for b in row]
    return sent["event_id"], data


async def test_approval_round_trip(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, _services):
        event_id, (approve, _deny) = await send_approval(client, standin)
        result: list[dict[str, Any]] = []

        async def waiter() -> None:
            result.append(await call(client, "wait_for_response", {"event_id": event_id, "timeout_seconds": 60}))

        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                assert result == []  # waiting, not answered yet
                standin.push_callback(ALICE, approve)
        (answer,) = result
        assert (answer["status"], answer["action"], answer["option"]) == ("answered", "approve", "Approve")
        assert answer["response"]["event_id"] == event_id and answer["response"]["user_id"] == ALICE
        assert answer["waited_seconds"] < 15
        assert await acknowledged(standin, 1) == ["Approved ✅"]  # acknowledged right after storing

        pending = await call(client, "process_pending_responses", {})
        assert pending["summary"]["pending_approvals"] == 1 and pending["summary"]["actionable_responses"] == 1
        (actionable,) = pending["actionable_responses"]
        assert (actionable["action"], actionable["event_id"], actionable["user_id"]) == ("approve", event_id, ALICE)
        assert any(event_id in r for r in pending["recommendations"])

        listed = await call(client, "get_telegram_responses", {"limit": 5})
        assert listed["count"] == listed["total"] == 1
        assert (listed["responses"][0]["kind"], listed["responses"][0]["event_id"]) == ("callback", event_id)


async def test_a_strangers_press_is_ignored_and_a_text_reply_is_listed(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, services):
        event_id, (approve, _deny) = await send_approval(client, standin)
        standin.push_callback(STRANGER, approve)
        standin.push_text(BOB, "ship it after lunch")
        with anyio.fail_after(15):
            await until_stored(answers(services), 1)
        listed = await call(client, "get_telegram_responses", {"since_minutes": 5})
        assert [(r["kind"], r["action"], r["user_id"], r["text"]) for r in listed["responses"]] == [
            ("text", "text", BOB, "ship it after lunch")
        ]
        assert await acknowledged(standin, 1) == ["Unauthorized"]
        assert answers(services).status()["poller"]["unauthorized_ignored"] == 1
        pending = await call(client, "process_pending_responses", {"since_minutes": 5})
        assert pending["summary"]["actionable_responses"] == 0 and pending["summary"]["total_recent_responses"] == 1
        assert event_id not in str(pending)


async def test_an_answer_given_before_restart_is_kept_once(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path)
    async with serving(settings) as (client, services):
        event_id, (_approve, deny) = await send_approval(client, standin)
        standin.push_callback(BOB, deny)
        with anyio.fail_after(15):
            await until_stored(answers(services), 1)
    async with serving(settings) as (client, services):
        assert poller(services).offset == 2  # resumed from the store, not from scratch
        answer = await call(client, "wait_for_response", {"event_id": event_id, "timeout_seconds": 5})
        assert (answer["status"], answer["action"], answer["response"]["user_id"]) == ("answered", "deny", BOB)
        standin.push_text(ALICE, "after restart")
        with anyio.fail_after(15):
            await until_stored(answers(services), 2)
        listed = await call(client, "get_telegram_responses", {})
        assert sorted(r["kind"] for r in listed["responses"]) == ["callback", "text"]
        assert poller(services).offset == 3
        assert listed["total"] == 2  # the press was not stored twice


async def test_clear_old_responses_deletes_by_age(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, services):
        store = answers(services).store
        now = time.time()
        for update_id, age_h in ((1, 48), (2, 30), (3, 2)):
            update = ParsedUpdate(update_id, "text", ALICE, "a", "A", ALICE, None, text=f"{age_h}h old")
            await store.store_batch([update], None, now=now - age_h * 3600)
        cleared = await call(client, "clear_old_responses", {"older_than_hours": 24})
        assert cleared["deleted_count"] == 2 and "2" in cleared["message"]
        listed = await call(client, "get_telegram_responses", {})
        assert [r["text"] for r in listed["responses"]] == ["2h old"]
        assert (await call(client, "clear_old_responses", {}))["deleted_count"] == 0


async def test_wait_for_response_times_out_with_progress(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, services):
        event_id, _ = await send_approval(client, standin)
        answers(services).progress_interval = 0.2
        reports: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reports.append((progress, total, message))

        with anyio.fail_after(15):
            result = await client.call_tool(
                "wait_for_response", {"event_id": event_id, "timeout_seconds": 1}, progress_callback=on_progress
            )
        assert result.structured_content is not None, text_of(result)
        assert result.structured_content["status"] == "timeout"
        assert result.structured_content["waited_seconds"] >= 1
        assert reports and all(total == 1 for _, total, _ in reports)
        assert [p[0] for p in reports] == sorted(p[0] for p in reports)
        assert "Waiting for an answer" in (reports[0][2] or "")


async def test_wait_for_an_unknown_event_or_bad_arguments_are_tool_errors(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, _):
        with anyio.fail_after(15):
            unknown = await client.call_tool("wait_for_response", {"event_id": "no-such-event", "timeout_seconds": 5})
            too_long = await client.call_tool("get_telegram_responses", {"limit": 101})
        assert unknown.is_error and "No event 'no-such-event'" in text_of(unknown)
        assert too_long.is_error and "limit" in text_of(too_long)


async def test_without_a_token_the_response_tools_say_not_configured(tmp_path: Path) -> None:
    settings = make_settings(None, tmp_path, CCTG_DELIVERY="telegram")
    async with serving(settings) as (client, _):
        with anyio.fail_after(15):
            results = [
                await client.call_tool(tool, args)
                for tool, args in (
                    ("get_telegram_responses", {}),
                    ("clear_old_responses", {}),
                    ("process_pending_responses", {}),
                    ("wait_for_response", {"event_id": "x"}),
                    ("send_telegram_message", {"message": "hi"}),
                    ("trigger_recovery", {}),  # one "not configured" answer for every use case
                )
            ]
    texts = [text_of(r) for r in results]
    assert all(r.is_error for r in results)
    assert all("not configured" in t and "TELEGRAM_BOT_TOKEN" in t for t in texts)
    assert len({t.split(": ", 1)[1] for t in texts}) == 1  # the same error as the send tools


async def test_without_a_token_the_responses_resource_says_what_to_set(tmp_path: Path) -> None:
    """A resource read gets our fixing message too, not the SDK's bare "Error reading resource"."""
    settings = make_settings(None, tmp_path, CCTG_DELIVERY="telegram")
    async with serving(settings) as (client, _):
        with anyio.fail_after(15), pytest.raises(MCPError) as raised:
            await client.read_resource("cctelegram://responses")
    message = str(raised.value)
    assert "not configured" in message and "TELEGRAM_BOT_TOKEN" in message
    assert "Error reading resource" not in message
