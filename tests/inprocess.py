"""The stand-in's Bot API behind an httpx transport in this process, in a fake clock's time.

The loopback stand-in is a real HTTP server: its handler threads and sockets run in real
time, and a task waiting on a socket looks blocked to ``FakeClock.autojump()``, which would
then jump past an attempt timeout while the answer is on its way. ``InProcessTelegram`` keeps
the stand-in's semantics (``TelegramStandIn._dispatch``: validation, flood limits, recorded
traffic, faults) and drops only the HTTP plumbing, so a whole server (outbox, dispatcher,
pipeline, health, recovery, the MCP tools through a real in-memory ``mcp.Client``) runs under
one fake clock: a 30-second breaker timeout takes no wall time and the order of events is
exact. What only a socket can show (a reset connection's bytes, a dripping or a huge body,
HTTP parsing) stays with the loopback tests; those fault modes raise here.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
from helpers import call, connected_in_virtual_time, make_settings
from mcp import Client

from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.config import ResilienceConfig
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.testing.model import Fault, RecordedRequest, Reply

#: The base URL the server is pointed at: never resolved, nothing listens there.
BASE_URL = "http://telegram.in-process"
_PATH = re.compile(r"/bot([^/]*)/([A-Za-z]+)/?")
#: How often a held request (HANG) looks whether its fault was cleared, in virtual seconds.
_HANG_RECHECK_S = 0.05


class InProcessTelegram(httpx.AsyncBaseTransport):
    """``standin``'s Bot API as an httpx transport, waiting only on ``clock``."""

    def __init__(self, standin: TelegramStandIn, clock: FakeClock) -> None:
        self.standin = standin
        self.clock = clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        match = _PATH.fullmatch(request.url.path)
        method = match.group(2) if match else ""
        params: dict[str, Any] = dict(parse_qsl(request.url.query.decode()))
        body = await request.aread()
        if body:
            params.update(json.loads(body))
        path = f"/bot[REDACTED]/{method}" if match else "[REDACTED]"
        reply = await self._respond(match.group(1) if match else None, method, params)
        self.standin._record(RecordedRequest(method, path, params, reply.status))
        if reply.payload is None:  # the loopback server resets the connection: no answer
            raise httpx.ReadError("connection reset by peer (in-process stand-in)", request=request)
        return httpx.Response(reply.status, json=reply.payload, request=request)

    async def _respond(self, token: str | None, method: str, params: dict[str, Any]) -> Reply:
        """As the loopback server's ``_respond``, with a HANG and a long poll on the clock."""
        refused, fault = self.standin._admit(token, method, params)
        if refused is not None:
            return refused
        faulted = await self._fault(fault) if fault is not None else None
        if faulted is not None:
            return faulted
        if method == "getUpdates" and token == self.standin.token:
            return await self._get_updates(params)
        return self.standin._authorized(token, method, params)

    async def _fault(self, fault: Fault) -> Reply | None:
        """As the loopback server's ``_apply_fault``, with a HANG held in virtual time."""
        if fault.mode is FaultMode.HANG:
            standin, deadline = self.standin, self.clock.monotonic() + self.standin.max_hang
            standin.hanging += 1
            try:
                while standin._epoch == fault.epoch and self.clock.monotonic() < deadline:
                    await self.clock.sleep(_HANG_RECHECK_S)
            finally:
                standin.hanging -= 1
            return None  # released: served normally, as on loopback
        if fault.mode in (FaultMode.DRIP, FaultMode.HUGE_BODY):
            raise NotImplementedError(f"{fault.mode.value} needs a socket: use the loopback stand-in")
        return self.standin._apply_fault(fault)

    async def _get_updates(self, params: dict[str, Any]) -> Reply:
        """A long poll in virtual time: the updates at once, else after ``timeout`` seconds."""
        timeout = min(self.standin.max_poll, max(0.0, float(params.get("timeout") or 0)))
        now = {**params, "timeout": 0}
        reply = self.standin._dispatch("getUpdates", now)
        if reply.status == 200 and reply.payload is not None and not reply.payload["result"] and timeout > 0:
            await self.clock.sleep(timeout)
            reply = self.standin._dispatch("getUpdates", now)
        return reply


class World:
    """A server in virtual time, its MCP client, the stand-in and the clock they share."""

    def __init__(self, client: Client, standin: TelegramStandIn, clock: FakeClock) -> None:
        self.client, self.standin, self.clock = client, standin, clock

    async def status(self) -> dict[str, Any]:
        return await call(self.client, "get_resilience_status")

    async def breaker(self) -> dict[str, Any]:
        found: dict[str, Any] = next(b for b in (await self.status())["breakers"] if b["name"] == "telegram")
        return found

    async def until(self, what: str, predicate: Any, *, within: float, step: float = 0.5) -> float:
        """Advance virtual time in ``step``s until ``predicate()`` (awaitable or not) holds;
        the virtual seconds it took. Fails after ``within`` virtual seconds."""
        start = self.clock.monotonic()
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return self.clock.monotonic() - start
            if self.clock.monotonic() - start > within:
                raise AssertionError(f"{what}: not within {within} virtual seconds")
            await self.clock.sleep(step)

    async def backlog(self) -> int:
        box = (await self.status())["outbox"]
        return int(box["pending"] + box["in_flight"])


@asynccontextmanager
async def in_virtual_time(tmp_path: Path, resilience: ResilienceConfig, **env: str) -> AsyncIterator[World]:
    """The whole server (``open_service``) on a ``FakeClock`` under ``autojump()``, Telegram
    being the stand-in through ``InProcessTelegram``, and a real in-memory ``mcp.Client``."""
    clock = FakeClock()
    standin = TelegramStandIn(clock=clock.monotonic)  # never started: no socket, no thread
    # The tool rate limit counts real seconds; these tests poll the status every virtual half second.
    settings = make_settings(standin, tmp_path, TELEGRAM_API_BASE_URL=BASE_URL, CCTG_TOOL_RATE_LIMIT="0", **env)
    seam = InProcessTelegram(standin, clock)
    async with connected_in_virtual_time(settings, resilience, clock=clock, http_transport=seam, poll_timeout=30) as (
        client,
        _,
    ):
        yield World(client, standin, clock)
