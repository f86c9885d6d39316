"""A hostile world, the outbox: one unreadable row is quarantined and everything else flows.

A real SQLite file damaged for real: a payload rewritten so it no longer parses, and 20
random bytes written over a row's text in the file itself (which ``quick_check`` does not
notice). End to end, the real server delivers the good rows to the stand-in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from helpers import USERS, connected, make_settings

from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.dev.soak_faults import damage_row
from cctg_mcp.events.catalogue import Event
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

ALICE = USERS[0]
MARKER = "POISON-MARKER-" + "x" * 40


def event(i: int, title: str | None = None) -> Event:
    return Event(
        event_id=f"ev-{i}", type="task_completion", title=title or f"Build {i}", description="done", task_id=f"t{i}"
    )


async def fill(path: Path, n: int = 10, poison_index: int = 4) -> None:
    box = await Outbox.open(path)
    for i in range(n):
        await box.enqueue(event(i, MARKER if i == poison_index else None), [ALICE])
    await box.close()  # the last connection checkpoints the WAL into the file


def rewrite_payload(path: Path, event_id: str, payload: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET payload=? WHERE event_id=?", (payload, event_id))
    conn.close()


def damage_bytes(path: Path) -> None:
    """20 random bytes (not UTF-8) over the marked row's text; quick_check does not notice."""
    damage_row(path, MARKER)  # raises if quick_check notices the damage


async def claim_all(path: Path, *, local_mode: bool = False) -> tuple[list[str], Outbox]:
    box = await Outbox.open(path)
    claimed = await box.claim_due("test", 60, limit=50, skip_answer_requests=local_mode)
    return sorted(d.event.event_id for d in claimed), box


@pytest.mark.parametrize("damage", ["payload", "bytes", "not-json-in-local-mode"])
async def test_an_unreadable_row_is_quarantined_dead_with_the_reason(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "outbox.sqlite3"
    await fill(path)
    if damage == "payload":
        rewrite_payload(path, "ev-4", '{"type": "no such type", "title": 5}')
    elif damage == "bytes":
        damage_bytes(path)
    else:  # local mode filters rows with json_extract, which fails on text that is not JSON
        rewrite_payload(path, "ev-4", "{not json")
    ids, box = await claim_all(path, local_mode=damage.endswith("local-mode"))
    try:
        assert ids == [f"ev-{i}" for i in range(10) if i != 4]
        assert box.quarantined == 1
        counts = await box.counts()
        assert (counts.in_flight, counts.dead, counts.pending) == (9, 1, 0)
        with sqlite3.connect(path) as conn:
            (reason,) = conn.execute("SELECT last_error FROM deliveries WHERE event_id='ev-4'").fetchone()
        conn.close()
        assert "cannot be read back" in reason and "quarantined" in reason
        assert await box.deliveries("ev-4") == []  # listing skips it instead of failing
        assert (await box.claim_due("test", 60)) == []  # and it is never claimed again
    finally:
        await box.close()


async def test_the_server_delivers_every_good_row_around_a_damaged_one(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path)
    await fill(settings.outbox_path)
    damage_bytes(settings.outbox_path)
    async with connected(settings) as client:
        with anyio.fail_after(20):
            sent = await standin.await_messages(9, timeout=15)
        assert len(sent) == 9 and not any(MARKER[:10] in m.text for m in sent)
        with anyio.fail_after(15):
            status = (await client.call_tool("get_resilience_status", {})).structured_content
    assert status is not None
    assert status["outbox"]["dead"] == 1 and status["outbox"]["pending"] == 0
