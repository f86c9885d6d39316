"""TelegramTransport against the real loopback stand-in (and httpx.MockTransport for unit cases).

Every failure must become one of our errors, and the bot token must appear nowhere: not in
the error's text, repr, args, dict, chained exceptions or traceback, and not in any log record.
"""

from __future__ import annotations

import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from cctg_mcp.events.catalogue import Event, escape_html
from cctg_mcp.events.rendering import callback_ref, parse_callback_data, render_event
from cctg_mcp.resilience.errors import (
    AttemptTimeoutError,
    BaseResilienceError,
    ConfigurationError,
    NetworkError,
    ResourceError,
    TelegramBadRequest,
    TelegramChatMigrated,
    TelegramError,
    TelegramForbidden,
    TelegramRateLimited,
    TelegramServerError,
    TelegramUnauthorized,
)
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.transports.telegram import TelegramTransport

pytestmark = pytest.mark.anyio

TOKEN = "987654321:AAHsecretSECRETsecretSECRETsecret_xyz"
TOKEN_PARTS = (TOKEN, TOKEN.split(":")[1])


@pytest.fixture
def standin() -> Iterator[TelegramStandIn]:
    with TelegramStandIn(TOKEN) as s:
        yield s


@pytest.fixture
async def transport(standin: TelegramStandIn) -> AsyncIterator[TelegramTransport]:
    t = TelegramTransport(TOKEN, standin.base_url, timeout=5, connect_timeout=2)
    try:
        yield t
    finally:
        await t.aclose()


def assert_token_free(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    texts = [str(exc), repr(exc), *map(str, exc.args), *map(repr, exc.args)]
    texts.append("".join(traceback.format_exception(exc)))
    if isinstance(exc, BaseResilienceError):
        texts.append(repr(exc.to_dict()))
        texts.append(repr(vars(exc)))
    assert exc.__cause__ is None and exc.__context__ is None  # nothing from httpx is chained
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    for text in texts:
        for secret in TOKEN_PARTS:
            assert secret not in text, text


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture everything, with httpx/httpcore turned up to DEBUG on purpose."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    return caplog


async def test_send_get_me_and_escaped_html_arrives_intact(
    standin: TelegramStandIn, transport: TelegramTransport
) -> None:
    me = await transport.get_me()
    assert me["username"] == "cctg_test_bot" and me["is_bot"] is True
    raw = "<b>&\"' 5 < 6 > 4 &amp;"
    message_id = await transport.send_message(1001, f"<b>Hi</b> {escape_html(raw)}")
    (sent,) = standin.sent
    assert sent.message_id == message_id
    assert sent.plain_text == f"Hi {raw}"
    assert sent.parse_mode == "HTML"


async def test_unescaped_html_is_rejected_by_the_stand_in(transport: TelegramTransport) -> None:
    with pytest.raises(TelegramBadRequest, match="can't parse entities") as info:
        await transport.send_message(1001, "5 < 6 & <b>x")
    assert info.value.error_code == 400
    assert info.value.counts_as_failure is False


async def test_long_description_arrives_in_two_whole_parts(
    standin: TelegramStandIn, transport: TelegramTransport
) -> None:
    description = " ".join(f"<w&{i}>" for i in range(1000))[:7000]
    assert len(description) == 7000
    event = Event(event_id="e-long", type="task_completion", title="Long", description=description, task_id="t")
    parts = render_event(event)
    for part in parts:
        await transport.send_message(1001, part.text, reply_markup=part.reply_markup)
    sent = await standin.await_messages(len(parts), timeout=5)
    assert len(sent) >= 2
    joined = "".join(m.plain_text for m in sent)
    assert "".join(description.split()) in "".join(joined.split())


async def test_approval_keyboard_reaches_telegram_and_round_trips(
    standin: TelegramStandIn, transport: TelegramTransport
) -> None:
    event = Event(
        event_id="7d444840-9dc0-11d1-b245-5ffdce74fad2",
        type="approval_request",
        title="Deploy?",
        description="Ship v2",
        task_id="t",
        data={"options": ["Approve", "Deny", "Later"]},
    )
    (part,) = render_event(event)
    await transport.send_message(1001, part.text, reply_markup=part.reply_markup)
    (sent,) = standin.sent
    assert sent.reply_markup is not None
    buttons = [b for row in sent.reply_markup["inline_keyboard"] for b in row]
    verbs = [parse_callback_data(b["callback_data"]) for b in buttons]
    ref = callback_ref(event.event_id)
    assert ref == event.event_id
    assert verbs == [("approve", ref, 0), ("deny", ref, 1), ("opt", ref, 2)]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    # The button press comes back through getUpdates and is answered.
    standin.push_callback(1001, buttons[0]["callback_data"])
    (update,) = await transport.get_updates(None, timeout=0)
    query = update["callback_query"]
    assert parse_callback_data(query["data"]) == ("approve", event.event_id, 0)
    assert query["message"]["message_id"] == sent.message_id
    await transport.answer_callback_query(query["id"], "Approved")
    assert standin.answered_callbacks[-1]["text"] == "Approved"


async def test_get_updates_offsets(standin: TelegramStandIn, transport: TelegramTransport) -> None:
    for text in ("a", "b", "c"):
        standin.push_text(1001, text)
    first = await transport.get_updates(None, timeout=0)
    assert [u["message"]["text"] for u in first] == ["a", "b", "c"]
    confirmed = await transport.get_updates(first[1]["update_id"] + 1, timeout=0)
    assert [u["message"]["text"] for u in confirmed] == ["c"]
    assert await transport.get_updates(first[2]["update_id"] + 1, timeout=0) == []
    with anyio.fail_after(10):  # a long poll returns as soon as an update arrives
        async with anyio.create_task_group() as tg:
            got: list[Any] = []

            async def poll() -> None:
                got.extend(await transport.get_updates(first[2]["update_id"] + 1, timeout=5))

            tg.start_soon(poll)
            standin.push_text(1001, "d")
    assert [u["message"]["text"] for u in got] == ["d"]
    assert all(r.params["timeout"] in (0, 5) for r in standin.requests)


FAULTS: list[tuple[FaultMode, dict[str, Any], type[BaseResilienceError], int | None]] = [
    (FaultMode.RATE_LIMIT, {"retry_after": 7}, TelegramRateLimited, 429),
    (FaultMode.UNAUTHORIZED, {}, TelegramUnauthorized, 401),
    (FaultMode.FORBIDDEN, {}, TelegramForbidden, 403),
    (FaultMode.BAD_REQUEST, {}, TelegramBadRequest, 400),
    (FaultMode.SERVER_ERROR, {"status": 500}, TelegramServerError, 500),
    (FaultMode.SERVER_ERROR, {"status": 502}, TelegramServerError, 502),
    (FaultMode.RESET, {}, NetworkError, None),
]


@pytest.mark.parametrize(("mode", "kwargs", "error", "code"), FAULTS, ids=lambda v: str(getattr(v, "value", v)))
async def test_fault_maps_to_our_error_without_the_token(
    standin: TelegramStandIn,
    transport: TelegramTransport,
    debug_logs: pytest.LogCaptureFixture,
    mode: FaultMode,
    kwargs: dict[str, Any],
    error: type[BaseResilienceError],
    code: int | None,
) -> None:
    standin.set_fault(mode, **kwargs)
    with pytest.raises(error) as info:
        await transport.send_message(1001, "hello")
    exc = info.value
    assert type(exc) is error
    if code is not None:
        assert isinstance(exc, TelegramError) and exc.error_code == code
    if mode is FaultMode.RATE_LIMIT:
        assert exc.retry_after == 7
        assert exc.counts_as_failure is False
    assert_token_free(exc, debug_logs)
    standin.clear_fault()
    assert await transport.send_message(1001, "healed") > 0


async def test_hang_becomes_attempt_timeout(standin: TelegramStandIn, debug_logs: pytest.LogCaptureFixture) -> None:
    standin.set_fault(FaultMode.HANG)
    async with TelegramTransport(TOKEN, standin.base_url, timeout=0.2, connect_timeout=1) as t:
        with anyio.fail_after(10), pytest.raises(AttemptTimeoutError) as info:
            await t.get_me()
    assert info.value.code == "READ_TIMEOUT"
    assert_token_free(info.value, debug_logs)


async def test_wrong_port_is_a_network_error(debug_logs: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with TelegramTransport(TOKEN, f"http://127.0.0.1:{port}", connect_timeout=2) as t:
        with anyio.fail_after(10), pytest.raises(NetworkError) as info:
            await t.send_message(1, "x")
    assert info.value.code == "ECONNREFUSED"
    assert_token_free(info.value, debug_logs)


async def test_wrong_token_is_unauthorized(standin: TelegramStandIn, debug_logs: pytest.LogCaptureFixture) -> None:
    wrong = "111111111:AAHwrongWRONGwrongWRONGwrong_0123456"
    async with TelegramTransport(wrong, standin.base_url) as t:
        with pytest.raises(TelegramUnauthorized) as info:
            await t.get_me()
    assert "TELEGRAM_BOT_TOKEN" in str(info.value)
    assert wrong not in str(info.value) and wrong not in debug_logs.text
    assert_token_free(info.value, debug_logs)


async def test_rebuild_replaces_the_client(standin: TelegramStandIn, transport: TelegramTransport) -> None:
    assert transport.generation == 0
    await transport.send_message(1, "before")
    await transport.rebuild()
    assert transport.generation == 1
    await transport.send_message(1, "after")
    assert [m.text for m in standin.sent] == ["before", "after"]
    assert TOKEN not in repr(transport)
    await transport.aclose()
    with pytest.raises(ResourceError):
        await transport.get_me()


# -- unit level: httpx.MockTransport ---------------------------------------------------------


def mock(handler: Any) -> TelegramTransport:
    return TelegramTransport(TOKEN, "https://api.test", http_transport=httpx.MockTransport(handler))


async def test_migrated_group_is_retried_once_with_the_new_id() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        chat = json.loads(request.content)["chat_id"]
        seen.append(chat)
        if chat == -100:
            return httpx.Response(
                400,
                json={
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: group chat was upgraded to a supergroup chat",
                    "parameters": {"migrate_to_chat_id": -1001234567890123},
                },
            )
        return httpx.Response(200, json={"ok": True, "result": {"message_id": 5}})

    async with mock(handler) as t:
        assert await t.send_message(-100, "x") == 5
        assert await t.send_message(-100, "y") == 5
    assert seen == [-100, -1001234567890123, -1001234567890123]
    assert t.chat_migrations == {-100: -1001234567890123}


async def test_migration_error_exposes_the_new_id() -> None:
    body = {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: upgraded",
        "parameters": {"migrate_to_chat_id": -200},
    }
    async with mock(lambda r: httpx.Response(400, json=body)) as t:
        with pytest.raises(TelegramBadRequest) as info:
            await t.send_message(-100, "x")  # retried once with -200, which fails the same way
    assert isinstance(info.value, TelegramChatMigrated) and info.value.migrate_to_chat_id == -200


@pytest.mark.parametrize(
    ("response", "error", "code"),
    [
        (httpx.Response(502, text="<html>Bad Gateway</html>"), TelegramServerError, 502),
        (httpx.Response(404, text="not json"), TelegramError, 404),
        (httpx.Response(200, json=["not", "an", "envelope"]), TelegramError, 200),
        (httpx.Response(503, json={"ok": False, "description": "no code"}), TelegramServerError, 503),
    ],
)
async def test_unexpected_bodies(response: httpx.Response, error: type[TelegramError], code: int) -> None:
    async with mock(lambda r: response) as t:
        with pytest.raises(error) as info:
            await t.get_me()
    assert type(info.value) is error and info.value.error_code == code


@pytest.mark.parametrize(
    ("exc", "error", "code"),
    [
        (httpx.ConnectTimeout, NetworkError, "ETIMEDOUT"),
        (httpx.ReadTimeout, AttemptTimeoutError, "READ_TIMEOUT"),
        (httpx.WriteTimeout, AttemptTimeoutError, "WRITE_TIMEOUT"),
        (httpx.PoolTimeout, ResourceError, "POOL_TIMEOUT"),
        (httpx.ConnectError, NetworkError, "ECONNREFUSED"),
        (httpx.ReadError, NetworkError, "ECONNRESET"),
        (httpx.RemoteProtocolError, NetworkError, "PROTOCOL_ERROR"),
        (httpx.ProxyError, NetworkError, "NETWORK_ERROR"),
        (httpx.UnsupportedProtocol, ConfigurationError, "UNSUPPORTED_PROTOCOL"),
    ],
)
async def test_httpx_errors_map_to_ours(
    exc: type[httpx.TransportError],
    error: type[BaseResilienceError],
    code: str,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(f"failed for {request.url}", request=request)  # the URL holds the token

    async with mock(handler) as t:
        with pytest.raises(error) as info:
            await t.send_message(1, "x")
    assert type(info.value) is error and info.value.code == code
    assert "[REDACTED]" in str(info.value)
    assert_token_free(info.value, debug_logs)


async def test_get_updates_read_timeout_exceeds_the_long_poll() -> None:
    timeouts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx.Response(200, json={"ok": True, "result": []})

    async with mock(handler) as t:
        assert await t.get_updates(10, timeout=25) == []
        await t.answer_callback_query("q")
    assert timeouts[0]["read"] == 35 and timeouts[1]["read"] == 10
