"""The Telegram Bot API client: the one module (besides ``testing``) that imports httpx.

Every failure leaves this module as one of our errors (``resilience.errors``), raised with
no ``__cause__`` or ``__context__``: httpx exceptions carry the request URL, and the URL
carries the bot token. Error texts are redacted, and httpx/httpcore loggers (which log
request URLs at INFO/DEBUG) are held at WARNING.

A wait the server dictates (a 429's ``retry_after``) is capped at ``max_server_wait``
seconds (CCTG_MAX_SERVER_WAIT, one hour by default) and the cap is logged (at most once a
minute): a hostile or broken server cannot pause sending for years.

Every call is bounded as a whole, not per read: a server that drips one byte at a time
resets httpx's read timeout forever, so each call also runs under one deadline (its HTTP
timeout plus the connect timeout plus a margin; for getUpdates the long poll plus
``LONG_POLL_MARGIN``). A response body is read in chunks and refused past
``max_body_bytes`` (8 MiB by default), so a huge answer cannot take the memory.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import httpx

from cctg_mcp.resilience.errors import (
    AttemptTimeoutError,
    BaseResilienceError,
    ConfigurationError,
    NetworkError,
    ResourceError,
    TelegramBadRequest,
    TelegramChatMigrated,
    TelegramConflict,
    TelegramError,
    TelegramForbidden,
    TelegramRateLimited,
    TelegramServerError,
    TelegramUnauthorized,
    redact,
)
from cctg_mcp.resilience.logthrottle import ThrottledLog
from cctg_mcp.transports.api import DEFAULT_BASE_URL

log = logging.getLogger(__name__)

#: Tokens of live transports, for the log filter (the generic token pattern catches the rest).
_TOKENS: set[str] = set()


class _RedactingFilter(logging.Filter):
    """Redacts bot tokens from httpx/httpcore records, even if someone re-enables DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), *_TOKENS)
        record.args = None
        return True


_FILTER = _RedactingFilter()
_NOISY = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy")
for _name in _NOISY:
    _logger = logging.getLogger(_name)
    _logger.addFilter(_FILTER)
    if _name in ("httpx", "httpcore") and _logger.level < logging.WARNING:  # NOTSET too
        _logger.setLevel(logging.WARNING)

#: The longest wait a server may dictate by default (CCTG_MAX_SERVER_WAIT).
DEFAULT_MAX_SERVER_WAIT = 3600.0
#: Most bytes of a response body read before the answer is refused.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
#: Seconds a whole call may take beyond its HTTP and connect timeouts.
CALL_MARGIN = 5.0
#: Seconds added to a getUpdates long-poll timeout for the HTTP read timeout.
LONG_POLL_MARGIN = 10.0

# (httpx class, our class, code) — checked in order, so subclasses come first.
_HTTPX_ERRORS: tuple[tuple[type[Exception], type[BaseResilienceError], str], ...] = (
    (httpx.ConnectTimeout, NetworkError, "ETIMEDOUT"),
    (httpx.ReadTimeout, AttemptTimeoutError, "READ_TIMEOUT"),
    (httpx.WriteTimeout, AttemptTimeoutError, "WRITE_TIMEOUT"),
    (httpx.PoolTimeout, ResourceError, "POOL_TIMEOUT"),
    (httpx.TimeoutException, AttemptTimeoutError, "TIMEOUT"),
    (httpx.ConnectError, NetworkError, "ECONNREFUSED"),
    (httpx.ReadError, NetworkError, "ECONNRESET"),
    (httpx.WriteError, NetworkError, "ECONNRESET"),
    (httpx.RemoteProtocolError, NetworkError, "PROTOCOL_ERROR"),
    (httpx.UnsupportedProtocol, ConfigurationError, "UNSUPPORTED_PROTOCOL"),
    (httpx.InvalidURL, ConfigurationError, "INVALID_URL"),
    (httpx.TransportError, NetworkError, "NETWORK_ERROR"),
)


def error_from_envelope(envelope: dict[str, Any], *, method: str = "") -> TelegramError:
    """The one Bot API envelope parser: ``{"ok": false, ...}`` into the right ``TelegramError``."""
    code = envelope.get("error_code")
    error_code = code if isinstance(code, int) else None
    description = str(envelope.get("description") or "no description")
    raw_params = envelope.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    where = f"Telegram {method}" if method else "Telegram"
    message = redact(f"{where} failed: {error_code} {description}")
    kwargs: dict[str, Any] = {"error_code": error_code, "description": redact(description)}
    if error_code == 429:
        raw = params.get("retry_after")
        retry_after = float(raw) if isinstance(raw, (int, float)) and raw >= 0 else 1.0
        return TelegramRateLimited(message, retry_after=retry_after, **kwargs)
    if error_code == 401:
        return TelegramUnauthorized(message + " (check TELEGRAM_BOT_TOKEN)", **kwargs)
    if error_code == 403:
        return TelegramForbidden(message + " (the user must start or unblock the bot)", **kwargs)
    if error_code == 409:
        return TelegramConflict(message, **kwargs)
    migrate = params.get("migrate_to_chat_id")
    if error_code == 400 and isinstance(migrate, int) and not isinstance(migrate, bool):
        return TelegramChatMigrated(message, migrate_to_chat_id=migrate, **kwargs)
    if error_code is not None and 400 <= error_code < 500:
        return TelegramBadRequest(message, **kwargs)
    if error_code is not None and error_code >= 500:
        return TelegramServerError(message, **kwargs)
    return TelegramError(message, retryable=True, **kwargs)


class _TooLarge(Exception):
    """A response body past ``max_body_bytes``."""


class TelegramTransport:
    """An async Bot API client. ``rebuild()`` replaces the HTTP client (recovery "restart")."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
        max_server_wait: float = DEFAULT_MAX_SERVER_WAIT,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        call_margin: float = CALL_MARGIN,
        long_poll_margin: float = LONG_POLL_MARGIN,
    ) -> None:
        if not token:
            raise ConfigurationError("TELEGRAM_BOT_TOKEN is empty", code="MISSING_TOKEN")
        self._token = token
        _TOKENS.add(token)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._http_transport = http_transport
        self.max_server_wait = max_server_wait
        self.max_body_bytes = max_body_bytes
        self.call_margin = call_margin
        self.long_poll_margin = long_poll_margin
        #: Server-dictated waits that were longer than ``max_server_wait`` and were capped.
        self._cap_log = ThrottledLog(log)
        self._client = self._new_client()
        self._closed = False
        #: Increments on every ``rebuild()``.
        self.generation = 0
        #: Groups that became supergroups: old chat id -> new chat id (learned from 400s).
        self.chat_migrations: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"TelegramTransport(base_url={self.base_url!r}, generation={self.generation})"

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            transport=self._http_transport,
            follow_redirects=False,
        )

    # -- API methods --------------------------------------------------------------------------
    async def send_message(
        self,
        chat_id: int,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = "HTML",
    ) -> int:
        """Send one message; returns its ``message_id``.

        A "group upgraded to a supergroup" 400 (``migrate_to_chat_id``) is retried once with
        the new id, which is remembered in ``chat_migrations`` for later sends.
        """
        payload: dict[str, Any] = {"text": text}
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        if reply_markup is not None:
            payload["reply_markup"] = reply_markup
        target = self.chat_migrations.get(chat_id, chat_id)
        try:
            result = await self._call("sendMessage", {"chat_id": target, **payload})
        except TelegramChatMigrated as exc:
            new_id = exc.migrate_to_chat_id
            if new_id == target:
                raise
            log.warning("Telegram chat %s migrated to %s; retrying once", target, new_id)
            self.chat_migrations[chat_id] = new_id
            result = await self._call("sendMessage", {"chat_id": new_id, **payload})
        message_id = result.get("message_id") if isinstance(result, dict) else None
        if not isinstance(message_id, int):
            raise TelegramError("Telegram sendMessage returned no message_id", retryable=False)
        return message_id

    async def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = "HTML",
    ) -> None:
        """Replace a sent message's text; without ``reply_markup`` its inline keyboard is removed."""
        payload: dict[str, Any] = {
            "chat_id": self.chat_migrations.get(chat_id, chat_id),
            "message_id": message_id,
            "text": text,
        }
        if parse_mode is not None:
            payload["parse_mode"] = parse_mode
        if reply_markup is not None:
            payload["reply_markup"] = reply_markup
        await self._call("editMessageText", payload)

    async def get_me(self) -> dict[str, Any]:
        result = await self._call("getMe", {})
        if not isinstance(result, dict):
            raise TelegramError("Telegram getMe returned no user", retryable=True)
        return result

    async def send_chat_action(self, chat_id: int, action: str = "typing") -> None:
        """Show ``action`` in the chat for a few seconds: the cheapest call that proves the bot may
        write to ``chat_id`` (403 when the person never pressed Start or blocked the bot)."""
        await self._call("sendChatAction", {"chat_id": chat_id, "action": action})

    async def get_updates(
        self,
        offset: int | None,
        *,
        timeout: int = 25,  # noqa: ASYNC109 (getUpdates' long-poll parameter, sent to Telegram)
        limit: int = 100,
        allowed_updates: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Long-poll for updates; the HTTP read timeout is ``timeout + 10`` seconds."""
        params: dict[str, Any] = {"timeout": timeout, "limit": limit}
        if offset is not None:
            params["offset"] = offset
        if allowed_updates is not None:
            params["allowed_updates"] = allowed_updates
        http_timeout = httpx.Timeout(timeout + self.long_poll_margin, connect=self.connect_timeout)
        result = await self._call("getUpdates", params, http_timeout=http_timeout)
        if not isinstance(result, list):
            raise TelegramError("Telegram getUpdates returned no list", retryable=True)
        return [u for u in result if isinstance(u, dict)]

    async def answer_callback_query(self, callback_query_id: str, text: str | None = None) -> None:
        params: dict[str, Any] = {"callback_query_id": callback_query_id}
        if text is not None:
            params["text"] = text
        await self._call("answerCallbackQuery", params)

    # -- lifecycle ----------------------------------------------------------------------------
    async def rebuild(self) -> None:
        """Replace the HTTP client (drops pooled connections); in-flight calls on the old one fail."""
        old, self._client = self._client, self._new_client()
        self._closed = False
        self.generation += 1
        log.info("Telegram HTTP client rebuilt (generation %d)", self.generation)
        await old.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._client.aclose()

    async def __aenter__(self) -> TelegramTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing -----------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, self._token)

    async def _call(self, method: str, params: dict[str, Any], *, http_timeout: httpx.Timeout | None = None) -> Any:
        """POST ``params`` as JSON to ``method``; return ``result`` or raise one of our errors."""
        if self._closed:
            raise ResourceError(f"Telegram {method}: transport is closed", code="TRANSPORT_CLOSED")
        url = f"{self.base_url}/bot{self._token}/{method}"
        error: BaseResilienceError | None = None
        answer: tuple[int, bytes] | None = None
        read_s = self.timeout if http_timeout is None or http_timeout.read is None else http_timeout.read
        total_s = read_s + self.connect_timeout + self.call_margin
        with anyio.move_on_after(total_s) as scope:
            try:
                answer = await self._fetch(url, params, http_timeout)
            except _TooLarge:
                error = ResourceError(
                    f"Telegram {method}: the response is larger than {self.max_body_bytes} bytes; refused",
                    code="BODY_TOO_LARGE",
                )
            except httpx.HTTPError as exc:
                error = self._map_httpx(method, exc)
            except RuntimeError as exc:  # "client has been closed" during a rebuild race
                error = NetworkError(f"Telegram {method}: {self._redact(str(exc))}", code="CLIENT_CLOSED")
        if scope.cancelled_caught:
            error = AttemptTimeoutError(
                f"Telegram {method}: no complete answer within {total_s:g}s (a slow or stalled server)",
                code="TOTAL_TIMEOUT",
            )
        # Raised outside the except block, so no httpx exception is chained (it holds the URL).
        if error is None:
            assert answer is not None
            try:
                return self._result(method, *answer)
            except BaseResilienceError as exc:
                error = exc
        error.context.operation = method
        error.context.component = "telegram"
        raise error

    async def _fetch(self, url: str, params: dict[str, Any], http_timeout: httpx.Timeout | None) -> tuple[int, bytes]:
        """(status, body), reading at most ``max_body_bytes`` (``_TooLarge`` past it)."""
        extra: dict[str, Any] = {} if http_timeout is None else {"timeout": http_timeout}
        async with self._client.stream("POST", url, json=params, **extra) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _TooLarge
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        # Close the stream and let the iteration end on its own: leaving the
                        # loop here would leave httpcore's generators suspended (unclosed).
                        await response.aclose()
                        continue
                    chunks.append(chunk)
            except httpx.HTTPError:  # the stream we closed ends with a read error: expected
                if size <= self.max_body_bytes:
                    raise
            if size > self.max_body_bytes:
                raise _TooLarge
            return response.status_code, b"".join(chunks)

    def _map_httpx(self, method: str, exc: httpx.HTTPError) -> BaseResilienceError:
        cls, code = next(((c, k) for h, c, k in _HTTPX_ERRORS if isinstance(exc, h)), (NetworkError, "NETWORK_ERROR"))
        detail = self._redact(str(exc)) or "no detail"
        return cls(f"Telegram {method}: {type(exc).__name__}: {detail}", code=code)

    def _cap_wait(self, method: str, error: TelegramRateLimited) -> None:
        asked = error.retry_after
        if asked is None or asked <= self.max_server_wait:
            return
        error.retry_after = self.max_server_wait
        self._cap_log.note(
            "cap",
            logging.WARNING,
            "Telegram %s asked to wait %g s (429 retry_after); capped at %g s (CCTG_MAX_SERVER_WAIT)",
            method,
            asked,
            self.max_server_wait,
        )

    def _result(self, method: str, status: int, body: bytes) -> Any:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            envelope = None
        if not isinstance(envelope, dict) or "ok" not in envelope:
            message = f"Telegram {method}: HTTP {status} with a non-Bot-API body"
            if status >= 500:
                raise TelegramServerError(message, error_code=status, description=f"HTTP {status}")
            raise TelegramError(message, error_code=status, description=f"HTTP {status}", retryable=status == 429)
        if envelope.get("ok") is True:
            return envelope.get("result")
        if not isinstance(envelope.get("error_code"), int):
            envelope = {**envelope, "error_code": status}
        error = error_from_envelope(envelope, method=method)
        if isinstance(error, TelegramRateLimited):
            self._cap_wait(method, error)
        raise error
