"""The real server as a subprocess over stdio, driven by the official client."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest
from helpers import USERS, text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio


def params(standin: TelegramStandIn, data_dir: Path, backend: str, **extra: str) -> StdioServerParameters:
    env = standin.server_env(data_dir, USERS, **extra)
    return StdioServerParameters(
        command=sys.executable, args=["-m", "cctg_mcp", "serve", "--backend", backend], env=env
    )


async def test_send_over_stdio_on_both_server_backends(
    standin: TelegramStandIn, tmp_path: Path, anyio_backend: str
) -> None:
    stderr = tmp_path / "stderr.log"
    with stderr.open("w") as errlog, anyio.fail_after(60):
        async with Client(stdio_client(params(standin, tmp_path, anyio_backend), errlog=errlog)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"send_telegram_message", "send_approval_request", "get_resilience_status"} <= names
            ok = await client.call_tool("send_telegram_message", {"message": "over <stdio> & back"})
            assert not ok.is_error, text_of(ok)
            assert ok.structured_content and ok.structured_content["status"] == "delivered"
            standin.set_fault(FaultMode.UNAUTHORIZED)
            bad = await client.call_tool("send_telegram_message", {"message": "this one fails"})
            assert bad.is_error and "TELEGRAM_BOT_TOKEN" in text_of(bad)
    assert "over <stdio> & back" in standin.messages_for(USERS[0])[0].plain_text
    assert len(standin.sent) == len(USERS)
    log = stderr.read_text()
    assert standin.token not in log and standin.token not in text_of(bad)
    assert "401" in log or "dead" in log  # the failure was logged, redacted


async def test_a_malformed_variable_stops_start_up_naming_it(standin: TelegramStandIn, tmp_path: Path) -> None:
    env = params(standin, tmp_path, "asyncio", TELEGRAM_ALLOWED_USERS="12,not-a-number").env or {}
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-m", "cctg_mcp", "serve"], env={**env, "PATH": ""}, check=False
        )
    assert result.returncode == 2
    assert b"TELEGRAM_ALLOWED_USERS" in result.stderr and result.stdout == b""


async def test_check_reports_ok_then_the_rejected_token_in_words(standin: TelegramStandIn, tmp_path: Path) -> None:
    env = {**(params(standin, tmp_path, "asyncio").env or {}), "PATH": ""}
    command = [sys.executable, "-m", "cctg_mcp", "check"]
    with anyio.fail_after(60):
        ok = await anyio.run_process(command, env=env, check=False)
        standin.set_fault(FaultMode.UNAUTHORIZED)
        bad = await anyio.run_process(command, env=env, check=False)
    assert ok.returncode == 0 and b"connected as @" in ok.stdout and b"OK:" in ok.stdout
    assert bad.returncode == 1 and b"401" in bad.stdout and b"TELEGRAM_BOT_TOKEN" in bad.stdout
    assert standin.token.encode() not in bad.stdout + bad.stderr
