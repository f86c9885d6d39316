"""What the model reads back: argument errors in plain words, compact result text, waits that fit."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from helpers import call, call_raw, connected, make_settings, prompt_text, text_of

from cctg_mcp.testing import TelegramStandIn


@pytest.mark.anyio
async def test_schema_errors_name_the_field_and_what_is_allowed(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await call_raw(
            client,
            "send_performance_alert",
            {"title": " ", "current_value": "high", "threshold": 1, "severity": "urgent"},
        )
        text = text_of(result)
        assert result.is_error
        assert text.startswith("Invalid arguments for send_performance_alert: ")
        assert "`title` must contain a character other than a space" in text
        assert "`current_value` must be a number" in text
        assert "`severity` is not allowed: use one of 'low', 'medium', 'high', 'critical'" in text
        assert "pydantic" not in text and "http" not in text and "Arguments" not in text
        missing = text_of(await call_raw(client, "send_task_completion", {"task_id": "a b"}))
        assert "`title` is required" in missing and "`task_id` may contain only letters, digits, - and _" in missing
        long = text_of(await call_raw(client, "get_recovery_history", {"limit": 500}))
        assert "`limit` is too large: use 100 or less (got 500)" in long


@pytest.mark.anyio
async def test_an_unknown_event_type_suggests_the_nearest_and_custom_event(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await call_raw(
            client, "send_telegram_event", {"type": "build_complete", "title": "Build", "description": "green"}
        )
        text = text_of(result)
        assert result.is_error and "'build_complete' is not an event type" in text
        assert "the nearest are build_completed" in text and "custom_event" in text
        assert not standin.sent  # nothing was sent or stored
        outbox = (await call(client, "get_resilience_status"))["outbox"]
        assert (outbox["pending"], outbox["in_flight"], outbox["delivered"], outbox["dead"]) == (0, 0, 0, 0)
        ok = await call_raw(client, "send_telegram_event", {"type": "custom_event", "title": "T", "description": "d"})
        assert not ok.is_error, text_of(ok)


@pytest.mark.anyio
async def test_result_text_is_compact_and_the_document_is_structured(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await call_raw(client, "get_resilience_status", {})
        assert not result.is_error and result.structured_content is not None
        (block,) = result.content
        text = getattr(block, "text", "")
        assert text == json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.anyio
async def test_wait_for_response_defaults_to_45_seconds_and_says_call_again(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        with anyio.fail_after(15):
            tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["wait_for_response"].input_schema["properties"]["timeout_seconds"]["default"] == 45
        sent = await call_raw(client, "send_approval_request", {"title": "Deploy?", "description": "prod"})
        assert sent.structured_content is not None
        event_id = sent.structured_content["event_id"]
        waited = await call_raw(client, "wait_for_response", {"event_id": event_id, "timeout_seconds": 1})
        assert waited.structured_content is not None and waited.structured_content["status"] == "timeout"
        assert "call wait_for_response again" in waited.structured_content["message"].lower()
        assert event_id in waited.structured_content["message"]
        with anyio.fail_after(15):
            prompt = await client.get_prompt("ask_me_before", {"action": "drop the table"})
        text = prompt_text(prompt)
        assert "call wait_for_response again with the same event_id" in text and "45 seconds" in text
