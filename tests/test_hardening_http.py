"""Streamable HTTP (``cctg-mcp serve --transport http``) as a real subprocess on an ephemeral port.

The official client connects with the bearer token; raw httpx requests check the refusals:
401 without or with a wrong token, 421 for a foreign Host (DNS rebinding), 403 for a foreign
Origin; ``/healthz`` answers 200 without a token while Telegram is down and shows no secret.
SIGTERM ends the server with exit code 0. A non-loopback bind without a token and
``--backend trio`` are refused before anything starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from helpers import FAST, USERS, http_server, text_of
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

HTTP_TOKEN = "http-bearer-secret-0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn serves on asyncio only; the client side runs on asyncio too (one slow start-up)."""
    return "asyncio"


def env_for(standin: TelegramStandIn, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        **standin.server_env(data_dir, USERS, CCTG_ENVIRONMENT="development", **extra),
    }


async def test_http_transport_auth_rebinding_healthz_and_sigterm(standin: TelegramStandIn, tmp_path: Path) -> None:
    standin.set_fault(FaultMode.SERVER_ERROR, status=503)  # Telegram is down from the start
    config = tmp_path / "resilience.json"
    config.write_text(json.dumps(FAST))
    with anyio.fail_after(90):
        async with http_server(standin, tmp_path, HTTP_TOKEN, CCTG_CONFIG=str(config)) as (port, log_path, proc):
            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {HTTP_TOKEN}"}
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            async with httpx.AsyncClient(base_url=base, timeout=10) as raw:
                health = await raw.get("/healthz")
                assert health.status_code == 200 and health.json()["status"] == "ok"
                assert HTTP_TOKEN not in health.text and standin.token not in health.text
                assert (await raw.post("/mcp", json=body)).status_code == 401
                wrong = await raw.post("/mcp", json=body, headers={"Authorization": "Bearer not-the-token-xxxxxxxx"})
                assert wrong.status_code == 401 and "Bearer" in wrong.headers["www-authenticate"]
                evil_host = await raw.post("/mcp", json=body, headers={**auth, "Host": f"evil.example:{port}"})
                assert evil_host.status_code == 421
                assert (await raw.get("/healthz", headers={"Host": "evil.example"})).status_code == 421
                evil_origin = await raw.post("/mcp", json=body, headers={**auth, "Origin": "http://evil.example"})
                assert evil_origin.status_code == 403

            # The MCP client's own HTTP library (httpx2), with the read timeout its transports use.
            http = httpx2.AsyncClient(headers=auth, timeout=httpx2.Timeout(30.0, read=300.0))
            async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert "send_telegram_message" in names
                queued = await client.call_tool("send_telegram_message", {"message": "over http, queued"})
                assert not queued.is_error, text_of(queued)
                assert queued.structured_content and queued.structured_content["status"] == "queued"
                async with httpx.AsyncClient(base_url=base, timeout=10) as raw:
                    assert (await raw.get("/healthz")).status_code == 200  # still live, Telegram down
                standin.clear_fault()
                sent = await client.call_tool("send_telegram_message", {"message": "over http <&>"})
                assert sent.structured_content and sent.structured_content["status"] in ("delivered", "queued")
                await standin.await_messages(2 * len(USERS), timeout=30)  # both, the queued one too
            proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    assert HTTP_TOKEN not in log and standin.token not in log
    assert any("over http <&>" in m.plain_text for m in standin.sent)
    assert {m.chat_id for m in standin.sent} <= set(USERS)


@pytest.mark.parametrize(
    ("args", "extra", "needle"),
    [
        (["--host", "0.0.0.0"], {}, "CCTG_HTTP_TOKEN"),  # the other rules: test_hardening_access.py (in-process)
        (["--backend", "trio"], {}, "stdio only"),
    ],
)
def test_http_start_up_refusals(
    standin: TelegramStandIn, tmp_path: Path, args: list[str], extra: dict[str, str], needle: str
) -> None:
    command = [sys.executable, "-m", "cctg_mcp", "serve", "--transport", "http", "--port", "0", *args]
    result = subprocess.run(
        command,
        env=env_for(standin, tmp_path, **extra),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert needle in stderr and "short" not in stderr.split("CCTG_HTTP_TOKEN", 1)[-1][:40]
    assert not (tmp_path / "outbox.sqlite3").exists()  # refused before anything started
