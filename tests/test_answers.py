"""Answers in direct mode: parsing, the response store and the getUpdates poller.

The poller talks to the real stand-in over loopback HTTP; the store is real SQLite, with
the real outbox attached so button presses resolve to their events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import ALICE, STRANGER, USERS, polling, stores

from cctg_mcp.answers import (
    Answers,
    ParsedUpdate,
    UnknownEventError,
    parse_update,
)
from cctg_mcp.events.catalogue import Event
from cctg_mcp.events.rendering import approval_keyboard, callback_ref
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

BOB = USERS[1]
T0 = 1_700_000_000.0


def counter(metrics: MetricsRegistry, name: str) -> float:
    return float(sum(c["value"] for c in metrics.snapshot()["counters"] if c["name"] == name))


def approval(event_id: str = "ev-approve-1", options: list[str] | None = None) -> Event:
    data = {"approval_prompt": "Deploy?", "options": options or ["Yes", "No", "Later"]}
    return Event(
        event_id=event_id, type="approval_request", title="Deploy?", description="prod", task_id="task-42", data=data
    )


def buttons(event: Event) -> list[str]:
    return [b["callback_data"] for row in approval_keyboard(event)["inline_keyboard"] for b in row]


def press(update_id: int, user: int, data: str, *, message_id: int | None = None) -> ParsedUpdate:
    return ParsedUpdate(
        update_id,
        "callback",
        user,
        f"user{user}",
        "U",
        user,
        message_id,
        callback_data=data,
        callback_query_id=f"q{update_id}",
    )


def text(update_id: int, user: int, body: str, *, reply_to: int | None = None) -> ParsedUpdate:
    return ParsedUpdate(update_id, "text", user, f"user{user}", "U", user, reply_to, text=body)


# ---- parsing -------------------------------------------------------------------------------


def test_parse_update_reads_presses_texts_and_replies_and_skips_the_rest() -> None:
    user = {"id": 7, "is_bot": False, "first_name": "Ann", "username": "ann"}
    chat = {"id": 7, "type": "private"}
    cb = parse_update(
        {
            "update_id": 5,
            "callback_query": {
                "id": "q1",
                "from": user,
                "data": "approve:ev:0",
                "message": {"message_id": 9, "chat": chat},
            },
        }
    )
    assert cb == ParsedUpdate(
        5, "callback", 7, "ann", "Ann", 7, 9, callback_data="approve:ev:0", callback_query_id="q1"
    )
    reply = parse_update(
        {
            "update_id": 6,
            "message": {
                "message_id": 11,
                "from": user,
                "chat": chat,
                "text": "ok",
                "reply_to_message": {"message_id": 9},
            },
        }
    )
    assert reply is not None and reply.kind == "text" and reply.text == "ok" and reply.message_id == 9
    assert parse_update({"update_id": 7, "message": {"from": user, "chat": chat, "sticker": {}}}) is None
    assert parse_update({"update_id": 8, "edited_message": {"from": user, "text": "x"}}) is None
    assert parse_update({"callback_query": {"from": user, "data": "x"}}) is None  # no update_id
    assert parse_update({"update_id": 9, "message": {"text": "no sender"}}) is None


# ---- the store -----------------------------------------------------------------------------


async def test_store_is_idempotent_on_update_id_and_the_offset_never_goes_back(tmp_path: Path) -> None:
    async with stores(tmp_path, outbox=False) as (store, _):
        assert await store.next_offset() is None
        batch = [text(10, ALICE, "first"), text(11, BOB, "second")]
        rows, new = await store.store_batch(batch, 12, now=T0)
        assert new == 2 and [r.update_id for r in rows] == [10, 11]
        rows, new = await store.store_batch(batch, 12, now=T0 + 5)  # re-read after a crash
        assert new == 0 and [r.text for r in rows] == ["first", "second"]
        assert [r.received_at for r in rows] == [T0, T0]  # the first write wins
        await store.store_batch([], 11)  # an older offset is ignored
        assert await store.next_offset() == 12
        total, listed = await store.recent(now=T0)
        assert total == 2 and [r.update_id for r in listed] == [11, 10]  # newest first


async def test_a_press_resolves_to_its_event_option_label_and_task(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box):
        assert box is not None
        event = approval()
        await box.enqueue(event, [ALICE])
        yes, no, later = buttons(event)
        rows, _ = await store.store_batch(
            [press(1, ALICE, yes), press(2, ALICE, no), press(3, ALICE, later), press(4, ALICE, "approve_task-42")],
            5,
        )
        assert [(r.action, r.option, r.option_index) for r in rows] == [
            ("approve", "Yes", 0),
            ("deny", "No", 1),
            ("option", "Later", 2),
            ("approve", "Yes", 0),
        ]
        assert {r.event_id for r in rows} == {event.event_id} and {r.task_id for r in rows} == {"task-42"}
        first = await store.first_for_event(event.event_id)
        assert first is not None and first.update_id == 1


async def test_a_long_event_id_resolves_through_its_hashed_ref(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box):
        assert box is not None
        event = approval(event_id="evt/" + "x" * 60, options=["Approve", "Deny"])
        await box.enqueue(event, [ALICE])
        assert callback_ref(event.event_id) != event.event_id
        rows, _ = await store.store_batch([press(1, ALICE, buttons(event)[1])], 2)
        assert (rows[0].event_id, rows[0].action, rows[0].option) == (event.event_id, "deny", "Deny")


async def test_a_text_reply_to_a_delivered_message_names_its_event(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box):
        assert box is not None
        event = approval()
        (delivery,) = await box.enqueue(event, [ALICE]) or []
        await box.mark_delivered(delivery.id, [77])
        rows, _ = await store.store_batch([text(1, ALICE, "not yet", reply_to=77), text(2, ALICE, "hello")], 3)
        assert [(r.kind, r.action, r.event_id) for r in rows] == [
            ("text", "text", event.event_id),
            ("text", "text", None),
        ]
        assert await store.event_known(event.event_id) is True
        assert await store.event_known("nope") is False


async def test_a_reply_stored_before_its_delivery_was_recorded_still_answers_the_event(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box):
        assert box is not None
        event, other = approval(), approval("ev-other")
        (delivery,) = await box.enqueue(event, [ALICE]) or []
        await box.enqueue(other, [ALICE])
        rows, _ = await store.store_batch([text(1, ALICE, "no, wait", reply_to=77)], 2)
        assert rows[0].event_id is None  # the outbox did not know message 77 yet
        assert await store.first_for_event(event.event_id) is None
        await box.mark_delivered(delivery.id, [77])
        found = await store.first_for_event(event.event_id)
        assert found is not None and (found.text, found.update_id) == ("no, wait", 1)
        assert await store.first_for_event(other.event_id) is None


async def test_unknown_callback_data_is_kept_as_other(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, _):
        rows, _ = await store.store_batch([press(1, ALICE, "bridge_fix_request")], 2)
        assert (rows[0].action, rows[0].event_id, rows[0].callback_data) == ("other", None, "bridge_fix_request")


async def test_delete_older_than_uses_the_injected_time(tmp_path: Path) -> None:
    async with stores(tmp_path, outbox=False) as (store, _):
        await store.store_batch([text(1, ALICE, "old")], 2, now=T0)
        await store.store_batch([text(2, ALICE, "new")], 3, now=T0 + 7200)
        assert await store.delete_older_than(3600, now=T0 + 7200) == 1
        total, rows = await store.recent(now=T0 + 7200)
        assert total == 1 and rows[0].text == "new"


# ---- the poller against the stand-in -------------------------------------------------------


async def test_poller_stores_allowed_answers_acknowledges_them_and_ignores_strangers(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with stores(tmp_path) as (store, box), polling(standin, store) as (poller, metrics):
        assert box is not None
        event = approval()
        await box.enqueue(event, list(USERS))
        yes, _, later = buttons(event)
        standin.push_callback(ALICE, yes)
        standin.push_callback(STRANGER, yes)
        standin.push_text(STRANGER, "let me in")
        standin.push_callback(BOB, later)
        standin.push_text(BOB, "looks good")
        with anyio.fail_after(10):
            rows = await poller.poll_once()
        assert [(r.user_id, r.kind, r.action, r.option) for r in rows] == [
            (ALICE, "callback", "approve", "Yes"),
            (BOB, "callback", "option", "Later"),
            (BOB, "text", "text", None),
        ]
        total, stored = await store.recent()
        assert total == 3 and STRANGER not in {r.user_id for r in stored}
        assert poller.unauthorized == 2 and counter(metrics, "unauthorized_updates_total") == 2
        answered = {a["callback_query_id"]: a.get("text") for a in standin.answered_callbacks}
        assert sorted(str(v) for v in answered.values()) == ["Approved ✅", "Selected: Later", "Unauthorized"]
        assert poller.offset == 6 and await store.next_offset() == 6


async def test_offset_survives_a_crash_nothing_lost_nothing_duplicated(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    for i in range(3):
        standin.push_text(ALICE, f"before {i}")
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _m):
        with anyio.fail_after(10):
            assert len(await poller.poll_once()) == 3
        # The process dies here: the batch is stored, Telegram has not seen the next offset.
    standin.push_text(ALICE, "after restart")
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _m):
        assert poller.offset == 4
        with anyio.fail_after(10):
            rows = await poller.poll_once()
        assert [r.text for r in rows] == ["after restart"]
        total, stored = await store.recent()
        assert total == 4 and sorted(r.text or "" for r in stored) == [
            "after restart",
            "before 0",
            "before 1",
            "before 2",
        ]
    requests = [r.params.get("offset") for r in standin.requests if r.method == "getUpdates"]
    assert requests == [None, 4]


async def test_a_crash_before_storing_rereads_the_batch(
    standin: TelegramStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    standin.push_text(ALICE, "one")
    standin.push_text(BOB, "two")
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _m):

        async def disk_full(*args: Any, **kwargs: Any) -> Any:
            raise OSError("disk full")

        monkeypatch.setattr(store, "store_batch", disk_full)
        with anyio.fail_after(10), pytest.raises(OSError):
            await poller.poll_once()
        assert poller.offset is None  # nothing confirmed to Telegram
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _m):
        with anyio.fail_after(10):
            rows = await poller.poll_once()
        assert [r.text for r in rows] == ["one", "two"]
        assert (await store.recent())[0] == 2


async def test_a_409_conflict_is_reported_and_backed_off_without_touching_any_breaker(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, metrics):
        standin.set_fault(FaultMode.SERVER_ERROR, status=409, methods={"getUpdates"})
        with anyio.fail_after(10):
            delays = [await poller._poll_guarded() for _ in range(4)]
        assert delays == [poller.conflict_backoff] * 4
        assert poller.conflicts == 4 and counter(metrics, "getupdates_conflicts_total") == 4
        assert poller.status()["breaker"] == "closed" and "409" in (poller.last_error or "")
        standin.clear_fault()
        with anyio.fail_after(10):
            assert await poller._poll_guarded() == 0.0
        assert poller.status()["last_error"] is None


async def test_429_waits_retry_after_and_5xx_backs_off_exponentially(standin: TelegramStandIn, tmp_path: Path) -> None:
    no_retry: dict[str, dict[str, Any]] = {"retry": {"telegram": {"maxAttempts": 1}}}
    async with stores(tmp_path) as (store, _), polling(standin, store, config=no_retry) as (poller, _m):
        standin.set_fault(FaultMode.RATE_LIMIT, retry_after=7, methods={"getUpdates"}, count=1)
        with anyio.fail_after(10):
            assert await poller._poll_guarded() == 7.0
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"getUpdates"})
        with anyio.fail_after(10):
            delays = [await poller._poll_guarded() for _ in range(2)]
        assert delays == [poller.min_backoff * 2, poller.min_backoff * 4]  # 2nd and 3rd consecutive failure
        assert poller.status()["breaker"] == "open"  # two 502s (the 429 does not count)
        with anyio.fail_after(10):
            wait = await poller._poll_guarded()  # rejected fast: wait the breaker's retry_after
        assert 0 < wait <= 0.2 and "telegram_updates" in (poller.last_error or "")


async def test_the_poller_runs_in_a_task_group_and_wakes_waiters(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box), polling(standin, store, poll_timeout=2) as (poller, _m):
        assert box is not None
        event = approval()
        await box.enqueue(event, [ALICE])
        answers = Answers(store, poller)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await tg.start(poller.run)
                assert poller.running
                result: list[Any] = []
                done = anyio.Event()

                async def waiter() -> None:
                    result.append(await answers.wait(event.event_id, 30))
                    done.set()

                tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                standin.push_callback(ALICE, buttons(event)[1])
                await done.wait()
                tg.cancel_scope.cancel()
        assert result[0].status == "answered" and result[0].action == "deny" and result[0].option == "No"
        assert not poller.running


# ---- the response use cases ----------------------------------------------------------------


async def test_wait_times_out_with_progress_in_virtual_time(tmp_path: Path) -> None:
    clock = FakeClock()
    async with stores(tmp_path) as (store, box):
        assert box is not None
        await box.enqueue(approval(), [ALICE])
        answers = Answers(store, clock=clock, progress_interval=5)
        progress: list[tuple[float, float]] = []

        async def report(elapsed: float, total: float, message: str) -> None:
            progress.append((elapsed, total))

        with anyio.fail_after(10):
            async with clock.autojump():
                result = await answers.wait("ev-approve-1", 12, on_progress=report)
        assert (result.status, result.waited_seconds) == ("timeout", 12.0)
        assert progress == [(5.0, 12.0), (10.0, 12.0)]
        with pytest.raises(UnknownEventError, match="No event 'ghost'"):
            await answers.wait("ghost", 5)


async def test_wait_returns_an_answer_stored_before_the_call(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box):
        assert box is not None
        event = approval()
        await box.enqueue(event, [ALICE])
        await store.store_batch([press(1, ALICE, buttons(event)[0])], 2)
        with anyio.fail_after(5):
            result = await Answers(store).wait(event.event_id, 3600)
        assert result.status == "answered" and result.response is not None and result.response.update_id == 1


async def test_pending_summary_counts_decisions_in_the_window(tmp_path: Path) -> None:
    async with stores(tmp_path) as (store, box):
        assert box is not None
        a, b = approval("ev-a"), approval("ev-b", options=["Approve", "Deny"])
        for event in (a, b):
            await box.enqueue(event, [ALICE])
        await store.store_batch([press(1, ALICE, buttons(a)[0])], 2, now=T0 - 3600)  # outside the window
        await store.store_batch(
            [
                press(2, ALICE, buttons(a)[0]),
                press(3, BOB, buttons(b)[1]),
                press(4, ALICE, buttons(a)[2]),
                text(5, BOB, "why?"),
            ],
            6,
            now=T0,
        )
        answers = Answers(store)
        result = await answers.pending(10, now=T0 + 60)
        assert result.summary.model_dump() == {
            "total_recent_responses": 4,
            "actionable_responses": 3,
            "pending_approvals": 1,
            "pending_denials": 1,
            "time_window_minutes": 10,
        }
        assert {(x.action, x.event_id, x.option) for x in result.actionable_responses} == {
            ("approve", "ev-a", "Yes"),
            ("deny", "ev-b", "Deny"),
            ("option", "ev-a", "Later"),
        }
        joined = " ".join(result.recommendations)
        assert "proceed with event(s) ev-a" in joined and "do not proceed with event(s) ev-b" in joined
        assert "conflicting" in joined and "1 text message" in joined
        listed = await answers.responses(limit=2, since_minutes=10, now=T0 + 60)
        assert (listed.count, listed.total) == (2, 4)
        cleared = await answers.clear(1, now=T0 + 60)
        assert cleared.deleted_count == 1 and "Cleared 1" in cleared.message
