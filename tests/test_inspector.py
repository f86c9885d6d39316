"""The MCP Inspector's CLI against the real server (skipped, with the reason, without npx)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import anyio
import pytest
from helpers import USERS

from cctg_mcp.testing import TelegramStandIn

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is missing: the Inspector cannot run"),
]

INSPECTOR = ["npx", "-y", "@modelcontextprotocol/inspector@0", "--cli"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Inspector is the client here; the backend under test is the subprocess's


async def inspect(standin: TelegramStandIn, data_dir: Path, *method: str) -> dict[str, object]:
    env = standin.server_env(data_dir, USERS)
    flags = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    command = [*INSPECTOR, *flags, sys.executable, "-m", "cctg_mcp", "serve", *method]
    with anyio.fail_after(240):  # the first run downloads the Inspector from the npm registry
        result = await anyio.run_process(command, check=False, env={**os.environ, "NO_UPDATE_NOTIFIER": "1"})
    if result.returncode != 0 and b"ENOTFOUND" in result.stderr + result.stdout:
        pytest.skip("the npm registry is not reachable, so the Inspector could not be fetched")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    out: dict[str, object] = json.loads(result.stdout)
    return out


async def test_inspector_lists_tools_and_calls_one(standin: TelegramStandIn, tmp_path: Path) -> None:
    listed = await inspect(standin, tmp_path, "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}  # type: ignore[attr-defined]
    assert {"send_telegram_message", "get_resilience_status", "list_event_types"} <= names
    called = await inspect(
        standin,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "send_telegram_message",
        "--tool-arg",
        "message=hello from the inspector",
    )
    assert called.get("isError") in (None, False), called
    assert called["structuredContent"]["status"] == "delivered"  # type: ignore[index]
    assert "hello from the inspector" in standin.messages_for(USERS[0])[-1].plain_text
