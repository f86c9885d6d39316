"""The Telegram Bot API stand-in (cctg_mcp.testing): a real loopback HTTP server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from helpers import read_line

from cctg_mcp.testing import DEFAULT_TOKEN, FaultMode, TelegramStandIn, parse_telegram_html

TOKEN = DEFAULT_TOKEN


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def call(client: httpx.Client, s: TelegramStandIn, method: str, **params: Any) -> httpx.Response:
    return client.post(f"{s.base_url}/bot{s.token}/{method}", json=params)


def test_get_me_wrong_token_and_unknown_method(standin: TelegramStandIn, client: httpx.Client) -> None:
    me = call(client, standin, "getMe").json()
    assert me == {
        "ok": True,
        "result": {"id": 123456, "is_bot": True, "first_name": "CCTG Test", "username": "cctg_test_bot"},
    }
    wrong = client.get(f"{standin.base_url}/bot999999:WRONG-TOKEN-xxxxxxxxxxxxxxxxxxxxxxxxxxxxx/getMe")
    assert wrong.status_code == 401
    assert wrong.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    unknown = call(client, standin, "sendSticker")
    assert unknown.status_code == 404 and unknown.json()["error_code"] == 404
    # No request path or param holds a token, right or wrong.
    assert all("TOKEN" not in r.path and r.path.startswith("/bot[REDACTED]/") for r in standin.requests), (
        standin.requests
    )
    assert [r.status for r in standin.requests] == [200, 401, 404]


def test_send_message_accepts_get_form_and_json(standin: TelegramStandIn, client: httpx.Client) -> None:
    base = f"{standin.base_url}/bot{TOKEN}/sendMessage"
    r1 = client.get(base, params={"chat_id": "42", "text": "via query"})
    r2 = client.post(base, data={"chat_id": "42", "text": "via form", "parse_mode": "HTML"})
    markup = {"inline_keyboard": [[{"text": "Yes", "callback_data": "approve:e:0"}]]}
    r3 = client.post(base, json={"chat_id": 43, "text": "via json", "reply_markup": json.dumps(markup)})
    ids = [r.json()["result"]["message_id"] for r in (r1, r2, r3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [m.text for m in standin.messages_for(42)] == ["via query", "via form"]
    assert standin.messages_for(43)[0].reply_markup == markup
    assert r3.json()["result"]["reply_markup"] == markup


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"text": "x"}, "Bad Request: chat_id is empty"),
        ({"chat_id": 1}, "Bad Request: message text is empty"),
        ({"chat_id": 1, "text": "a" * 4097}, "Bad Request: message is too long"),
        ({"chat_id": 1, "text": "<b> </b>", "parse_mode": "HTML"}, "Bad Request: message text is empty"),
        (
            {
                "chat_id": 1,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "t", "callback_data": "é" * 33}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            {"chat_id": 1, "text": "x", "reply_markup": "{not json"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
    ],
)
def test_send_message_validation(
    standin: TelegramStandIn, client: httpx.Client, params: dict[str, Any], description: str
) -> None:
    r = call(client, standin, "sendMessage", **params)
    assert r.status_code == 400
    assert r.json() == {"ok": False, "error_code": 400, "description": description}
    assert standin.sent == []


def test_length_is_counted_after_entity_parsing(standin: TelegramStandIn, client: httpx.Client) -> None:
    # 4096 characters once parsed, 20480 on the wire: accepted, like Telegram.
    assert call(client, standin, "sendMessage", chat_id=1, text="&amp;" * 4096, parse_mode="HTML").is_success
    # Telegram counts UTF-16 code units: 2049 astral emoji are 4098 units.
    assert call(client, standin, "sendMessage", chat_id=1, text="😀" * 2049).status_code == 400
    assert call(client, standin, "sendMessage", chat_id=1, text="😀" * 2048).is_success
    assert standin.sent[0].plain_text == "&" * 4096


@pytest.mark.parametrize(
    "text",
    ["<b>x", "x</b>", "<foo>x</foo>", "a < b", "a & b", "&nbsp;", "<b><i>x</b></i>", "<b x</b>", "&#x;"],
)
def test_html_parser_rejects_what_telegram_rejects(standin: TelegramStandIn, client: httpx.Client, text: str) -> None:
    r = call(client, standin, "sendMessage", chat_id=1, text=text, parse_mode="HTML")
    assert r.status_code == 400
    assert r.json()["description"].startswith("Bad Request: can't parse entities: ")
    # The same text without a parse mode is fine.
    assert call(client, standin, "sendMessage", chat_id=1, text=text).is_success


def test_html_parser_accepts_valid_markup() -> None:
    text = '<b>bold</b> <a href="https://x.test/?a=1&amp;b=2">l</a> &lt;&gt;&amp;&quot;&#60;&#x3C; > "\''
    assert parse_telegram_html(text) == 'bold l <>&"<< > "\''
    assert parse_telegram_html('<pre><code class="language-py">x</code></pre><tg-spoiler>s</tg-spoiler>') == "xs"


def test_fault_count_methods_and_chats(standin: TelegramStandIn, client: httpx.Client) -> None:
    standin.set_fault(FaultMode.SERVER_ERROR, status=502, count=2)
    assert [call(client, standin, "getMe").status_code for _ in range(3)] == [502, 502, 200]
    standin.set_fault(FaultMode.FORBIDDEN, methods={"sendMessage"}, chats={7})
    assert call(client, standin, "getMe").status_code == 200
    blocked = call(client, standin, "sendMessage", chat_id=7, text="x")
    assert blocked.status_code == 403
    assert blocked.json()["description"] == "Forbidden: bot was blocked by the user"
    assert call(client, standin, "sendMessage", chat_id=8, text="x").status_code == 200
    standin.set_fault(FaultMode.RATE_LIMIT, retry_after=9)
    limited = call(client, standin, "getMe").json()
    assert limited["parameters"] == {"retry_after": 9}
    assert limited["description"] == "Too Many Requests: retry after 9"
    standin.clear_fault()
    assert call(client, standin, "getMe").status_code == 200
    assert [m.chat_id for m in standin.sent] == [8]


def test_reset_drops_the_connection(standin: TelegramStandIn, client: httpx.Client) -> None:
    standin.set_fault(FaultMode.RESET, count=1)
    with pytest.raises(httpx.TransportError):
        call(client, standin, "getMe")
    assert call(client, standin, "getMe").status_code == 200
    assert [r.status for r in standin.requests] == [0, 200]


def test_hang_is_released_by_clear_fault_and_by_stop(client: httpx.Client) -> None:
    with TelegramStandIn() as s:
        s.set_fault(FaultMode.HANG, methods={"getMe"})
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(call(client, s, "getMe").status_code))
        worker.start()
        assert s.wait_until(lambda: s.hanging == 1, 5)
        assert results == []
        s.clear_fault()
        worker.join(5)
        assert results == [200]

        s.set_fault(FaultMode.HANG)
        errors: list[BaseException] = []

        def hang() -> None:
            try:
                call(client, s, "getMe")
            except httpx.TransportError as exc:
                errors.append(exc)

        worker = threading.Thread(target=hang)
        worker.start()
        assert s.wait_until(lambda: s.hanging == 1, 5)
    worker.join(5)  # stop() released the hanging request: the client saw the connection drop
    assert not worker.is_alive() and len(errors) == 1


def test_get_updates_offset_semantics(standin: TelegramStandIn, client: httpx.Client) -> None:
    ids = [standin.push_text(5, f"m{i}") for i in range(4)]
    assert ids == [1, 2, 3, 4]

    def updates(**params: Any) -> list[int]:
        return [u["update_id"] for u in call(client, standin, "getUpdates", **params).json()["result"]]

    assert updates() == [1, 2, 3, 4]
    assert updates(limit=2) == [1, 2]
    assert updates(offset=3) == [3, 4]  # 1 and 2 are confirmed and dropped
    assert updates() == [3, 4]
    standin.push_callback(5, "approve:e1:0", message_id=77)
    assert updates(offset=-1) == [5]  # from the end; everything before is forgotten
    assert updates() == [5]
    update = call(client, standin, "getUpdates").json()["result"][0]
    assert update["callback_query"]["data"] == "approve:e1:0"
    assert update["callback_query"]["message"]["message_id"] == 77
    assert update["callback_query"]["from"]["id"] == 5
    assert updates(offset=6, timeout=0) == []


def test_get_updates_long_poll_wakes_on_push(standin: TelegramStandIn, client: httpx.Client) -> None:
    got: list[Any] = []
    worker = threading.Thread(target=lambda: got.append(call(client, standin, "getUpdates", timeout=5).json()))
    worker.start()
    standin.push_text(9, "hello")
    worker.join(5)
    assert got[0]["result"][0]["message"]["text"] == "hello"
    assert call(client, standin, "answerCallbackQuery", callback_query_id="q1", text="ok").json()["result"] is True
    assert standin.answered_callbacks == [{"callback_query_id": "q1", "text": "ok"}]


def _raw_request(s: TelegramStandIn, method: str, content_type: str, length: int, body: bytes) -> bytes:
    """Send headers promising ``length`` body bytes, then ``body``, then end the request stream."""
    port = int(s.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = (
            f"POST /bot{s.token}/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the client gave up: no more body will come
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_shorter_than_content_length_is_never_processed(standin: TelegramStandIn) -> None:
    standin.push_text(9, "pending")
    # Cancelled after the headers: not a getUpdates without offset (which would return updates).
    reply = _raw_request(standin, "getUpdates", "application/json", 40, b"")
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert b"incomplete request body" in reply and b"Connection: close" in reply
    # Cancelled mid-body: the parameters that did arrive are not acted on.
    reply = _raw_request(standin, "sendMessage", "application/x-www-form-urlencoded", 64, b"chat_id=42&text=trunc")
    assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert standin.sent == []
    assert [(r.method, r.status, r.params) for r in standin.requests] == [
        ("getUpdates", 400, {}),
        ("sendMessage", 400, {}),
    ]
    # A complete body on a fresh connection still works.
    reply = _raw_request(standin, "sendMessage", "application/x-www-form-urlencoded", 21, b"chat_id=42&text=whole")
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    assert [m.text for m in standin.sent] == ["whole"]


def test_an_overlapped_get_updates_reader_gets_409_like_telegram(
    standin: TelegramStandIn, client: httpx.Client
) -> None:
    """Two readers of one bot: the newer getUpdates terminates the one still waiting."""
    got: list[httpx.Response] = []
    first = threading.Thread(target=lambda: got.append(call(client, standin, "getUpdates", timeout=10)))
    first.start()
    assert standin.wait_until(lambda: standin.polling == 1, 5)
    with httpx.Client() as other:  # a second connection, as a second process would use
        second = call(other, standin, "getUpdates", timeout=0)
    first.join(5)
    assert second.status_code == 200
    assert got[0].status_code == 409
    assert got[0].json()["description"].startswith("Conflict: terminated by other getUpdates request")
    assert standin.getupdates_conflicts == 1


def test_flood_limits_without_a_burst(client: httpx.Client) -> None:
    now = [100.0]
    with TelegramStandIn(flood_limits=True, per_chat_burst=1, clock=lambda: now[0]) as s:
        codes = [call(client, s, "sendMessage", chat_id=1, text="x").status_code for _ in range(2)]
        assert codes == [200, 429]  # one per second per chat, from the first message on
        now[0] += 0.99
        assert call(client, s, "sendMessage", chat_id=1, text="x").status_code == 429
        now[0] += 0.01
        assert call(client, s, "sendMessage", chat_id=1, text="x").status_code == 200


def test_flood_limits_per_chat_and_global(client: httpx.Client) -> None:
    now = [100.0]
    with TelegramStandIn(flood_limits=True, global_per_second=4, clock=lambda: now[0]) as s:

        def send(chat: int) -> httpx.Response:
            return call(client, s, "sendMessage", chat_id=chat, text="x")

        assert [send(1).status_code for _ in range(3)] == [200, 200, 200]  # the burst
        limited = send(1)
        assert limited.status_code == 429
        assert limited.json()["parameters"] == {"retry_after": 1}
        assert limited.json()["description"] == "Too Many Requests: retry after 1"
        assert send(2).status_code == 200  # another chat has its own bucket
        assert send(3).status_code == 429  # ... but the global bucket (burst 4) is empty
        now[0] += 0.5
        assert send(1).json()["parameters"]["retry_after"] == 1  # ceil(0.5)
        now[0] += 0.5
        assert send(1).status_code == 200
        assert s.rate_limited_count == 3
        assert len(s.sent) == 5


@pytest.mark.anyio
async def test_await_messages_on_both_backends(standin: TelegramStandIn) -> None:
    async with httpx.AsyncClient() as ac:
        url = f"{standin.base_url}/bot{TOKEN}/sendMessage"
        await ac.post(url, json={"chat_id": 1, "text": "one"})
        await ac.post(url, json={"chat_id": 1, "text": "two"})
    with anyio.fail_after(10):
        msgs = await standin.await_messages(2, timeout=5)
    assert [m.text for m in msgs] == ["one", "two"]
    with pytest.raises(TimeoutError, match="expected 3 sent messages"):
        await standin.await_messages(3, timeout=0.05)


def test_runs_as_a_separate_process() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "cctg_mcp.testing", "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            info = json.loads(read_line(proc.stdout))
            assert info["token"] == TOKEN and info["base_url"].startswith("http://127.0.0.1:")
            r = httpx.get(f"{info['base_url']}/bot{info['token']}/getMe", timeout=5)
            assert r.json()["result"]["username"] == "cctg_test_bot"
            proc.stdin.close()  # closing stdin stops it
            assert proc.wait(timeout=10) == 0
            assert proc.stdout.read() == ""  # exactly one line on stdout
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_stops_the_process() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "cctg_mcp.testing", "--ignore-stdin"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert json.loads(read_line(proc.stdout))["base_url"]
            proc.terminate()
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_restart_comes_back_on_the_same_port(client: httpx.Client) -> None:
    s = TelegramStandIn()
    s.start()
    url = s.base_url
    assert call(client, s, "sendMessage", chat_id=1, text="before").is_success
    s.stop()
    with pytest.raises(httpx.ConnectError):  # an outage: nothing listens
        call(client, s, "getMe")
    s.start()
    try:
        assert s.base_url == url
        assert call(client, s, "sendMessage", chat_id=1, text="after").is_success
        assert [m.text for m in s.sent] == ["before", "after"]
    finally:
        s.stop()


def test_edit_message_text_replaces_text_and_keyboard_like_telegram(
    standin: TelegramStandIn, client: httpx.Client
) -> None:
    keyboard = {"inline_keyboard": [[{"text": "Allow", "callback_data": "approve:e1:0"}]]}
    sent = call(
        client, standin, "sendMessage", chat_id=5, text="Run <b>ls</b>?", parse_mode="HTML", reply_markup=keyboard
    )
    mid = sent.json()["result"]["message_id"]
    assert call(client, standin, "editMessageText", chat_id=5, message_id=mid + 100, text="x").json()[
        "description"
    ] == ("Bad Request: message to edit not found")
    same = call(client, standin, "editMessageText", chat_id=5, message_id=mid, text="Run <b>ls</b>?", parse_mode="HTML")
    assert same.status_code == 200  # the keyboard differs (removed), so it is a modification
    again = call(
        client, standin, "editMessageText", chat_id=5, message_id=mid, text="Run <b>ls</b>?", parse_mode="HTML"
    )
    assert again.status_code == 400 and "message is not modified" in again.json()["description"]
    bad = call(client, standin, "editMessageText", chat_id=5, message_id=mid, text="<b>unclosed", parse_mode="HTML")
    assert bad.status_code == 400
    (message,) = standin.messages_for(5)
    assert (message.plain_text, message.reply_markup) == ("Run ls?", None)
    assert [e.message_id for e in standin.edits] == [mid]


def test_scripted_start_reply_and_press_arrive_as_updates(standin: TelegramStandIn, client: httpx.Client) -> None:
    keyboard = {"inline_keyboard": [[{"text": "✅ Allow", "callback_data": "approve:e1:0"}]]}
    call(client, standin, "sendMessage", chat_id=7, text="Allow?", reply_markup=keyboard)
    (message,) = standin.messages_for(7)
    standin.push_start(7, first_name="Ada", username="ada")
    standin.push_text(7, "why?", reply_to=message.message_id)
    standin.press(7, message, "Allow")
    with pytest.raises(ValueError, match="0 buttons match"):
        standin.press(7, message, "Deny")
    updates = call(client, standin, "getUpdates", timeout=0).json()["result"]
    start, reply, press = updates
    assert start["message"]["text"] == "/start" and start["message"]["from"]["first_name"] == "Ada"
    assert reply["message"]["reply_to_message"]["message_id"] == message.message_id
    assert press["callback_query"]["data"] == "approve:e1:0"
    assert press["callback_query"]["message"]["message_id"] == message.message_id
