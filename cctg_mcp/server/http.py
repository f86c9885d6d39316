"""Serving the MCP server: stdio and streamable HTTP, both with a graceful shutdown.

Shutdown (SIGTERM, SIGINT, stdin closing on stdio): the server stops taking requests, the
service's dispatcher claims nothing new and gets a bounded time for deliveries in progress
(``open_service``'s drain), the rest stays pending in the outbox, and the process exits 0.
The service is opened *outside* the MCP serving loop so that stopping the loop never cancels
the drain.

Streamable HTTP (``cctg-mcp serve --transport http``) runs on uvicorn, which is asyncio-only
(``--backend trio`` applies to stdio only). It

- binds 127.0.0.1 by default and refuses any non-loopback address unless ``CCTG_HTTP_TOKEN``
  is set (``check_bind``);
- with a token, requires ``Authorization: Bearer <token>`` on every route but ``/healthz``
  and ``/readyz``;
- checks Host and Origin against the loopback names with the bound port (DNS rebinding
  protection; for a specific non-loopback bind address that address too; a wildcard bind
  skips the Host check, since any name may reach it, and relies on the token);
- serves ``GET /healthz``: liveness, 200 while the process runs (also while Telegram is down),
  and ``GET /readyz``: readiness, 200 when no critical component (critical health endpoints,
  the delivery path) is unhealthy, else 503, as ``application/health+json``; both without
  authentication and without secrets in the body;
- bounds header time, sessions per client and idle sessions, and logs repeated refusals once
  per interval (``server.http_limits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cctg_mcp import __version__
from cctg_mcp.ops.health import readiness
from cctg_mcp.runtime import Runtime
from cctg_mcp.server.http_limits import (
    MAX_SESSIONS,
    SessionQuota,
    header_timeout_protocol,
    install_loop_log_throttle,
    throttled,
)
from cctg_mcp.server.wire_guard import Rejection, screen

log = logging.getLogger(__name__)

OpenService = Callable[[], AbstractAsyncContextManager[Runtime]]
BuildServer = Callable[[OpenService], MCPServer[Any]]
MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """Why ``host`` must not be bound (None when it may)."""
    if is_loopback(host) or token:
        return None
    return (
        f"refusing to listen on {host} without CCTG_HTTP_TOKEN: anyone who can reach that address could "
        "send Telegram messages in your name. Set CCTG_HTTP_TOKEN to a long random secret (clients then "
        "send 'Authorization: Bearer <token>'), or listen on 127.0.0.1 (the default)."
    )


def allowed_hosts(host: str, port: int) -> list[str] | None:
    """Host header values accepted; None: any (a wildcard bind, protected by the token)."""
    if host in ("0.0.0.0", "::", "[::]", ""):
        return None
    names = list(LOOPBACK_NAMES)
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if bracketed not in names:
        names.append(bracketed)
    return [f"{name}:{port}" for name in names]


class HttpGuard:
    """ASGI middleware: Host/Origin checks, then the bearer token (not on ``/healthz`` or ``/readyz``)."""

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: list[str] | None, origins: list[str]) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(Request(scope))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        host = request.headers.get("host", "")
        if self.hosts is not None and host not in self.hosts:
            throttled.note(
                "host", logging.WARNING, "refused an HTTP request with Host %r (DNS rebinding protection)", host[:100]
            )
            return PlainTextResponse("Invalid Host header", status_code=421)
        origin = request.headers.get("origin")
        if origin and origin not in self.origins:
            throttled.note("origin", logging.WARNING, "refused an HTTP request with Origin %r", origin[:100])
            return PlainTextResponse("Invalid Origin header", status_code=403)
        if self._token is None or request.url.path in (HEALTH_PATH, READY_PATH):
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return None
        peer = request.client.host if request.client else "?"
        throttled.note("token", logging.WARNING, "refused an HTTP request without the bearer token (from %s)", peer)
        return PlainTextResponse(
            "Unauthorized: send 'Authorization: Bearer <CCTG_HTTP_TOKEN>'.",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="cctg-mcp"'},
        )


def http_app(server: MCPServer[Any], runtime: Runtime, *, host: str, port: int, token: str | None) -> ASGIApp:
    """The streamable HTTP app of ``server`` behind ``HttpGuard``, with ``/healthz`` and ``/readyz``."""
    started = time.monotonic()
    service = runtime.service

    @server.custom_route(HEALTH_PATH, methods=["GET"], include_in_schema=False)  # type: ignore[untyped-decorator]
    async def healthz(_: Request) -> Response:
        dispatcher = service.dispatcher
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(time.monotonic() - started, 3),
                "configured": not service.settings.problems(),
                "dispatcher_running": bool(dispatcher is not None and dispatcher.running),
            }
        )

    @server.custom_route(READY_PATH, methods=["GET"], include_in_schema=False)  # type: ignore[untyped-decorator]
    async def readyz(_: Request) -> Response:
        ready, body = readiness(runtime.health)
        body["version"] = __version__
        return JSONResponse(body, status_code=200 if ready else 503, media_type="application/health+json")

    hosts = allowed_hosts(host, port)
    origins = [f"http://{h}" for h in hosts or [f"{n}:{port}" for n in LOOPBACK_NAMES]]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=hosts is not None, allowed_hosts=hosts or [], allowed_origins=origins
    )
    settings = service.settings
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=security,
        host=host,
        session_idle_timeout=settings.http_session_idle,
        max_sessions=MAX_SESSIONS,
    )

    def live_sessions() -> Any:
        return server.session_manager._server_instances

    quota = SessionQuota(app, per_client=settings.http_sessions_per_client, live_sessions=live_sessions)
    return HttpGuard(quota, token=token, hosts=hosts, origins=origins)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (and so validate) the address before anything starts; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    infos = socket.getaddrinfo(host.strip("[]"), port, family if host != "localhost" else 0, socket.SOCK_STREAM)
    af, kind, proto, _, address = infos[0]
    sock = socket.socket(af, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        # Listening from here on, so the "serving ... at" line is true when it is logged: a
        # client that connects before uvicorn starts accepting waits in the backlog instead
        # of being refused (uvicorn listens on the same socket again, which changes nothing).
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _quiet_signals() -> Any:
    """uvicorn re-raises the signal that stopped it once it is done; with these no-op handlers
    in place that ends nothing, and ``serve`` returns normally (exit 0)."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def serve_http(
    open_service: OpenService, build_server: BuildServer, sock: socket.socket, *, token: str | None
) -> None:
    """Serve streamable HTTP on the bound ``sock`` until SIGTERM/SIGINT (asyncio only)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    async with open_service() as runtime:
        server = build_server(lambda: contextlib.nullcontext(runtime))
        app = http_app(server, runtime, host=host, port=port, token=token)
        install_loop_log_throttle(asyncio.get_running_loop())
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=3,
            http=header_timeout_protocol(runtime.service.settings.http_header_timeout),
        )
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "serving MCP over streamable HTTP at http://%s:%d%s (liveness: %s)%s",
            shown,
            port,
            MCP_PATH,
            HEALTH_PATH,
            "; bearer token required" if token else "",
        )
        with _quiet_signals():
            await uvicorn.Server(config).serve(sockets=[sock])
        log.info("HTTP server stopped; finishing deliveries in progress")


class CancellableStdin:
    """Lines from a pipe or socket on stdin, read without a worker thread, so cancelling the
    server (SIGTERM while the client keeps stdin open) does not wait for the next line. The
    SDK's reader blocks a thread in ``readline()``, which no cancellation can end.

    Like the SDK it reads a private duplicate and points fd 0 at the null device meanwhile
    (children must not eat protocol bytes); ``close()`` restores fd 0."""

    def __init__(self) -> None:
        #: Answers a line the SDK would drop unanswered (``server.wire_guard``); set once serving.
        self.on_rejected: Callable[[Rejection], Awaitable[None]] | None = None
        self.fd = os.dup(0)
        os.set_blocking(self.fd, False)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)

    @staticmethod
    def usable() -> bool:
        try:
            mode = os.fstat(0).st_mode
        except OSError:
            return False
        return sys.platform != "win32" and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode))

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        pending = b""
        while True:
            await anyio.wait_readable(self.fd)
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                if pending:
                    yield pending.decode("utf-8", "replace")
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace") + "\n"
                rejection = screen(text) if self.on_rejected is not None else None
                if rejection is not None and self.on_rejected is not None:
                    await self.on_rejected(rejection)
                    continue
                yield text

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, True)
            os.dup2(self.fd, 0)
            os.close(self.fd)


async def _run_stdio(server: MCPServer[Any]) -> None:
    if not CancellableStdin.usable():  # a terminal, a file, /dev/null: the SDK's own reader
        await server.run_stdio_async()
        return
    stdin = CancellableStdin()
    try:
        lowlevel = server._lowlevel_server  # run_stdio_async() takes no stdin; this is its body
        async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # type: ignore[arg-type]

            async def answer(rejection: Rejection) -> None:
                log.info("stdio: answered a request the SDK cannot read: %s", rejection.message)
                await write_stream.send(SessionMessage(rejection.to_message()))

            stdin.on_rejected = answer
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
    finally:
        stdin.close()


async def serve_stdio(open_service: OpenService, build_server: BuildServer) -> None:
    """Serve MCP over stdio until stdin closes or SIGTERM/SIGINT arrives.

    The signal receiver spans the whole run, so a second signal during the drain is absorbed
    (the drain is bounded anyway); errors opening the service (a corrupt outbox) propagate as
    they are, not wrapped in an exception group."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_service() as runtime:
            server = build_server(lambda: contextlib.nullcontext(runtime))
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    async for sig in signals:
                        log.info("%s received: shutting down", signal.Signals(sig).name)
                        tg.cancel_scope.cancel()
                        return

                tg.start_soon(watch)
                await _run_stdio(server)
                log.info("stdin closed: shutting down")
                tg.cancel_scope.cancel()


def run_http(
    open_service: OpenService, build_server: BuildServer, *, backend: str, host: str, port: int, token: str | None
) -> int:
    """``cctg-mcp serve --transport http``: check the address, bind it, serve; the exit code."""
    if backend != "asyncio":
        sys.stderr.write(
            "cctg-mcp: --backend trio applies to stdio only; streamable HTTP runs on uvicorn "
            "(asyncio). Drop --backend or use --transport stdio.\n"
        )
        return 2
    refusal = check_bind(host, token)
    if refusal is not None:
        sys.stderr.write(f"cctg-mcp: {refusal}\n")
        return 2
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        sys.stderr.write(
            f"cctg-mcp: cannot listen on {host}:{port}: {exc.strerror or exc}. "
            "Pick another --port (CCTG_HTTP_PORT) or stop what uses it.\n"
        )
        return 2
    with sock:
        anyio.run(functools.partial(serve_http, open_service, build_server, sock, token=token), backend="asyncio")
    return 0
