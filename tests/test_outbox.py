"""The outbox on a real SQLite file: durability, leases, dedup, dead letters, caps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cctg_mcp.delivery.mode import asks_for_answer
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import Event, Priority
from cctg_mcp.resilience.errors import ConfigurationError, ResourceError

pytestmark = pytest.mark.anyio

TOKEN = "123456:SECRET-token-abcdefghijklmnopqrstuvwxyz"


def event(n: int = 1, priority: Priority = "normal") -> Event:
    return Event(
        event_id=f"ev-{n}",
        type="info_notification",
        title=f"t{n}",
        description="d",
        task_id=f"task-{n}",
        priority=priority,
    )


async def test_enqueue_commits_and_is_visible_to_a_new_connection(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    assert await box.enqueue(event(), [1, 2])
    await box.close()
    reopened = await Outbox.open(tmp_path / "o.sqlite3")
    rows = await reopened.deliveries("ev-1")
    assert [(r.chat_id, r.status) for r in rows] == [(1, "pending"), (2, "pending")]
    assert rows[0].event.title == "t1"
    await reopened.close()


async def test_same_event_id_is_accepted_once(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    assert await box.enqueue(event(), [1])
    assert await box.enqueue(event(), [1]) is None
    assert (await box.counts()).pending == 1
    await box.close()


async def test_claim_leases_and_an_expired_lease_returns_to_pending(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    await box.enqueue(event(), [1])
    claimed = await box.claim_due("proc-a", lease_s=30)
    assert [c.status for c in claimed] == ["in_flight"]
    assert await box.claim_due("proc-b", lease_s=30) == []  # leased rows are not claimed twice
    assert await box.recover_expired_leases(now=time.time() + 10) == 0
    assert await box.recover_expired_leases(now=time.time() + 31) == 1
    again = await box.claim_due("proc-b", lease_s=30)
    assert [c.id for c in again] == [claimed[0].id]
    await box.close()


async def test_enqueue_with_a_lease_is_invisible_to_other_claimers(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    mine = await box.enqueue(event(), [1, 2], lease=("tool", 30))
    assert mine is not None and [d.status for d in mine] == ["in_flight", "in_flight"]
    assert await box.claim_due("dispatcher", lease_s=30) == []
    await box.mark_delivered(mine[0].id, [5])
    assert [d.status for d in await box.deliveries("ev-1")] == ["delivered", "in_flight"]
    await box.close()


async def test_priority_orders_claims(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    await box.enqueue(event(1, "low"), [1])
    await box.enqueue(event(2, "critical"), [1])
    await box.enqueue(event(3, "normal"), [1])
    claimed = await box.claim_due("p", lease_s=30)
    assert [c.event.event_id for c in claimed] == ["ev-2", "ev-3", "ev-1"]
    await box.close()


async def test_release_sets_due_time_and_redacts_the_error(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    await box.enqueue(event(), [1])
    (row,) = await box.claim_due("p", lease_s=30)
    later = time.time() + 100
    await box.release(row.id, f"boom at https://x/bot{TOKEN}/sendMessage", later)
    assert await box.claim_due("p", lease_s=30) == []  # not due yet
    (stored,) = await box.deliveries("ev-1")
    assert stored.status == "pending" and stored.attempts == 1
    assert stored.last_error is not None and TOKEN not in stored.last_error
    assert await box.next_due_at() == pytest.approx(later)
    assert await box.retry_now() == 1
    assert len(await box.claim_due("p", lease_s=30)) == 1
    await box.close()


async def test_dead_letters_and_requeue(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    await box.enqueue(event(), [1])
    (row,) = await box.claim_due("p", lease_s=30)
    await box.mark_dead(row.id, "Telegram sendMessage failed: 403 Forbidden: bot was blocked by the user")
    counts = await box.counts()
    assert (counts.pending, counts.dead) == (0, 1)
    (dead,) = await box.dead_letters()
    assert dead.last_error is not None and "blocked" in dead.last_error
    assert await box.requeue_dead() == 1
    assert (await box.counts()).pending == 1
    await box.close()


async def test_part_progress_survives_and_delivery_completes(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    await box.enqueue(event(), [1])
    (row,) = await box.claim_due("p", lease_s=30)
    await box.record_part(row.id, 1, [77])
    await box.release(row.id, "network", time.time())
    (again,) = await box.claim_due("p", lease_s=30)
    assert (again.parts_sent, again.message_ids) == (1, [77])
    await box.mark_delivered(again.id, [77, 78])
    counts = await box.counts()
    assert (counts.delivered, counts.pending, counts.oldest_pending_age_s) == (1, 0, None)
    await box.close()


async def test_cap_refuses_new_work_without_dropping_queued(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3", max_pending=2)
    assert await box.enqueue(event(1), [1, 2])
    with pytest.raises(ResourceError, match="outbox is full"):
        await box.enqueue(event(2), [1])
    assert (await box.counts()).pending == 2
    assert await box.deliveries("ev-2") == []
    await box.close()


async def test_byte_cap_refuses_new_work_without_dropping_queued(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3", max_bytes=1700)  # each event below is 790 bytes of JSON
    big = event(1).model_copy(update={"description": "x" * 600})
    assert await box.enqueue(big, [1])
    assert await box.enqueue(event(2).model_copy(update={"description": "y" * 600}), [1])
    with pytest.raises(ResourceError, match="bytes of events waiting"):
        await box.enqueue(event(3).model_copy(update={"description": "z" * 600}), [1])
    assert (await box.counts()).pending == 2 and await box.deliveries("ev-3") == []
    (row, *_) = await box.claim_due("p", lease_s=30)
    await box.mark_delivered(row.id, [1])  # delivered bytes no longer count
    assert await box.enqueue(event(3).model_copy(update={"description": "z" * 600}), [1])
    await box.close()


async def test_corrupt_database_is_a_clear_error_and_is_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigurationError) as info:
        await Outbox.open(path)
    assert str(path) in str(info.value) and "Nothing was deleted" in str(info.value)
    assert path.read_bytes().startswith(b"this is not a database")


async def test_purge_removes_only_old_finished_rows(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    await box.enqueue(event(1), [1])
    await box.enqueue(event(2), [1])
    rows = await box.claim_due("p", lease_s=30)
    await box.mark_delivered(rows[0].id, [1])
    assert await box.purge(older_than_s=3600) == 0
    assert await box.purge(older_than_s=-1) == 1
    counts = await box.counts()
    assert (counts.delivered, counts.in_flight) == (0, 1)
    await box.close()


async def test_local_mode_holds_back_the_same_events_asks_for_answer_names(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3")
    cases = {
        "ev-true": {"requires_response": True},
        "ev-one": {"requires_response": 1},  # a number, not the flag: sent, as asks_for_answer says
        "ev-string": {"requires_response": "true"},
        "ev-false": {"requires_response": False},
        "ev-none": {},
    }
    events = [
        event(n).model_copy(update={"event_id": eid, "data": data}) for n, (eid, data) in enumerate(cases.items())
    ]
    events.append(event(9).model_copy(update={"event_id": "ev-approval", "type": "approval_request"}))
    for ev in events:
        assert await box.enqueue(ev, [1])
    claimed = await box.claim_due("local", 60, skip_answer_requests=True)
    held = {ev.event_id for ev in events if asks_for_answer(ev)}
    assert held == {"ev-true", "ev-approval"}
    assert {d.event.event_id for d in claimed} == {ev.event_id for ev in events} - held
    await box.close()


async def test_the_byte_cap_counts_utf8_bytes_not_characters(tmp_path: Path) -> None:
    ascii_one = event(1).model_copy(update={"description": "x" * 600})  # 790 bytes of JSON
    accented = event(2).model_copy(update={"description": "é" * 600})  # 790 characters, 1390 bytes
    assert len(accented.model_dump_json()) == len(ascii_one.model_dump_json())
    assert len(accented.model_dump_json().encode()) == len(ascii_one.model_dump_json().encode()) + 600
    # the new event's bytes: 790 + 1390 > 2000 (as characters it was 790 + 790)
    box = await Outbox.open(tmp_path / "new.sqlite3", max_bytes=2000)
    assert await box.enqueue(ascii_one, [1])
    with pytest.raises(ResourceError, match="790 bytes of events waiting, limit 2000"):
        await box.enqueue(accented, [1])
    await box.close()
    # the waiting events' bytes: 1390 + 790 > 2000
    box = await Outbox.open(tmp_path / "waiting.sqlite3", max_bytes=2000)
    assert await box.enqueue(accented, [1])
    with pytest.raises(ResourceError, match="1390 bytes of events waiting, limit 2000"):
        await box.enqueue(ascii_one, [1])
    assert (await box.counts()).pending == 1
    await box.close()
