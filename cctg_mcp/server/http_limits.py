"""Bounds for the streamable HTTP transport under abuse (``serve --transport http``).

- **Header time** (``CCTG_HTTP_HEADER_TIMEOUT``, 10 s): a connection that has not sent a
  complete request head within that time of opening (or of its last response) is closed.
  uvicorn bounds idle keep-alive but not a request head that arrives one byte at a time,
  so slow headers could hold every file descriptor without authenticating.
- **Sessions per client** (``CCTG_HTTP_MAX_SESSIONS_PER_CLIENT``, 16): a client is its
  bearer token (a fingerprint, never the token) and its address. A request that would open
  one more session is refused with 429, so one client cannot take every session slot.
- **Idle sessions** (``CCTG_HTTP_SESSION_IDLE``, 10 min) are closed by the SDK, and at most
  ``MAX_SESSIONS`` are open in all.
- **Repeated errors** (refused hosts, origins, tokens; the event loop's accept errors such as
  "Too many open files") are logged once per interval with a count (``ThrottledLog``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from cctg_mcp.resilience.logthrottle import ThrottledLog
from cctg_mcp.server.ratelimit import client_identity

log = logging.getLogger(__name__)
throttled = ThrottledLog(log)

#: Most streamable HTTP sessions open at once, over all clients.
MAX_SESSIONS = 1000


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request head takes over ``seconds``."""

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(seconds, self._head_deadline)

        def _head_deadline(self) -> None:
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:  # no request head yet
                throttled.note(
                    "header-timeout",
                    logging.WARNING,
                    "closed an HTTP connection that sent no complete request head within %g s",
                    seconds,
                )
                self.transport.close()

    return HeaderTimeoutProtocol


class SessionQuota:
    """ASGI middleware: at most ``per_client`` open sessions per client identity."""

    def __init__(self, app: ASGIApp, *, per_client: int, live_sessions: Any) -> None:
        self.app = app
        self.per_client = per_client
        #: ``() -> container of live session ids`` (the SDK's session manager).
        self.live_sessions = live_sessions
        self._sessions: dict[str, set[str]] = {}

    def _open(self, identity: str) -> set[str]:
        live = self.live_sessions()
        if len(self._sessions) > 4 * MAX_SESSIONS:  # clients that went away: forget them
            self._sessions = {k: v & set(live) for k, v in self._sessions.items() if v & set(live)}
        mine = {sid for sid in self._sessions.get(identity, set()) if sid in live}
        if mine:
            self._sessions[identity] = mine
        else:
            self._sessions.pop(identity, None)
        return mine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if request.method != "POST" or request.headers.get("mcp-session-id"):
            await self.app(scope, receive, send)
            return
        peer = request.client.host if request.client else None
        identity = client_identity(request.headers, peer)
        if len(self._open(identity)) >= self.per_client:
            throttled.note(
                f"sessions:{identity}",
                logging.WARNING,
                "refused a new HTTP session: client %s already holds %d",
                identity,
                self.per_client,
            )
            refusal = PlainTextResponse(
                f"Too many sessions for this client ({self.per_client} open): reuse one, close one "
                "(DELETE with its Mcp-Session-Id), or wait for idle ones to expire.",
                status_code=429,
                headers={"Retry-After": "60"},
            )
            await refusal(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        self._sessions.setdefault(identity, set()).add(value.decode("latin-1"))
            await send(message)

        await self.app(scope, receive, watch)


def install_loop_log_throttle(loop: asyncio.AbstractEventLoop) -> None:
    """Log the event loop's repeated errors (EMFILE on accept) once per interval, no traceback."""

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        throttled.note(f"loop:{message}:{type(exc).__name__}", logging.ERROR, "%s %s", message, detail)

    loop.set_exception_handler(handler)
