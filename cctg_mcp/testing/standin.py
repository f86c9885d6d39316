"""``TelegramStandIn``: the Bot API semantics of the loopback stand-in.

Lifecycle, fault injection, flood limits, recorded traffic and queued updates; the HTTP
plumbing is in ``cctg_mcp.testing.server``, Telegram's input validation in ``.html``.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio.to_thread

from cctg_mcp.testing.html import TEXT_LIMIT, BadRequest, chat_id_of, parse_telegram_html, utf16_len, validate_markup
from cctg_mcp.testing.model import Bucket, Fault, FaultMode, RecordedRequest, Reply, SentMessage, err
from cctg_mcp.testing.person import ScriptedPerson
from cctg_mcp.testing.server import StandInHandler, StandInServer

DEFAULT_TOKEN = "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz012"


def _message_text(params: dict[str, Any]) -> tuple[str, str | None, str]:
    """``(text, parse_mode, plain text)`` of a sendMessage / editMessageText, validated as Telegram does."""
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("message text is empty")
    parse_mode = params.get("parse_mode") or None
    plain = parse_telegram_html(text) if str(parse_mode).upper() == "HTML" else text
    if not plain.strip():
        raise BadRequest("message text is empty")
    if utf16_len(plain) > TEXT_LIMIT:
        raise BadRequest("message is too long")
    return text, parse_mode, plain


class TelegramStandIn(ScriptedPerson):
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
        #: FaultMode.DRIP: seconds between two bytes; FaultMode.HUGE_BODY: the body's size.
        self.drip_interval = 3.0
        self.huge_body_bytes = 200 * 1024 * 1024
        self._host, self._port, self._clock = host, port, clock
        self._cond = threading.Condition()
        self._fault: Fault | None = None
        self._epoch = 0
        self._stopping = False
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._next_message_id = 1
        self._next_update_id = 1
        self._updates: list[dict[str, Any]] = []
        self._buckets: dict[int, Bucket] = {}
        self._global: Bucket | None = None
        self.sent: list[SentMessage] = []
        self.requests: list[RecordedRequest] = []
        self.answered_callbacks: list[dict[str, Any]] = []
        #: editMessageText calls that were accepted, in order (the sent message is updated too).
        self.edits: list[SentMessage] = []
        self.rate_limited_count = 0
        #: Users who never pressed Start (or blocked the bot): Telegram refuses to write to them
        #: (sendMessage / sendChatAction answer 403, as the real Bot API does).
        self.never_started: set[int] = set()
        #: getUpdates calls terminated by a newer one (409), as Telegram does with two readers.
        self.getupdates_conflicts = 0
        self._poll_generation = 0
        self.polling = 0  # getUpdates calls waiting for updates now
        self.hanging = 0  # requests currently held by a HANG fault
        self.base_url = ""

    def __repr__(self) -> str:
        return f"TelegramStandIn(base_url={self.base_url!r}, sent={len(self.sent)})"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        self._stopping = False
        server = StandInServer((self._host, self._port), StandInHandler)
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
                None if mode is FaultMode.NONE else Fault(mode, methods, chats, retry_after, status, count, self._epoch)
            )
            self._cond.notify_all()

    def clear_fault(self) -> None:
        self.set_fault(FaultMode.NONE)

    def _take_fault(self, method: str, chat: int | None) -> Fault | None:
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

    def _apply_fault(self, f: Fault) -> Reply | None:
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
                return Reply(0) if self._stopping else None
        if mode is FaultMode.RESET:
            return Reply(0)
        if mode is FaultMode.DRIP:
            return Reply(200, {"ok": True, "result": []}, drip_s=self.drip_interval)
        if mode is FaultMode.HUGE_BODY:
            return Reply(200, {"ok": True, "result": []}, pad_to=self.huge_body_bytes)
        if mode is FaultMode.RATE_LIMIT:
            return Reply(429, err(429, f"Too Many Requests: retry after {f.retry_after}", f.retry_after))
        if mode is FaultMode.UNAUTHORIZED:
            return Reply(401, err(401, "Unauthorized"))
        if mode is FaultMode.FORBIDDEN:
            return Reply(403, err(403, "Forbidden: bot was blocked by the user"))
        if mode is FaultMode.BAD_REQUEST:
            return Reply(400, err(400, "Bad Request: chat not found"))
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        return Reply(f.status, err(f.status, reason.get(f.status, "Internal Server Error")))

    # -- recorded traffic --------------------------------------------------------------------
    def server_env(self, data_dir: str | Path, users: Iterable[int], **extra: str) -> dict[str, str]:
        """The environment that points ``cctg-mcp serve`` at this stand-in (plus ``extra``)."""
        return {
            "TELEGRAM_BOT_TOKEN": self.token,
            "TELEGRAM_ALLOWED_USERS": ",".join(str(u) for u in users),
            "TELEGRAM_API_BASE_URL": self.base_url,
            "CCTG_DATA_DIR": str(data_dir),
            **extra,
        }

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

    # -- requests (parsed by cctg_mcp.testing.server) ---------------------------------------
    def _respond(self, token: str | None, method: str, params: dict[str, Any]) -> Reply:
        """The reply to a parsed request; ``token`` is None when the path is not a Bot API path."""
        refused, fault = self._admit(token, method, params)
        if refused is not None:
            return refused
        faulted = self._apply_fault(fault) if fault is not None else None
        if faulted is not None:
            return faulted
        return self._authorized(token, method, params)

    def _admit(self, token: str | None, method: str, params: dict[str, Any]) -> tuple[Reply | None, Fault | None]:
        """Before any fault: a path that is no Bot API path is refused; else the fault this
        request takes (if any). Shared with ``tests/inprocess.py``, which holds a HANG on a clock."""
        if token is None:
            return Reply(404, err(404, "Not Found")), None
        return None, self._take_fault(method, chat_id_of(params.get("chat_id")))

    def _authorized(self, token: str | None, method: str, params: dict[str, Any]) -> Reply:
        """After the faults: a wrong token is refused, else the method answers."""
        if token != self.token:
            return Reply(401, err(401, "Unauthorized"))
        return self._dispatch(method, params)

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _dispatch(self, method: str, params: dict[str, Any]) -> Reply:
        handlers: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "getUpdates": self._get_updates,
            "answerCallbackQuery": self._answer_callback,
            "editMessageText": self._edit_message_text,
            "sendChatAction": self._send_chat_action,
            "deleteWebhook": lambda p: Reply(200, {"ok": True, "result": True}),
        }
        fn = handlers.get(method)
        if fn is None:
            return Reply(404, err(404, "Not Found"))
        try:
            return fn(params)
        except BadRequest as exc:
            return Reply(400, err(400, exc.description))

    def _me(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "CCTG Test", "username": self.bot_username}

    def _get_me(self, params: dict[str, Any]) -> Reply:
        return Reply(200, {"ok": True, "result": self._me()})

    def _forbidden(self, chat_id: int) -> Reply | None:
        if chat_id in self.never_started:
            return Reply(403, err(403, "Forbidden: bot can't initiate conversation with a user"))
        return None

    def _send_chat_action(self, params: dict[str, Any]) -> Reply:
        chat_id = chat_id_of(params.get("chat_id"))
        if chat_id is None:
            raise BadRequest("chat not found")
        if params.get("action") not in ("typing", "upload_document", "choose_sticker", "record_voice"):
            raise BadRequest("wrong parameter action in request")
        return self._forbidden(chat_id) or Reply(200, {"ok": True, "result": True})

    def _send_message(self, params: dict[str, Any]) -> Reply:
        if params.get("chat_id") in (None, ""):
            raise BadRequest("chat_id is empty")
        chat_id = chat_id_of(params["chat_id"])
        if chat_id is None:
            raise BadRequest("chat not found")
        refused = self._forbidden(chat_id)
        if refused is not None:
            return refused
        text, parse_mode, plain = _message_text(params)
        markup = validate_markup(params.get("reply_markup"))
        with self._cond:
            if self.flood_limits:
                wait = self._flood_wait(chat_id)
                if wait > 0:
                    self.rate_limited_count += 1
                    after = max(1, math.ceil(wait))
                    return Reply(429, err(429, f"Too Many Requests: retry after {after}", after))
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
        return Reply(200, {"ok": True, "result": result})

    def _edit_message_text(self, params: dict[str, Any]) -> Reply:
        chat_id = chat_id_of(params.get("chat_id"))
        message_id = params.get("message_id")
        if chat_id is None or not isinstance(message_id, int):
            raise BadRequest("message to edit not found")
        text, parse_mode, plain = _message_text(params)
        markup = validate_markup(params.get("reply_markup"))
        with self._cond:
            found = [m for m in self.sent if m.chat_id == chat_id and m.message_id == message_id]
            if not found:
                raise BadRequest("message to edit not found")
            message = found[0]
            if message.text == text and message.reply_markup == markup:
                raise BadRequest(
                    "message is not modified: specified new message content and reply markup are exactly "
                    "the same as a current content and reply markup of the message"
                )
            message.text, message.parse_mode, message.reply_markup, message.plain_text = text, parse_mode, markup, plain
            self.edits.append(SentMessage(chat_id, text, parse_mode, markup, message_id, self._clock(), plain))
            self._cond.notify_all()
        result = {"message_id": message_id, "chat": {"id": chat_id}, "date": int(time.time()), "text": plain}
        return Reply(200, {"ok": True, "result": result})

    def _flood_wait(self, chat_id: int) -> float:
        """Take a token from the chat's and the global bucket, or return the seconds to wait."""
        now = self._clock()
        if self._global is None:
            self._global = Bucket(self.global_per_second, self.global_burst, self.global_burst, now)
        bucket = self._buckets.setdefault(
            chat_id, Bucket(self.per_chat_per_second, self.per_chat_burst, self.per_chat_burst, now)
        )
        wait = max(bucket.refill(now), self._global.refill(now))
        if wait <= 0:
            bucket.tokens -= 1
            self._global.tokens -= 1
        return wait

    def _get_updates(self, params: dict[str, Any]) -> Reply:
        try:
            offset = int(params.get("offset") or 0)
            limit = min(100, max(1, int(params.get("limit") or 100)))
            timeout = min(self.max_poll, max(0.0, float(params.get("timeout") or 0)))
        except (TypeError, ValueError):
            raise BadRequest("wrong parameter value") from None
        deadline = time.monotonic() + timeout
        with self._cond:
            # One reader per bot: a newer getUpdates terminates the one still waiting (409).
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()
            if offset < 0:
                self._updates = self._updates[offset:]
            elif offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._stopping and time.monotonic() < deadline:
                self.polling += 1
                try:
                    self._cond.wait(deadline - time.monotonic())
                finally:
                    self.polling -= 1
                if self._poll_generation != generation:
                    self.getupdates_conflicts += 1
                    return Reply(
                        409,
                        err(
                            409,
                            "Conflict: terminated by other getUpdates request; "
                            "make sure that only one bot instance is running",
                        ),
                    )
            return Reply(200, {"ok": True, "result": [dict(u) for u in self._updates[:limit]]})

    def _answer_callback(self, params: dict[str, Any]) -> Reply:
        if not params.get("callback_query_id"):
            raise BadRequest("query is too old and response timeout expired or query ID is invalid")
        with self._cond:
            self.answered_callbacks.append(dict(params))
        return Reply(200, {"ok": True, "result": True})
