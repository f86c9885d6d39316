"""Access and resource bounds: who receives notifications, whose answers count, the per-client
tool-call rate limit, the outbox cap, and the hardening settings' validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, connected, fast_config, make_settings, text_of
from mcp import Client

from cctg_mcp.app import open_service
from cctg_mcp.config import load_settings
from cctg_mcp.resilience.errors import ConfigurationError
from cctg_mcp.server import build_server
from cctg_mcp.server.http import allowed_hosts, check_bind
from cctg_mcp.server.ratelimit import ToolRateLimiter
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio
STRANGER = 999_999


async def outbox(client: Client) -> dict[str, Any]:
    status = (await client.call_tool("get_resilience_status", {})).structured_content
    assert status is not None
    return dict(status["outbox"])


# ---- rate limit ----------------------------------------------------------------------------


async def test_the_tool_rate_limit_says_when_to_retry_and_is_per_client(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path, CCTG_TOOL_RATE_LIMIT="3")
    server = build_server(lambda: open_service(settings, resilience=fast_config()))
    async with Client(server) as first:
        for n in range(3):
            ok = await first.call_tool("send_telegram_message", {"message": f"allowed {n}"})
            assert not ok.is_error, text_of(ok)
        refused = await first.call_tool("send_telegram_message", {"message": "one too many"})
        assert refused.is_error
        text = text_of(refused)
        assert "Rate limit" in text and "retry_after=" in text and "CCTG" not in text
        retry_after = float(text.rsplit("retry_after=", 1)[1].rstrip(").").strip())
        assert 0 < retry_after <= 20.0  # 3/minute: one call back every 20 s
        assert not any("one too many" in m.plain_text for m in standin.sent)  # refused before running
        async with Client(server) as second:  # another client has its own budget
            assert not (await second.call_tool("list_event_types", {})).is_error


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = ToolRateLimiter(60, clock=lambda: now[0])
    assert all(limiter.check("a", 60) == 0 for _ in range(60))
    assert limiter.check("a", 60) == pytest.approx(1.0)
    assert limiter.check("b", 60) == 0  # per client
    now[0] += 1.0
    assert limiter.check("a", 60) == 0
    now[0] += 3600
    assert sum(limiter.check("a", 60) == 0 for _ in range(100)) == 60  # the burst never exceeds a minute's worth


async def test_the_default_limit_is_generous_and_zero_turns_it_off(standin: TelegramStandIn, tmp_path: Path) -> None:
    assert load_settings({"CCTG_DATA_DIR": str(tmp_path)}).tool_rate_limit == 120
    async with connected(make_settings(standin, tmp_path, CCTG_TOOL_RATE_LIMIT="0")) as client:
        for _ in range(5):
            assert not (await client.call_tool("list_event_types", {})).is_error


# ---- who receives, whose answers count --------------------------------------------------


async def test_only_allowed_users_receive_and_strangers_answers_are_ignored(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        asked = await client.call_tool("send_approval_request", {"title": "Deploy?", "description": "prod"})
        assert not asked.is_error, text_of(asked)
        standin.push_text(STRANGER, "stranger says approve")
        standin.push_callback(STRANGER, "stranger-press")
        standin.push_text(USERS[0], "the real answer")
        with anyio.fail_after(20):
            while "the real answer" not in (seen := text_of(await client.call_tool("get_telegram_responses", {}))):  # noqa: ASYNC110
                await anyio.sleep(0.05)  # the poller runs on its own schedule
    assert "stranger" not in seen and str(STRANGER) not in seen
    assert {m.chat_id for m in standin.sent} == set(USERS)
    assert all(r.params.get("chat_id") in (None, *USERS, *map(str, USERS)) for r in standin.requests)


# ---- outbox cap ------------------------------------------------------------------------------


async def test_past_the_outbox_cap_a_send_is_refused_and_nothing_queued_is_dropped(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path, CCTG_OUTBOX_MAX_PENDING=str(2 * len(USERS)))
    async with connected(settings) as client:
        standin.set_fault(FaultMode.SERVER_ERROR, status=503, methods={"sendMessage"})
        for n in range(2):
            queued = await client.call_tool("send_telegram_message", {"message": f"kept {n}"})
            assert queued.structured_content and queued.structured_content["status"] == "queued"
        full = await client.call_tool("send_telegram_message", {"message": "no room"})
        assert full.is_error and "full" in text_of(full) and "Nothing queued was dropped" in text_of(full)
        box = await outbox(client)
        assert box["pending"] + box["in_flight"] == 2 * len(USERS)
        standin.clear_fault()
        await standin.await_messages(2 * len(USERS), timeout=30)
    texts = sorted(m.plain_text for m in standin.sent)
    assert sum("kept" in t for t in texts) == 2 * len(USERS) and not any("no room" in t for t in texts)


# ---- settings -------------------------------------------------------------------------------


def test_hardening_settings_defaults(tmp_path: Path) -> None:
    settings = load_settings({"CCTG_DATA_DIR": str(tmp_path)})
    assert (settings.http_host, settings.http_port, settings.http_token) == ("127.0.0.1", 8765, None)
    assert settings.outbox_max_pending == 100_000
    token = load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_HTTP_TOKEN": "s3cret-s3cret-s3cret"}).http_token
    assert token is not None and "s3cret" not in repr(token) and "s3cret" not in json.dumps(str(token))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CCTG_HTTP_PORT", "http"),
        ("CCTG_HTTP_PORT", "70000"),
        ("CCTG_HTTP_HOST", "evil.com/x"),
        ("CCTG_HTTP_TOKEN", "short"),
        ("CCTG_HTTP_TOKEN", "has a space in it 123456"),
        ("CCTG_TOOL_RATE_LIMIT", "lots"),
        ("CCTG_TOOL_RATE_LIMIT", "-5"),
        ("CCTG_OUTBOX_MAX_PENDING", "0"),
        ("CCTG_OUTBOX_MAX_PENDING", "1e3"),
        ("CCTG_LEASE_SECONDS", "1"),
    ],
)
def test_a_malformed_hardening_variable_is_an_error_naming_it(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"CCTG_DATA_DIR": str(tmp_path), name: value})
    assert name in str(info.value)
    if name == "CCTG_HTTP_TOKEN":
        assert value not in str(info.value)  # a secret is never echoed


def test_binding_rules() -> None:
    assert check_bind("127.0.0.1", None) is None and check_bind("localhost", None) is None
    assert check_bind("::1", None) is None
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        refusal = check_bind(host, None)
        assert refusal is not None and "CCTG_HTTP_TOKEN" in refusal
        assert check_bind(host, "a-long-enough-token-123") is None
    assert allowed_hosts("127.0.0.1", 8765) == ["127.0.0.1:8765", "localhost:8765", "[::1]:8765"]
    assert allowed_hosts("0.0.0.0", 8765) is None  # any name may reach a wildcard bind: the token guards it
    assert "10.0.0.2:80" in (allowed_hosts("10.0.0.2", 80) or [])
