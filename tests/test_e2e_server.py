"""End to end in memory: a real mcp.Client, the real server, the stand-in over real HTTP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, connected, fast_config, make_settings, text_of

from cctg_mcp.app import open_service
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import Event
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_every_send_tool_delivers_to_every_allowed_user(standin: TelegramStandIn, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("send_telegram_event", {"type": "build_completed", "title": "Build", "description": "green"}),
        ("send_telegram_message", {"message": "hello"}),
        ("send_task_completion", {"task_id": "t-1", "title": "Refactor", "results": "done", "duration_ms": 5}),
        ("send_performance_alert", {"title": "Latency", "current_value": 900, "threshold": 500}),
        ("send_approval_request", {"title": "Deploy?", "description": "prod", "options": ["Yes", "No", "Later"]}),
    ]
    async with connected(make_settings(standin, tmp_path)) as client:
        for tool, args in calls:
            with anyio.fail_after(10):
                result = await client.call_tool(tool, args)
            assert not result.is_error, text_of(result)
            assert result.structured_content is not None
            assert result.structured_content["status"] == "delivered"
            assert sorted(r["chat_id"] for r in result.structured_content["recipients"]) == list(USERS)
    for user in USERS:
        assert len(standin.messages_for(user)) == len(calls)
    approval = standin.messages_for(USERS[0])[-1]
    buttons = [b for row in approval.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert [b["text"] for b in buttons] == ["✅ Yes", "❌ No", "Later"]
    assert [b["callback_data"].split(":")[0] for b in buttons] == ["approve", "deny", "opt"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)


async def test_html_is_escaped_and_accepted_by_telegrams_parser(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await client.call_tool("send_telegram_message", {"message": "a <b>bold</b> & <script> claim"})
    assert not result.is_error, text_of(result)
    (msg, *_) = standin.messages_for(USERS[0])
    assert "&lt;script&gt;" in msg.text and "&amp;" in msg.text and msg.parse_mode == "HTML"


async def test_a_7000_character_message_arrives_whole_in_parts(standin: TelegramStandIn, tmp_path: Path) -> None:
    words = " ".join(f"w{i:04d}" for i in range(1200))[:7000]
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await client.call_tool("send_telegram_message", {"message": words})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["status"] == "delivered", result.structured_content
    parts = standin.messages_for(USERS[1])
    assert len(parts) == 2 and all(len(p.text) <= 4096 for p in parts)
    received = " ".join(p.text for p in parts)
    for i in range(0, 1166, 97):
        assert f"w{i:04d}" in received


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"type": "not_a_type", "title": "x", "description": "d"}, "type"),
        ({"type": "custom_event", "title": "", "description": "d"}, "title"),
        ({"type": "custom_event", "title": "   ", "description": "d"}, "title"),
        ({"type": "custom_event", "title": "x" * 201, "description": "d"}, "title"),
        ({"type": "custom_event", "title": "x", "description": "d", "task_id": "../etc/passwd"}, "task_id"),
    ],
)
async def test_bad_arguments_are_tool_errors_naming_the_field_and_store_nothing(
    standin: TelegramStandIn, tmp_path: Path, args: dict[str, str], field: str
) -> None:
    settings = make_settings(standin, tmp_path)
    async with connected(settings) as client:
        result = await client.call_tool("send_telegram_event", args)
        assert result.is_error
        assert field in text_of(result)
        status = await client.call_tool("get_resilience_status", {})
    assert status.structured_content is not None
    outbox = status.structured_content["outbox"]
    assert outbox["pending"] + outbox["delivered"] + outbox["dead"] + outbox["in_flight"] == 0
    assert standin.sent == []


async def test_outage_queues_then_the_dispatcher_delivers(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502)
        statuses = []
        for i in range(3):
            with anyio.fail_after(10):
                result = await client.call_tool("send_telegram_message", {"message": f"during outage {i}"})
            assert not result.is_error, text_of(result)
            assert result.structured_content is not None
            statuses.append(result.structured_content["status"])
            assert result.structured_content["next_attempt_at"]
        assert statuses == ["queued"] * 3
        status = (await client.call_tool("get_resilience_status", {"refresh": True})).structured_content
        assert status is not None
        telegram = next(b for b in status["breakers"] if b["name"] == "telegram")
        assert telegram["state"] in ("open", "half_open")
        assert status["overall"] in ("unhealthy", "degraded")
        assert status["outbox"]["pending"] + status["outbox"]["in_flight"] == 3 * len(USERS)
        standin.clear_fault()
        await standin.await_messages(3 * len(USERS), timeout=20)
    texts = sorted(m.text for m in standin.messages_for(USERS[0]))
    assert [("during outage" in t) for t in texts] == [True] * 3


async def test_a_repeated_task_event_is_a_duplicate_and_not_sent_again(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    args = {"task_id": "same-task", "title": "Done"}
    async with connected(make_settings(standin, tmp_path)) as client:
        first = await client.call_tool("send_task_completion", args)
        second = await client.call_tool("send_task_completion", args)
    assert first.structured_content and first.structured_content["status"] == "delivered"
    assert second.structured_content and second.structured_content["status"] == "duplicate"
    assert second.structured_content["event_id"] == first.structured_content["event_id"]
    assert len(standin.messages_for(USERS[0])) == 1


async def test_unauthorized_is_a_dead_letter_and_the_error_hides_the_token(
    standin: TelegramStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    standin.set_fault(FaultMode.UNAUTHORIZED)
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await client.call_tool("send_telegram_message", {"message": "hi"})
        status = (await client.call_tool("get_resilience_status", {})).structured_content
    assert result.is_error
    text = text_of(result)
    assert "TELEGRAM_BOT_TOKEN" in text and standin.token not in text
    assert status is not None and status["outbox"]["dead"] == len(USERS)
    assert standin.token not in str(status)
    assert all(standin.token not in record.getMessage() for record in caplog.records)


async def test_without_a_token_tools_list_and_say_not_configured(tmp_path: Path) -> None:
    settings = make_settings(None, tmp_path, CCTG_DELIVERY="telegram")
    async with connected(settings) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"send_telegram_message", "get_resilience_status", "list_event_types"} <= tools
        result = await client.call_tool("send_telegram_message", {"message": "hi"})
        status = (await client.call_tool("get_resilience_status", {})).structured_content
    assert result.is_error and "not configured" in text_of(result) and "TELEGRAM_BOT_TOKEN" in text_of(result)
    assert status is not None and status["configured"] is False and status["overall"] == "unhealthy"


async def test_a_row_leased_by_a_dead_process_is_delivered_after_restart(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path)
    box = await Outbox.open(settings.outbox_path)
    ev = Event(event_id="crashed-1", type="info_notification", title="t", description="left behind", task_id="c1")
    await box.enqueue(ev, list(USERS))
    leased = await box.claim_due("process-that-died", lease_s=-1)  # its lease has already run out
    assert len(leased) == len(USERS)
    await box.close()
    async with open_service(settings, resilience=fast_config()):
        await standin.await_messages(len(USERS), timeout=10)
    assert sorted(m.chat_id for m in standin.sent) == sorted(USERS)


async def test_list_event_types_filters_by_category(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        everything = (await client.call_tool("list_event_types", {})).structured_content
        git = (await client.call_tool("list_event_types", {"category": "GIT"})).structured_content
    assert everything is not None and everything["count"] == 47
    assert git is not None and git["count"] == 7 and {e["category"] for e in git["event_types"]} == {"Git"}
