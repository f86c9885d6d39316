"""The original CCTelegram server's resource URIs (cctelegram://...) resolve through the running
server, beside ours (cctg://...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, direct_answers, fast_config, make_settings, resource_text
from mcp import Client
from mcp.shared.exceptions import MCPError

from cctg_mcp.app import open_service
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

ORIGINAL = {
    "cctelegram://event-types",
    "cctelegram://bridge-status",
    "cctelegram://responses",
    "cctelegram://event-templates",
}


async def read(client: Client, uri: str) -> Any:
    with anyio.fail_after(15):
        result = await client.read_resource(uri)
    return json.loads(resource_text(result))


async def test_the_original_uris_resolve(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path)
    services: list[NotificationService] = []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        async with open_service(settings, resilience=fast_config(), poll_timeout=1) as runtime:
            services.append(runtime.service)
            yield runtime

    async with Client(build_server(opened)) as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        assert listed >= ORIGINAL and "cctg://event-types" in listed

        assert await read(client, "cctelegram://event-types") == await read(client, "cctg://event-types")
        templates = await read(client, "cctelegram://event-templates")
        assert [t["name"] for t in templates] == [
            "claude-task-complete",
            "build-success",
            "performance-warning",
            "approval-needed",
        ]
        bridge = await read(client, "cctelegram://bridge-status")
        assert bridge["running"] is False and bridge["health"] == "unhealthy"  # no bridge here: said so

        assert (await read(client, "cctelegram://responses"))["total"] == 0
        standin.push_text(USERS[0], "looks good")
        store = direct_answers(services[-1]).store
        with anyio.fail_after(15):
            while True:
                changed = store.changed()  # taken before the read: a write in between wakes us
                if (await store.recent())[0]:
                    break
                await changed.wait()
        answers = await read(client, "cctelegram://responses")
        assert answers["responses"][0]["text"] == "looks good"

        with pytest.raises(MCPError, match="cctelegram://nothing"):
            await client.read_resource("cctelegram://nothing")
