"""A hostile world, tool input: real byte counts, the tool's own field names, no coercion.

A real ``mcp.Client`` in memory against the real server and the stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import call_raw, connected, make_settings, text_of

from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_inputs_at_the_schemas_own_maxima_are_accepted(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        done = await call_raw(
            client,
            "send_task_completion",
            {
                "task_id": "max-1",
                "title": "T" * 200,
                "results": "😀" * 5000,  # 4 bytes each in UTF-8, 12 as an ASCII escape
                "files_affected": ["é" * 500] * 50,
                "duration_ms": 86_400_000,
            },
            limit=20,
        )
        assert not done.is_error, text_of(done)
        ask = await call_raw(
            client,
            "send_approval_request",
            {"title": "Q" * 200, "description": "€" * 2000, "options": ["✓" * 100] * 10},
            limit=20,
        )
        assert not ask.is_error, text_of(ask)
        accented = await call_raw(
            client,
            "send_telegram_event",
            {"type": "info_notification", "title": "t", "description": "d", "data": {"text": "é" * 6000}},
            limit=20,
        )
        assert not accented.is_error, text_of(accented)  # 12 KB real, 36 KB as escapes: fits 16 KB


async def test_the_data_limit_counts_real_bytes_and_names_the_field(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        big = await call_raw(
            client,
            "send_telegram_event",
            {"type": "info_notification", "title": "t", "description": "d", "data": {"text": "€" * 6000}},
            limit=20,
        )
    assert big.is_error
    text = text_of(big)
    assert "data take 18012 bytes" in text and "limit is 16384" in text, text


@pytest.mark.parametrize(
    ("tool", "args", "field"),
    [
        ("wait_for_response", {"event_id": "x", "timeout_seconds": "5"}, "timeout_seconds"),
        ("get_telegram_responses", {"limit": True}, "limit"),
        ("send_task_completion", {"task_id": "t-1", "title": "t", "duration_ms": "5"}, "duration_ms"),
        ("send_performance_alert", {"title": "cpu", "current_value": True, "threshold": 1}, "current_value"),
    ],
)
async def test_wrong_types_are_refused_not_coerced(
    standin: TelegramStandIn, tmp_path: Path, tool: str, args: dict[str, Any], field: str
) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await call_raw(client, tool, args, limit=20)
    assert result.is_error and field in text_of(result), text_of(result)
    assert standin.sent == []


async def test_an_integer_still_counts_as_a_float(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await call_raw(
            client, "send_performance_alert", {"title": "cpu", "current_value": 95, "threshold": 80}, limit=20
        )
    assert not result.is_error, text_of(result)
