"""The stand-in's HTTP side: a threaded loopback server, request parsing, reply writing.

The Bot API semantics live in ``TelegramStandIn``; this module only turns HTTP requests
into ``(token, method, params)`` and replies back into HTTP, redacting the token.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from cctg_mcp.testing.model import RecordedRequest, Reply, err

if TYPE_CHECKING:
    from cctg_mcp.testing.standin import TelegramStandIn

log = logging.getLogger(__name__)

_PATH_RE = re.compile(r"/bot([^/]*)/([A-Za-z]+)/?")


class IncompleteBody(ValueError):
    """The connection ended before ``Content-Length`` bytes of body arrived."""


class StandInServer(ThreadingHTTPServer):
    """The stand-in's threaded HTTP server."""

    daemon_threads = True
    request_queue_size = 128
    standin: TelegramStandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("stand-in: connection error", exc_info=True)


class StandInHandler(BaseHTTPRequestHandler):
    """Answers one HTTP request as the Bot API would."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end on their own
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:  # the request line holds the token
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers+body: no 40 ms stall
        self.server.standin._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._track(self.connection, add=False)

    def do_GET(self) -> None:
        handle(self.server.standin, self)

    do_POST = do_GET


def handle(standin: TelegramStandIn, handler: StandInHandler) -> None:
    """Answer one request: parse it, let the stand-in respond, record it, write the reply."""
    url = urlsplit(handler.path)
    match = _PATH_RE.fullmatch(url.path)
    path = _PATH_RE.sub(lambda m: f"/bot[REDACTED]/{m.group(2)}", url.path) if match else "[REDACTED]"
    method = match.group(2) if match else ""
    try:
        params = read_params(handler, url.query)
    except IncompleteBody:  # a cancelled client: never act on the parameters that did arrive
        params, reply = {}, Reply(400, err(400, "Bad Request: incomplete request body"), close=True)
    except ValueError:
        params, reply = {}, Reply(400, err(400, "Bad Request: invalid request body"))
    else:
        reply = standin._respond(match.group(1) if match else None, method, params)
    standin._record(RecordedRequest(method, path, params, reply.status))
    write_reply(handler, reply)


def read_params(handler: StandInHandler, query: str) -> dict[str, Any]:
    """Query-string and body parameters (JSON or form); ValueError when the body is bad."""
    params: dict[str, Any] = dict(parse_qsl(query))
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length > 0 else b""
    if len(body) < length:
        raise IncompleteBody(f"got {len(body)} of {length} body bytes")
    ctype = handler.headers.get("Content-Type", "")
    if body and "json" in ctype:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("body is not an object")
        params.update(data)
    elif body:
        params.update(parse_qsl(body.decode()))
    return params


def write_slowly_or_hugely(handler: StandInHandler, reply: Reply, body: bytes) -> None:
    """A hostile peer's body: dripped a byte at a time (bounded by ``max_hang``), or padded to
    ``pad_to`` bytes with no Content-Length; the connection closes after it."""
    handler.send_header("Connection", "close")
    handler.end_headers()
    standin = handler.server.standin
    if reply.drip_s:
        deadline = time.monotonic() + standin.max_hang
        for i in range(len(body)):
            if standin._stopping or time.monotonic() > deadline:
                return
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            time.sleep(reply.drip_s)
        return
    handler.wfile.write(body)
    chunk = b" " * 65536
    for _ in range(max(0, reply.pad_to - len(body)) // len(chunk)):
        if standin._stopping:
            return
        handler.wfile.write(chunk)


def write_reply(handler: StandInHandler, reply: Reply) -> None:
    """Send the JSON reply, or reset the connection when it has no payload."""
    try:
        if reply.payload is None:
            handler.close_connection = True
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()  # RST, no response
            return
        body = json.dumps(reply.payload).encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json")
        if reply.pad_to or reply.drip_s:
            write_slowly_or_hugely(handler, reply, body)
            return
        handler.send_header("Content-Length", str(len(body)))
        if reply.close:
            handler.send_header("Connection", "close")  # also sets handler.close_connection
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        handler.close_connection = True
