"""A loopback Telegram Bot API stand-in with fault injection, shipped in the package.

A real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer`` in a daemon thread), so it
works from asyncio, trio and other processes alike. It validates ``sendMessage`` the way
Telegram does (HTML entity parsing, 4096-character limit, ``callback_data`` ≤ 64 bytes), so
escaping bugs fail in tests. The bot token is never logged or recorded.

Run it stand-alone with ``python -m cctg_mcp.testing --port 0``: it prints one JSON line
``{"base_url": ..., "token": ...}`` and serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import logging
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio.to_thread

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz012"
TEXT_LIMIT = 4096
SUPPORTED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "a"}
    | {"tg-spoiler", "tg-emoji", "span", "blockquote"}
)
_TAG_RE = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)"
    r"((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'<>]+))?)*)\s*>"
)
_ENTITY_RE = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_SPECIAL_RE = re.compile(r"[<&]")
_PATH_RE = re.compile(r"/bot([^/]*)/([A-Za-z]+)/?")


class FaultMode(str, Enum):
    NONE = "none"
    SERVER_ERROR = "server_error"
    RATE_LIMIT = "rate_limit"
    HANG = "hang"
    RESET = "reset"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "bad_request"


class BadRequest(Exception):
    """A Telegram 400; ``description`` is the full Bot API description."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Bad Request: {detail}")
        self.description = f"Bad Request: {detail}"


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def parse_telegram_html(text: str) -> str:
    """Parse ``parse_mode=HTML`` text like Telegram; return the plain text or raise BadRequest."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while True:
        m = _SPECIAL_RE.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        j = m.start()
        out.append(text[i:j])
        where = f"at byte offset {len(text[:j].encode())}"
        if text[j] == "&":
            ent = _ENTITY_RE.match(text, j)
            if ent is None:
                raise BadRequest(f"can't parse entities: Unsupported entity {where}")
            out.append(html.unescape(ent.group()))
            i = ent.end()
            continue
        tag = _TAG_RE.match(text, j)
        if tag is None:
            raise BadRequest(f"can't parse entities: Unexpected character '<' {where}")
        name = tag.group(2).lower()
        if name not in SUPPORTED_TAGS:
            raise BadRequest(f'can\'t parse entities: Unsupported start tag "{name}" {where}')
        if tag.group(1):
            if not stack or stack[-1] != name:
                raise BadRequest(f'can\'t parse entities: Unexpected end tag "{name}" {where}')
            stack.pop()
        else:
            stack.append(name)
        i = tag.end()
    if stack:
        raise BadRequest(f"can't parse entities: Can't find end tag corresponding to start tag {stack[-1]}")
    return "".join(out)


def _validate_markup(raw: Any) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    try:
        markup = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise BadRequest("can't parse reply keyboard markup JSON object") from None
    if not isinstance(markup, dict):
        raise BadRequest("can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard", [])
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise BadRequest('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not button.get("text"):
            raise BadRequest("BUTTON_TEXT_INVALID")
        data = button.get("callback_data")
        if data is not None and not (isinstance(data, str) and 1 <= len(data.encode()) <= 64):
            raise BadRequest("BUTTON_DATA_INVALID")
    return markup


def _chat_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


@dataclass
class SentMessage:
    chat_id: int
    text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    message_id: int
    at: float
    plain_text: str = ""


@dataclass
class RecordedRequest:
    method: str
    path: str  # the token is replaced by [REDACTED]
    params: dict[str, Any]
    status: int  # 0 when the connection was dropped without a response


@dataclass
class _Fault:
    mode: FaultMode
    methods: set[str] | None
    chats: set[int] | None
    retry_after: int
    status: int
    count: int | None
    epoch: int


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any] | None = None  # None: drop the connection (RST)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    standin: TelegramStandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("stand-in: connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end on their own
    server: _Server

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
        self.server.standin._serve(self)

    do_POST = do_GET


class TelegramStandIn:
    """A Telegram Bot API server on loopback with fault injection and flood limits."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "cctg_test_bot",
        flood_limits: bool = False,
        per_chat_per_second: float = 1.0,
        per_chat_burst: int = 3,
        global_per_second: float = 30.0,
        global_burst: int | None = None,
        max_hang: float = 30.0,
        max_poll: float = 50.0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.bot_username = bot_username
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.flood_limits = flood_limits
        self.per_chat_per_second, self.per_chat_burst = per_chat_per_second, per_chat_burst
        self.global_per_second = global_per_second
        self.global_burst = global_burst or max(1, math.ceil(global_per_second))
        self.max_hang, self.max_poll = max_hang, max_poll
        self._host, self._port, self._clock = host, port, clock
        self._cond = threading.Condition()
        self._fault: _Fault | None = None
        self._epoch = 0
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._next_message_id = 1
        self._next_update_id = 1
        self._updates: list[dict[str, Any]] = []
        self._buckets: dict[int, _Bucket] = {}
        self._global: _Bucket | None = None
        self.sent: list[SentMessage] = []
        self.requests: list[RecordedRequest] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        self.rate_limited_count = 0
        self.hanging = 0  # requests currently held by a HANG fault
        self.base_url = ""

    def __repr__(self) -> str:
        return f"TelegramStandIn(base_url={self.base_url!r}, sent={len(self.sent)})"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        self._stopping = False
        server = _Server((self._host, self._port), _Handler)
        server.standin = self
        self._server = server
        self._port = int(server.server_address[1])  # a restart comes back on the same port
        self.base_url = f"http://{self._host}:{self._port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="telegram-stand-in", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:  # wake handlers blocked on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TelegramStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- faults ------------------------------------------------------------------------------
    def set_fault(
        self,
        mode: FaultMode,
        *,
        methods: set[str] | None = None,
        retry_after: int = 1,
        status: int = 500,
        chats: set[int] | None = None,
        count: int | None = None,
    ) -> None:
        """Fail matching requests (all by default); ``count``: only the next N, then heal."""
        with self._cond:
            self._epoch += 1
            self._fault = (
                None
                if mode is FaultMode.NONE
                else _Fault(mode, methods, chats, retry_after, status, count, self._epoch)
            )
            self._cond.notify_all()

    def clear_fault(self) -> None:
        self.set_fault(FaultMode.NONE)

    def _take_fault(self, method: str, chat: int | None) -> _Fault | None:
        with self._cond:
            f = self._fault
            if f is None or (f.methods is not None and method not in f.methods):
                return None
            if f.chats is not None and chat not in f.chats:
                return None
            if f.count is not None:
                f.count -= 1
                if f.count <= 0:
                    self._fault = None  # healed; a hanging request still waits for its epoch
            return f

    def _apply_fault(self, f: _Fault) -> _Reply | None:
        """The fault's reply, or None to serve the request normally (a released HANG)."""
        mode = f.mode
        if mode is FaultMode.HANG:
            deadline = time.monotonic() + self.max_hang
            with self._cond:
                self.hanging += 1
                self._cond.notify_all()
                while not self._stopping and self._epoch == f.epoch and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                self.hanging -= 1
                return _Reply(0) if self._stopping else None
        if mode is FaultMode.RESET:
            return _Reply(0)
        if mode is FaultMode.RATE_LIMIT:
            return _Reply(429, _err(429, f"Too Many Requests: retry after {f.retry_after}", f.retry_after))
        if mode is FaultMode.UNAUTHORIZED:
            return _Reply(401, _err(401, "Unauthorized"))
        if mode is FaultMode.FORBIDDEN:
            return _Reply(403, _err(403, "Forbidden: bot was blocked by the user"))
        if mode is FaultMode.BAD_REQUEST:
            return _Reply(400, _err(400, "Bad Request: chat not found"))
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        return _Reply(f.status, _err(f.status, reason.get(f.status, "Internal Server Error")))

    # -- recorded traffic --------------------------------------------------------------------
    def messages_for(self, chat_id: int) -> list[SentMessage]:
        with self._cond:
            return [m for m in self.sent if m.chat_id == chat_id]

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` (checked on every state change) holds, or time out."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_messages(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` messages were accepted (thread-safe)."""
        return self.wait_until(lambda: len(self.sent) >= n, timeout)

    async def await_messages(self, n: int, timeout: float = 10) -> list[SentMessage]:  # noqa: ASYNC109
        waited = anyio.to_thread.run_sync(self.wait_for_messages, n, timeout, abandon_on_cancel=True)
        if not await waited:
            recent = [f"{r.method}->{r.status}" for r in self.requests[-10:]]
            raise TimeoutError(
                f"stand-in: expected {n} sent messages within {timeout}s, got {len(self.sent)}; last requests: {recent}"
            )
        with self._cond:
            return list(self.sent)

    # -- updates -----------------------------------------------------------------------------
    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for getUpdates; its ``update_id`` is assigned here and returned."""
        with self._cond:
            update = {**update, "update_id": self._next_update_id}
            self._next_update_id += 1
            self._updates.append(update)
            self._cond.notify_all()
            return int(update["update_id"])

    def _user(self, user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}"}

    def push_text(self, user_id: int, text: str) -> int:
        with self._cond:
            mid = self._next_message_id
            self._next_message_id += 1
        msg = {"message_id": mid, "from": self._user(user_id), "date": int(time.time()), "text": text}
        msg["chat"] = {"id": user_id, "type": "private"}
        return self.push_update({"message": msg})

    def push_callback(self, user_id: int, data: str, message_id: int | None = None) -> int:
        with self._cond:
            if message_id is None:
                mine = [m.message_id for m in self.sent if m.chat_id == user_id]
                message_id = mine[-1] if mine else 1
            query_id = f"cbq{self._next_update_id}"
        chat = {"id": user_id, "type": "private"}
        message = {"message_id": message_id, "chat": chat, "date": int(time.time())}
        query = {"id": query_id, "from": self._user(user_id), "message": message, "data": data}
        query["chat_instance"] = str(user_id)
        return self.push_update({"callback_query": query})

    # -- HTTP --------------------------------------------------------------------------------
    def _serve(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        match = _PATH_RE.fullmatch(url.path)
        path = _PATH_RE.sub(lambda m: f"/bot[REDACTED]/{m.group(2)}", url.path) if match else "[REDACTED]"
        method = match.group(2) if match else ""
        try:
            params = self._params(handler, url.query)
        except ValueError:
            params, reply = {}, _Reply(400, _err(400, "Bad Request: invalid request body"))
        else:
            fault = self._take_fault(method, _chat_id(params.get("chat_id"))) if match else None
            faulted = self._apply_fault(fault) if fault is not None else None
            if match is None:
                reply = _Reply(404, _err(404, "Not Found"))
            elif faulted is not None:
                reply = faulted
            elif match.group(1) != self.token:
                reply = _Reply(401, _err(401, "Unauthorized"))
            else:
                reply = self._dispatch(method, params)
        with self._cond:
            self.requests.append(RecordedRequest(method, path, params, reply.status))
            self._cond.notify_all()
        try:
            if reply.payload is None:
                handler.close_connection = True
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                handler.connection.close()  # RST, no response
                return
            body = json.dumps(reply.payload).encode()
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            handler.close_connection = True

    def _params(self, handler: _Handler, query: str) -> dict[str, Any]:
        params: dict[str, Any] = dict(parse_qsl(query))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        ctype = handler.headers.get("Content-Type", "")
        if body and "json" in ctype:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("body is not an object")
            params.update(data)
        elif body:
            params.update(parse_qsl(body.decode()))
        return params

    def _dispatch(self, method: str, params: dict[str, Any]) -> _Reply:
        handlers: dict[str, Callable[[dict[str, Any]], _Reply]] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "getUpdates": self._get_updates,
            "answerCallbackQuery": self._answer_callback,
            "deleteWebhook": lambda p: _Reply(200, {"ok": True, "result": True}),
        }
        fn = handlers.get(method)
        if fn is None:
            return _Reply(404, _err(404, "Not Found"))
        try:
            return fn(params)
        except BadRequest as exc:
            return _Reply(400, _err(400, exc.description))

    def _me(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "CCTG Test", "username": self.bot_username}

    def _get_me(self, params: dict[str, Any]) -> _Reply:
        return _Reply(200, {"ok": True, "result": self._me()})

    def _send_message(self, params: dict[str, Any]) -> _Reply:
        if params.get("chat_id") in (None, ""):
            raise BadRequest("chat_id is empty")
        chat_id = _chat_id(params["chat_id"])
        if chat_id is None:
            raise BadRequest("chat not found")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("message text is empty")
        parse_mode = params.get("parse_mode") or None
        plain = parse_telegram_html(text) if str(parse_mode).upper() == "HTML" else text
        if not plain.strip():
            raise BadRequest("message text is empty")
        if utf16_len(plain) > TEXT_LIMIT:
            raise BadRequest("message is too long")
        markup = _validate_markup(params.get("reply_markup"))
        with self._cond:
            if self.flood_limits:
                wait = self._flood_wait(chat_id)
                if wait > 0:
                    self.rate_limited_count += 1
                    after = max(1, math.ceil(wait))
                    return _Reply(429, _err(429, f"Too Many Requests: retry after {after}", after))
            mid = self._next_message_id
            self._next_message_id += 1
            self.sent.append(SentMessage(chat_id, text, parse_mode, markup, mid, self._clock(), plain))
            self._cond.notify_all()
        result: dict[str, Any] = {
            "message_id": mid,
            "from": self._me(),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": int(time.time()),
            "text": plain,
        }
        if markup:
            result["reply_markup"] = markup
        return _Reply(200, {"ok": True, "result": result})

    def _flood_wait(self, chat_id: int) -> float:
        """Take a token from the chat's and the global bucket, or return the seconds to wait."""
        now = self._clock()
        if self._global is None:
            self._global = _Bucket(self.global_per_second, self.global_burst, self.global_burst, now)
        bucket = self._buckets.setdefault(
            chat_id, _Bucket(self.per_chat_per_second, self.per_chat_burst, self.per_chat_burst, now)
        )
        wait = max(bucket.refill(now), self._global.refill(now))
        if wait <= 0:
            bucket.tokens -= 1
            self._global.tokens -= 1
        return wait

    def _get_updates(self, params: dict[str, Any]) -> _Reply:
        try:
            offset = int(params.get("offset") or 0)
            limit = min(100, max(1, int(params.get("limit") or 100)))
            timeout = min(self.max_poll, max(0.0, float(params.get("timeout") or 0)))
        except (TypeError, ValueError):
            raise BadRequest("wrong parameter value") from None
        deadline = time.monotonic() + timeout
        with self._cond:
            if offset < 0:
                self._updates = self._updates[offset:]
            elif offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._stopping and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return _Reply(200, {"ok": True, "result": [dict(u) for u in self._updates[:limit]]})

    def _answer_callback(self, params: dict[str, Any]) -> _Reply:
        if not params.get("callback_query_id"):
            raise BadRequest("query is too old and response timeout expired or query ID is invalid")
        with self._cond:
            self.answered_callbacks.append(dict(params))
        return _Reply(200, {"ok": True, "result": True})


def _err(code: int, description: str, retry_after: int | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        env["parameters"] = {"retry_after": retry_after}
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cctg_mcp.testing", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--flood-limits", action="store_true")
    parser.add_argument("--ignore-stdin", action="store_true", help="serve until SIGTERM only")
    args = parser.parse_args(argv)
    done = threading.Event()
    standin = TelegramStandIn(args.token, host=args.host, port=args.port, flood_limits=args.flood_limits)
    standin.start()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def watch_stdin() -> None:
        for _ in sys.stdin:
            pass
        done.set()

    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    sys.stdout.write(json.dumps({"base_url": standin.base_url, "token": args.token}) + "\n")
    sys.stdout.flush()
    try:
        while not done.wait(0.2):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
