"""permission_prompt end to end: a real mcp.Client, the real server, poller and outbox, the
Telegram stand-in over HTTP. The person's button presses are scripted in the stand-in.

What Claude Code reads is the tool's text content, parsed as JSON: allow with the input
unchanged, or deny with a message saying why."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import USERS, call_raw, direct_answers, fast_config, make_settings, text_of
from mcp import Client

from cctg_mcp.app import open_service
from cctg_mcp.config import Settings
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.testing import FaultMode, SentMessage, TelegramStandIn

pytestmark = pytest.mark.anyio

ALICE, BOB = USERS
BASH = {"command": "rm -rf build && echo '<b>done</b> & gone'", "description": "clean the build"}


@asynccontextmanager
async def serving(settings: Settings, **config: Any) -> AsyncIterator[tuple[Client, list[NotificationService]]]:
    services: list[NotificationService] = []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        async with open_service(settings, resilience=fast_config(**config), poll_timeout=1) as runtime:
            services.append(runtime.service)
            yield runtime

    async with Client(build_server(opened)) as client:
        yield client, services


async def ask(client: Client, tool_name: str, tool_input: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Call the tool as Claude Code does (bounded: 30 s, above every wait below); the parsed JSON
    of its text content."""
    result = await call_raw(client, "permission_prompt", {"tool_name": tool_name, "input": tool_input, **extra}, 30)
    assert not result.is_error, text_of(result)
    (block,) = result.content
    decision: dict[str, Any] = json.loads(getattr(block, "text", ""))
    return decision


async def asked(standin: TelegramStandIn, n: int) -> list[SentMessage]:
    """The approval messages once ``n`` were sent (one per allowed user and request)."""
    return (await standin.await_messages(n, timeout=10))[:n]


async def edited(standin: TelegramStandIn, n: int) -> list[SentMessage]:
    done = await anyio.to_thread.run_sync(standin.wait_until, lambda: len(standin.edits) >= n, 10)
    assert done, standin.edits
    return list(standin.edits)


async def test_allow_returns_the_input_unchanged_and_the_message_shows_who(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, _):
        decisions: list[dict[str, Any]] = []

        async def claude_code() -> None:
            decisions.append(await ask(client, "Bash", BASH, tool_use_id="toolu_01ABC"))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claude_code)
                alice_copy, bob_copy = sorted(await asked(standin, 2), key=lambda m: m.chat_id)
                assert decisions == []  # waiting for the person
                standin.press(ALICE, alice_copy, "Allow")
        assert decisions == [{"behavior": "allow", "updatedInput": BASH}]
        # The question: tool, command, reason, buttons; the HTML was escaped and Telegram accepted it.
        assert "Allow Bash?" in alice_copy.plain_text
        assert "$ rm -rf build && echo '<b>done</b> & gone'" in alice_copy.plain_text
        assert "Why: clean the build" in alice_copy.plain_text
        assert "&lt;b&gt;done&lt;/b&gt; &amp; gone" in alice_copy.text
        assert bob_copy.chat_id == BOB
        # Both copies now show the decision and who made it, and have no buttons left.
        edits = await edited(standin, 2)
        assert sorted(e.chat_id for e in edits) == [ALICE, BOB]
        for edit in edits:
            assert f"✅ Allowed by @user{ALICE}" in edit.plain_text and edit.reply_markup is None
            assert "$ rm -rf build" in edit.plain_text


async def test_deny_and_a_typed_reply_deny_with_the_reason(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, _):
        decisions: list[dict[str, Any]] = []
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def claude_code() -> None:
                    decisions.append(await ask(client, "Write", {"file_path": "/etc/hosts", "content": "x\ny\n"}))

                tg.start_soon(claude_code)
                copies = await asked(standin, 2)
                standin.press(BOB, next(m for m in copies if m.chat_id == BOB), "Deny")
        assert decisions == [{"behavior": "deny", "message": f"Denied on Telegram by @user{BOB}."}]
        assert "File: /etc/hosts (write 2 lines" in copies[0].plain_text and "+x\n+y" in copies[0].plain_text
        assert all(f"❌ Denied by @user{BOB}" in e.plain_text for e in await edited(standin, 2))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:

                async def claude_code_again() -> None:
                    decisions.append(await ask(client, "WebFetch", {"url": "https://example.com/x", "prompt": "p"}))

                tg.start_soon(claude_code_again)
                alice_copy = next(m for m in (await asked(standin, 4))[2:] if m.chat_id == ALICE)
                assert "url: https://example.com/x" in alice_copy.plain_text
                standin.push_text(ALICE, "not that site, use the docs", reply_to=alice_copy.message_id)
        assert decisions[1] == {
            "behavior": "deny",
            "message": f"Denied on Telegram by @user{ALICE}, who replied: not that site, use the docs",
        }


async def test_no_answer_in_time_denies_and_says_so(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path, CCTG_PERMISSION_TIMEOUT="1")
    async with serving(settings) as (client, _):
        with anyio.fail_after(20):
            decision = await ask(client, "Bash", {"command": "make deploy"})
        assert decision["behavior"] == "deny" and set(decision) == {"behavior", "message"}
        assert "nobody answered on Telegram within 1 seconds" in decision["message"]
        assert "CCTG_PERMISSION_TIMEOUT" in decision["message"]
        edits = await edited(standin, 2)
        assert all("⏱ Denied: no answer within 1 s" in e.plain_text and e.reply_markup is None for e in edits)


async def test_telegram_down_denies_at_once_and_withdraws_the_question(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, services):
        standin.set_fault(FaultMode.SERVER_ERROR, status=502)
        with anyio.fail_after(20):
            first = await ask(client, "Bash", {"command": "ls"})  # trips the breaker (2 failures)
            second = await ask(client, "Bash", {"command": "pwd"})  # the breaker is open now
        for decision in (first, second):
            assert decision["behavior"] == "deny"
            assert decision["message"].startswith("Denied: nobody could be asked on Telegram now (")
            assert "withdrawn" in decision["message"]
        assert "(circuit 'telegram' is open; retry in " in second["message"], second
        outbox = services[-1].outbox
        assert outbox is not None
        counts = await outbox.counts()
        assert (counts.pending, counts.in_flight, counts.dead) == (0, 0, 0)  # nothing left to pop up later
        standin.clear_fault()
        assert standin.sent == []


async def test_a_stale_or_other_requests_button_does_nothing(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with serving(make_settings(standin, tmp_path)) as (client, services):
        results: dict[str, dict[str, Any]] = {}
        first_done = anyio.Event()

        async def claude_code(name: str, command: str) -> None:
            results[name] = await ask(client, "Bash", {"command": command})
            if name == "first":
                first_done.set()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claude_code, "first", "echo one")
                first = next(m for m in await asked(standin, 2) if m.chat_id == ALICE)
                tg.start_soon(claude_code, "second", "echo two")
                second = [m for m in await asked(standin, 4) if m.chat_id == ALICE][1]
                assert "echo two" in second.plain_text
                stale_allow = next(
                    b["callback_data"] for row in (first.reply_markup or {})["inline_keyboard"] for b in row
                )
                standin.press(ALICE, first, "Deny")  # decides the first request only
                await first_done.wait()
                assert results["first"]["behavior"] == "deny"
                # The first request's Allow, pressed late (a cached copy), and again on the second's message:
                standin.push_callback(ALICE, stale_allow, first.message_id)
                standin.push_callback(BOB, stale_allow, second.message_id)
                answers = direct_answers(services[-1])
                while True:  # both stale presses are stored...
                    changed = answers.store.changed()  # taken before the read: a write in between wakes us
                    if (await answers.store.recent())[0] >= 3:
                        break
                    await changed.wait()
                assert "second" not in results  # ...and decide nothing
                standin.press(ALICE, second, "Deny")
        assert results["second"] == {"behavior": "deny", "message": f"Denied on Telegram by @user{ALICE}."}


async def test_auto_allow_and_deny_lists_decide_without_asking(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(
        standin,
        tmp_path,
        CCTG_PERMISSION_AUTO_ALLOW="Read, Grep,Glob,mcp__*",
        CCTG_PERMISSION_DENY="mcp__github__*",
    )
    async with serving(settings) as (client, _):
        with anyio.fail_after(10):
            read = await ask(client, "Read", {"file_path": "/tmp/x"})
            grep = await ask(client, "Grep", {"pattern": "TODO"})
            tool = await ask(client, "mcp__files__list", {})
            github = await ask(client, "mcp__github__delete_repo", {"repo": "x"})
    assert read == {"behavior": "allow", "updatedInput": {"file_path": "/tmp/x"}}
    assert grep == {"behavior": "allow", "updatedInput": {"pattern": "TODO"}}
    assert tool == {"behavior": "allow", "updatedInput": {}}
    assert github["behavior"] == "deny"  # the deny list wins over the allow list
    assert "deny list (CCTG_PERMISSION_DENY: mcp__github__*)" in github["message"]
    assert standin.sent == []  # nobody was asked


async def test_not_configured_denies_and_bad_arguments_are_rejected(tmp_path: Path) -> None:
    async with serving(make_settings(None, tmp_path)) as (client, _):
        with anyio.fail_after(10):
            decision = await ask(client, "Bash", {"command": "ls"})
            bad = await client.call_tool("permission_prompt", {"tool_name": "Bash", "input": "ls"})
    assert decision["behavior"] == "deny" and "nobody could be asked" in decision["message"]
    assert bad.is_error and "input" in text_of(bad)


async def test_a_copy_that_could_not_be_delivered_is_withdrawn_and_the_others_decide(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    # One chat failing must not open the breaker here, or the edit below is skipped (best effort).
    breaker = {"telegram": {"failureThreshold": 10, "successThreshold": 1, "timeout": 200}}
    async with serving(make_settings(standin, tmp_path), circuitBreaker=breaker) as (client, services):
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, chats={BOB})
        decisions: list[dict[str, Any]] = []

        async def claude_code() -> None:
            decisions.append(await ask(client, "Bash", {"command": "make release"}))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(claude_code)
                (alice_copy,) = await asked(standin, 1)
                assert alice_copy.chat_id == ALICE
                standin.press(ALICE, alice_copy, "Allow")
        assert decisions == [{"behavior": "allow", "updatedInput": {"command": "make release"}}]
        outbox = services[-1].outbox
        assert outbox is not None
        counts = await outbox.counts()
        assert (counts.pending, counts.in_flight, counts.dead) == (0, 0, 0)  # Bob's copy was withdrawn
        assert any(r.method == "sendMessage" and r.status == 502 for r in standin.requests)
        assert [m.chat_id for m in standin.sent] == [ALICE]
        (edit,) = await edited(standin, 1)
        assert edit.chat_id == ALICE and f"Allowed by @user{ALICE}" in edit.plain_text


async def test_a_dead_copy_denies_and_the_delivered_copies_lose_their_buttons(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    standin.never_started.add(BOB)  # Telegram answers 403 for Bob: his copy is dead at once
    async with serving(make_settings(standin, tmp_path)) as (client, services):
        with anyio.fail_after(20):
            decision = await ask(client, "Bash", {"command": "make release"})
        assert decision["behavior"] == "deny" and "could not be sent" in decision["message"], decision
        assert [m.chat_id for m in standin.sent] == [ALICE]  # Alice's copy went out ...
        (edit,) = await edited(standin, 1)  # ... and was edited: no live Allow/Deny left
        assert edit.chat_id == ALICE and edit.message_id == standin.sent[0].message_id
        assert "Denied: the request could not reach every recipient" in edit.plain_text
        assert not edit.reply_markup
        outbox = services[-1].outbox
        assert outbox is not None
        assert (await outbox.counts()).pending == 0
