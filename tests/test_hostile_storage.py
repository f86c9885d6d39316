"""A hostile world, storage: the data directory deleted under the running server.

A real server (``mcp.Client`` in memory), the real stand-in, a real SQLite file that the test
really deletes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import connected, make_settings, text_of
from mcp import Client

from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, args: dict[str, Any]) -> Any:
    with anyio.fail_after(15):
        return await client.call_tool(tool, args)


async def test_a_deleted_data_dir_refuses_sends_honestly_and_status_says_so(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path / "data")
    async with connected(settings) as client:
        first = await call(client, "send_telegram_message", {"message": "before"})
        assert not first.is_error, text_of(first)
        shutil.rmtree(settings.data_dir)
        refused = await call(client, "send_telegram_message", {"message": "after the data dir is gone"})
        assert refused.is_error
        text = text_of(refused)
        assert "outbox is gone" in text and "deleted" in text and "Restart the server" in text
        assert "stored durably" not in text
        status = (await call(client, "get_resilience_status", {})).structured_content
        assert status is not None
        assert status["overall"] == "unhealthy"
        assert "deleted" in (status["outbox"]["problem"] or "")
        assert any("The outbox is gone" in issue for issue in status["active_issues"])


async def test_a_replaced_outbox_file_is_noticed_too(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path / "data")
    async with connected(settings) as client:
        path = settings.outbox_path
        path.rename(path.with_suffix(".moved"))
        path.write_bytes(b"")  # another file now sits at the path
        refused = await call(client, "send_telegram_message", {"message": "x"})
        assert refused.is_error and "replaced" in text_of(refused)
