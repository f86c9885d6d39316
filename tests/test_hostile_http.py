"""A hostile world, HTTP: slow headers, one client taking every session, a new session per
call to dodge the rate limit, and floods of refusals in the log.

The real server (``serve --transport http``) as a subprocess on an ephemeral port, spoken to
with raw sockets and httpx; small bounds from the environment so each shows in a second."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers import INIT, http_server

from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

TOKEN = "http-bearer-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}


@pytest.fixture
def anyio_backend() -> str:
    """uvicorn serves on asyncio only."""
    return "asyncio"


def rpc(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response (plain JSON or one SSE ``data:`` line)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads(data[-1]))
    return dict(response.json())


async def open_session(raw: httpx.AsyncClient) -> httpx.Response:
    return await raw.post("/mcp", json=INIT, headers=AUTH)


async def call_tool(raw: httpx.AsyncClient, session: str, request_id: int) -> dict[str, Any]:
    headers = {**AUTH, "Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-06-18"}
    await raw.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "list_event_types", "arguments": {}},
    }
    return rpc(await raw.post("/mcp", json=body, headers=headers))


async def test_slow_headers_are_cut_off_and_the_refusals_logged_once(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with http_server(standin, tmp_path, TOKEN, CCTG_HTTP_HEADER_TIMEOUT="1s") as (port, log_path, _):
        with anyio.fail_after(15):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError)):
                    while True:  # the server closes it: EOF
                        if not await stream.receive():
                            break
                    raise anyio.EndOfStream
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as raw:
            for _ in range(30):
                assert (await raw.post("/mcp", json=INIT)).status_code == 401
            assert (await raw.get("/healthz")).status_code == 200  # still serving
    log = log_path.read_text()
    assert log.count("no complete request head") == 1
    assert log.count("without the bearer token") == 1  # 30 refusals, one line
    assert "Traceback" not in log and TOKEN not in log


async def test_one_client_cannot_take_every_session_nor_dodge_the_rate_limit(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    extra = {"CCTG_HTTP_MAX_SESSIONS_PER_CLIENT": "3", "CCTG_TOOL_RATE_LIMIT": "4"}
    async with (
        http_server(standin, tmp_path, TOKEN, **extra) as (port, log_path, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as raw,
    ):
        sessions = []
        for _ in range(3):
            opened = await open_session(raw)
            assert opened.status_code == 200, opened.text
            sessions.append(opened.headers["mcp-session-id"])
        refused = await open_session(raw)
        assert refused.status_code == 429 and "Too many sessions for this client" in refused.text
        # A session per call does not reset the per-client budget of 4 calls a minute.
        results = [await call_tool(raw, sessions[i % 3], 10 + i) for i in range(6)]
        limited = [r for r in results if r["result"].get("isError")]
        assert len(limited) == 2 and "Rate limit" in limited[0]["result"]["content"][0]["text"]
        closed = await raw.delete("/mcp", headers={**AUTH, "Mcp-Session-Id": sessions[0]})
        assert closed.status_code in (200, 204)
        assert (await open_session(raw)).status_code == 200  # a slot is free again
    assert log_path.read_text().count("refused a new HTTP session") == 1


async def test_the_event_loops_repeated_errors_are_logged_once_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What 'Too many open files' on every accept used to do: one traceback per occurrence."""
    import asyncio
    import logging

    from cctg_mcp.server.http_limits import install_loop_log_throttle

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    install_loop_log_throttle(loop)
    try:
        with caplog.at_level(logging.ERROR, logger="cctg_mcp.server.http_limits"):
            for _ in range(200):
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many open files"),
                    }
                )
    finally:
        loop.set_exception_handler(previous)
    lines = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()
    assert lines[0].exc_info is None
