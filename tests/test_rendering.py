"""Rendering events to Telegram HTML parts and approval keyboards (pure functions)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cctg_mcp.events.catalogue import EVENT_TYPES, Event
from cctg_mcp.events.rendering import (
    callback_ref,
    parse_callback_data,
    render_event,
    split_text,
    telegram_len,
)
from cctg_mcp.testing import parse_telegram_html

# Text that stresses escaping and splitting: markup characters, astral emoji, line breaks.
TEXT = st.lists(
    st.one_of(
        st.sampled_from(list("<>&\"' \n\n\n;#abc")),
        st.sampled_from(["😀", "é", "\u2139\ufe0f", "&amp;", "</b>", "word "]),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=1500,
).map("".join)


def event(**kw: Any) -> Event:
    base: dict[str, Any] = {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "type": "info_notification",
        "title": "Title",
        "description": "Description",
        "task_id": "task-1",
    }
    return Event(**{**base, **kw})


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, limit=st.integers(min_value=5, max_value=400))
def test_split_text_loses_nothing_and_respects_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(p for p in parts)
    assert all(telegram_len(p) <= limit for p in parts)
    # Every part parses as Telegram HTML (no cut inside an escape), and together they are the text.
    assert "".join(parse_telegram_html(p) for p in parts) == text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=TEXT.filter(lambda t: t.strip() != ""),
    description=st.one_of(TEXT, st.text(alphabet="<&> ab\n", min_size=4000, max_size=12000)),
    kind=st.sampled_from(EVENT_TYPES),
    results=st.one_of(st.none(), TEXT),
)
def test_render_event_parts_are_valid_and_whole(title: str, description: str, kind: str, results: str | None) -> None:
    data: dict[str, Any] = {"results": results} if results else {}
    if kind == "approval_request":
        data["options"] = ["Approve", "Deny", "Later"]
    parts = render_event(event(type=kind, title=title, description=description, data=data))
    assert parts
    plain = []
    for part in parts:
        assert telegram_len(part.text) <= 4096
        text = parse_telegram_html(part.text)  # raises on a broken tag or escape
        assert text.strip()
        plain.append(text)
    joined = squash("".join(plain))
    assert squash(description) in joined
    assert squash(title) in joined
    if results:
        assert squash(results) in joined
    assert all(p.reply_markup is None for p in parts[:-1])
    assert (parts[-1].reply_markup is not None) == (kind == "approval_request")


def test_a_7000_character_description_is_two_parts() -> None:
    words = " ".join(f"word{i:04d}" for i in range(778))[:7000]
    parts = render_event(event(description=words))
    assert len(parts) == 2
    first, second = (parse_telegram_html(p.text) for p in parts)
    assert first.startswith("\u2139\ufe0f Title\n\n")
    assert squash(words) in squash(first + second)
    assert "0f8fad5b" in second and "0f8fad5b" not in first  # the footer is on the last part only


def test_splits_prefer_paragraph_boundaries() -> None:
    paragraphs = ["p" * 1500 for _ in range(6)]
    parts = split_text("\n\n".join(paragraphs))
    assert len(parts) == 3
    assert all(p.endswith("\n\n") for p in parts[:-1])


def test_html_is_escaped_everywhere() -> None:
    e = event(
        type="task_failed",
        title="<b>&",
        description='5 < 6 & "x" > y',
        source="<src>",
        data={"error_message": "<script>", "files_affected": ["a&b.py", "<c>"], "duration_ms": 1500},
    )
    (part,) = render_event(e)
    assert part.text.startswith('❌ <b>&lt;b&gt;&amp;</b>\n\n5 &lt; 6 &amp; "x" &gt; y')
    assert "• Error: &lt;script&gt;" in part.text
    assert "• Files: a&amp;b.py, &lt;c&gt;" in part.text
    assert "• Duration: 1.5 s" in part.text
    assert "<i>&lt;src&gt; · #0f8fad5b</i>" in part.text
    parse_telegram_html(part.text)


@pytest.mark.parametrize(
    ("kind", "emoji"),
    [
        ("task_completion", "✅"),
        ("build_failed", "❌"),
        ("test_failed", "❌"),
        ("performance_alert", "⚠️"),
        ("approval_request", "🔐"),
        ("info_notification", "\u2139\ufe0f"),
        ("git_push", "🌿"),
    ],
)
def test_emoji_by_type(kind: str, emoji: str) -> None:
    assert render_event(event(type=kind))[0].text.startswith(f"{emoji} <b>")


def test_priority_mark_in_footer() -> None:
    assert "🔴 critical" in render_event(event(type="error_occurred", priority="critical"))[0].text
    assert "🟠" not in render_event(event())[0].text


def test_approval_keyboard_callback_data() -> None:
    options = ["Approve", "Deny", "Run the tests first", "Ask me later"]
    e = event(type="approval_request", data={"options": options})
    parts = render_event(e)
    markup = parts[-1].reply_markup
    assert markup is not None
    buttons = [b for row in markup["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == ["✅ Approve", "❌ Deny", "Run the tests first", "Ask me later"]
    ref = callback_ref(e.event_id)
    assert [parse_callback_data(b["callback_data"]) for b in buttons] == [
        ("approve", ref, 0),
        ("deny", ref, 1),
        ("opt", ref, 2),
        ("opt", ref, 3),
    ]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)


def test_approval_defaults_and_unsafe_event_ids() -> None:
    e = event(type="approval_request", event_id="ünïcødé:" + "x" * 200)
    markup = render_event(e)[-1].reply_markup
    assert markup is not None
    buttons = markup["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["✅ Approve", "❌ Deny"]
    ref = callback_ref(e.event_id)
    assert re.fullmatch(r"[0-9a-f]{16}", ref)
    assert parse_callback_data(buttons[1]["callback_data"]) == ("deny", ref, 1)
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)


@given(event_id=st.text(min_size=1, max_size=300), n=st.integers(min_value=1, max_value=100))
def test_callback_data_always_fits(event_id: str, n: int) -> None:
    e = event(type="approval_request", event_id=event_id, data={"options": [f"o{i}" for i in range(n)]})
    markup = render_event(e)[-1].reply_markup
    assert markup is not None
    datas = [b["callback_data"] for row in markup["inline_keyboard"] for b in row]
    assert len(datas) == n
    for i, data in enumerate(datas):
        assert 1 <= len(data.encode()) <= 64
        assert parse_callback_data(data) == ("opt", callback_ref(event_id), i)


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        ("approve_task-42", ("approve", "task-42", 0)),
        ("deny_task_42", ("deny", "task_42", 1)),
        ("ack_t1", ("ack", "t1", 0)),
        ("approve:abc:7", ("approve", "abc", 7)),
        ("details_t1", None),
        ("approve:abc", None),
        ("approve:a b:1", None),
        ("", None),
        ("bridge_fix_request", None),
    ],
)
def test_parse_callback_data(data: str, parsed: tuple[str, str, int] | None) -> None:
    assert parse_callback_data(data) == parsed


def test_ack_button_is_optional() -> None:
    assert render_event(event(type="task_completion"))[-1].reply_markup is None
    markup = render_event(event(type="task_completion"), ack_button=True)[-1].reply_markup
    assert markup is not None
    (button,) = markup["inline_keyboard"][0]
    assert button["text"] == "✅ Acknowledge"
    assert parse_callback_data(button["callback_data"]) == ("ack", callback_ref(event().event_id), 0)
