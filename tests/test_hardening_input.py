"""Bad input, property-based: every send tool's arguments through a real in-memory mcp.Client.

Each example corrupts at most one argument (wrong type, missing, huge, blank, lone UTF-16
surrogate, path-like id, too deeply nested ``data``...) and keeps the others valid, so the
oracle is exact: a corrupted argument is a tool error that names it, stores nothing and sends
nothing; an example with nothing corrupted (control characters, HTML specials, emoji and
unknown extra fields included) is delivered, intact, to every allowed user, and the stand-in's
Telegram HTML parser accepted it (it answers 400 to malformed HTML). The server keeps
answering throughout.

Hypothesis runs in a worker thread and calls the client on the event loop through
``anyio.from_thread``, so one client (one server) serves all examples of a test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from helpers import USERS, connected, make_settings, text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import CallToolResult

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.errors import ValidationError
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
MISSING = object()
_SERIAL = itertools.count()
_ROWS: dict[int, int] = {}  # outbox rows per client, to check that a refusal stored nothing

# ---- strategies ---------------------------------------------------------------------------

SURROGATE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
CONTROL = st.sampled_from([*(chr(c) for c in range(0, 32)), "\x7f", "\u0085", "\u200b", "\u2028", "\ufeff"])
HTMLISH = st.sampled_from(["<", ">", "&", "&amp;", "<b>", "</b>", "<script>", "&#x41;", "<a href='x'>", "\"'", "&lt"])
EMOJI = st.sampled_from(["🚀", "\u2139\ufe0f", "中文", "é", "\u0301", "\U0001d54f"])


def good_text(max_size: int) -> st.SearchStrategy[str]:
    """Non-blank text with control characters, HTML specials and emoji mixed in."""
    piece = st.one_of(st.text(max_size=12), CONTROL, HTMLISH, EMOJI)
    body = st.lists(piece, max_size=8).map("".join)
    return st.tuples(st.text(alphabet="abcXYZ019", min_size=1, max_size=5), body).map(
        lambda t: (t[0] + t[1])[:max_size]
    )


def bad_text(limit: int) -> st.SearchStrategy[Any]:
    """Values a text field must refuse: wrong types, blank, too long, lone surrogates."""
    return st.one_of(
        st.integers(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.lists(st.text(max_size=3), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.sampled_from(["", " ", "\n\t ", "\u3000", "\x1c", "\x1f\x1e"]),  # the last two: blank to Python only
        st.integers(limit + 1, limit + 300).map(lambda n: "x" * n),
        st.tuples(st.text(alphabet="ab", max_size=5), SURROGATE, st.text(alphabet="cd", max_size=5)).map("".join),
    )


ID_OK = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCZ0123456789-_", min_size=1, max_size=64)
ID_BAD = st.one_of(
    st.sampled_from(["../etc/passwd", "..", "a/b", "a\\b", "/abs", "C:\\x", "a b", "a\x00b", "%2e%2e", "ä", "x" * 65]),
    st.integers(),
    st.sampled_from(["", " "]),
)


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**9), 10**9),
        st.floats(allow_nan=False, allow_infinity=False),
        good_text(40),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
        max_leaves=max_leaves,
    )


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


DATA_OK = st.one_of(st.none(), st.dictionaries(st.text(max_size=10), json_values(), max_size=4))
DATA_BAD = st.one_of(
    st.integers(33, 200).map(nested),  # deeper cannot even be serialized by the client
    st.tuples(st.text(max_size=4), SURROGATE).map(lambda t: {"k": [t[0] + t[1]]}),
    st.just({"big": "y" * 20_000}),
    st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)),
)
FLOAT_BAD = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, "abc", "", None]), st.lists(st.integers()))
EXTRA = st.dictionaries(
    st.sampled_from(["chat_id", "parse_mode", "token", "zzz", "__proto__", "recipients"]),
    st.one_of(st.integers(), st.text(max_size=5)),
    max_size=2,
)

# tool -> field -> (valid strategy or MISSING-able, invalid strategy, required?)
FieldSpec = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any], bool]
TOOLS: dict[str, dict[str, FieldSpec]] = {
    "send_telegram_message": {
        "message": (good_text(3000), bad_text(20_000), True),
        "source": (ID_OK, ID_BAD, False),
    },
    "send_telegram_event": {
        "type": (
            st.sampled_from(["custom_event", "build_failed", "info_notification"]),
            st.one_of(st.sampled_from(["nope", "", "BUILD_FAILED", "../x"]), st.integers()),
            True,
        ),
        "title": (good_text(200), bad_text(200), True),
        "description": (good_text(2000), bad_text(2000), True),
        "task_id": (ID_OK, ID_BAD, False),
        "source": (ID_OK, ID_BAD, False),
        "data": (DATA_OK, DATA_BAD, False),
    },
    "send_task_completion": {
        "task_id": (ID_OK, ID_BAD, True),
        "title": (good_text(200), bad_text(200), True),
        "results": (good_text(5000), bad_text(5000).filter(lambda v: not isinstance(v, str) or v.strip()), False),
        "files_affected": (
            st.lists(good_text(100), max_size=5),
            st.one_of(
                st.lists(st.just("f"), min_size=51, max_size=55),
                st.just(["x" * 501]),
                st.just("not-a-list"),
                st.lists(st.integers(), min_size=1, max_size=2),
            ),
            False,
        ),
        "duration_ms": (
            st.integers(0, 86_400_000),
            st.one_of(st.integers(max_value=-1), st.integers(min_value=86_400_001), st.sampled_from(["abc", 1.5, [1]])),
            False,
        ),
    },
    "send_performance_alert": {
        "title": (good_text(200), bad_text(200), True),
        "current_value": (st.floats(allow_nan=False, allow_infinity=False), FLOAT_BAD, True),
        "threshold": (st.floats(allow_nan=False, allow_infinity=False), FLOAT_BAD, True),
        "severity": (
            st.sampled_from(["low", "medium", "high", "critical"]),
            st.one_of(st.sampled_from(["urgent", "", "HIGH"]), st.integers()),
            False,
        ),
    },
    "send_approval_request": {
        "title": (good_text(200), bad_text(200), True),
        "description": (good_text(2000), bad_text(2000), True),
        "options": (
            st.lists(good_text(30), min_size=1, max_size=4, unique=True),
            st.one_of(
                st.just([]),
                st.lists(st.just("o"), min_size=11, max_size=12),
                st.just(["x" * 101]),
                st.just([""]),
                st.just("Approve"),
                st.just([1, 2]),
            ),
            False,
        ),
    },
}


@st.composite
def tool_call(draw: st.DrawFn, tool: str) -> tuple[dict[str, Any], str | None]:
    """(arguments, the corrupted field or None). A corrupted required field may be missing."""
    fields = TOOLS[tool]
    broken = draw(st.sampled_from([None, None, *fields]))
    args: dict[str, Any] = {}
    for name, (good, bad, required) in fields.items():
        if name == broken:
            value = draw(bad if not required else st.one_of(bad, st.just(MISSING)))
        elif required or draw(st.booleans()):
            value = draw(good)
        else:
            continue
        if value is not MISSING:
            args[name] = value
    args.update({k: v for k, v in draw(EXTRA).items() if k not in fields})
    return args, broken


def _outbox_total(client: Client) -> int:
    status = anyio.from_thread.run(client.call_tool, "get_resilience_status", {})
    assert status.structured_content is not None
    box = status.structured_content["outbox"]
    return int(box["pending"] + box["in_flight"] + box["delivered"] + box["dead"])


def _expected_texts(tool: str, args: dict[str, Any]) -> list[str]:
    keys = {"send_telegram_message": ["message"], "send_approval_request": ["title", "description"]}
    return [str(args[k]).strip() for k in keys.get(tool, ["title", "description"]) if k in args]


def check_call(client: Client, standin: TelegramStandIn, tool: str, args: dict[str, Any], broken: str | None) -> None:
    if broken != "task_id" and "task_id" in args:  # a fresh task each time (replays too), not a `duplicate`
        args = {**args, "task_id": f"{args['task_id'][:50]}-{next(_SERIAL)}"}
    before_rows, before_sent = _ROWS.get(id(client), 0), len(standin.sent)
    result: CallToolResult = anyio.from_thread.run(client.call_tool, tool, args)
    text = text_of(result)
    if broken is not None:
        assert result.is_error, f"{tool} accepted a bad {broken}={args.get(broken, '<missing>')!r}: {text[:300]}"
        assert broken in text, f"the error does not name {broken!r}: {text[:500]}"
        assert _outbox_total(client) == before_rows, "a rejected call stored something"
        assert len(standin.sent) == before_sent, "a rejected call sent something"
        return
    assert not result.is_error, f"{tool} refused valid arguments {args!r}: {text[:500]}"
    _ROWS[id(client)] = before_rows + len(USERS)
    assert result.structured_content is not None
    assert result.structured_content["status"] == "delivered", result.structured_content
    sent = standin.sent[before_sent:]
    assert sorted({m.chat_id for m in sent}) == sorted(USERS)  # only the allowed users, each of them
    for user in USERS:
        received = "".join(m.plain_text for m in sent if m.chat_id == user)
        for expected in _expected_texts(tool, args):
            assert expected in received, f"{expected!r} did not arrive intact: {received!r}"


async def _run(standin: TelegramStandIn, tmp_path: Path, body: Callable[[Client], None]) -> None:
    async with connected(make_settings(standin, tmp_path, CCTG_TOOL_RATE_LIMIT="0")) as client:
        _ROWS[id(client)] = 0
        with anyio.fail_after(240):
            await anyio.to_thread.run_sync(body, client)
        # the server still answers
        assert (await client.call_tool("list_event_types", {"category": "git"})).structured_content


@pytest.mark.parametrize("tool", sorted(TOOLS))
async def test_every_send_tool_refuses_bad_arguments_by_name_and_delivers_good_ones_intact(
    standin: TelegramStandIn, tmp_path: Path, tool: str, anyio_backend: str
) -> None:
    def body(client: Client) -> None:
        @EXAMPLES
        @given(tool_call(tool))
        def check(case: tuple[dict[str, Any], str | None]) -> None:
            check_call(client, standin, tool, *case)

        check()

    await _run(standin, tmp_path, body)


async def test_unknown_fields_are_ignored_and_cannot_redirect_or_reformat(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """Pinned SDK behaviour: unknown arguments are dropped before the tool runs (not an error).
    So a ``chat_id`` or ``parse_mode`` smuggled into the call changes nothing."""
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await client.call_tool(
            "send_telegram_message",
            {"message": "<b>not bold</b>", "chat_id": 999, "parse_mode": "MarkdownV2", "recipients": [999]},
        )
    assert not result.is_error, text_of(result)
    assert sorted(m.chat_id for m in standin.sent) == sorted(USERS)
    assert all("&lt;b&gt;not bold&lt;/b&gt;" in m.text and m.parse_mode == "HTML" for m in standin.sent)


@pytest.mark.parametrize("depth", [33, 200])
async def test_deeply_nested_data_is_refused_naming_data_and_nothing_is_stored(
    standin: TelegramStandIn, tmp_path: Path, depth: int
) -> None:
    """Regression: data nested ~250 deep was stored and delivered, then could not be read back
    from the outbox (JSON recursion limit), so the tool failed opaquely after sending."""
    args = {"type": "custom_event", "title": "t", "description": "d", "data": nested(depth)}
    async with connected(make_settings(standin, tmp_path)) as client:
        result = await client.call_tool("send_telegram_event", args)
        status = (await client.call_tool("get_resilience_status", {})).structured_content
    assert result.is_error and "data" in text_of(result), text_of(result)
    assert status is not None and status["outbox"]["pending"] + status["outbox"]["delivered"] == 0
    assert standin.sent == []


@pytest.mark.parametrize(
    "data",
    [{"\ud800": 1}, {"v": [math.nan]}, {"v": math.inf}, nested(100_000)],
    ids=["surrogate-key", "nan", "inf", "nested-100000"],
)
def test_data_the_official_client_cannot_even_send_is_refused_by_the_service(data: dict[str, Any]) -> None:
    """A raw JSON-RPC client can send what mcp.Client cannot serialize (surrogate keys; NaN
    becomes null there): the service refuses it, naming ``data``, without recursion."""
    service = NotificationService(make_settings(None, Path("/nonexistent")), None, None)
    with pytest.raises(ValidationError, match="data"):
        service.build_event(type="custom_event", title="t", description="d", data=data)
