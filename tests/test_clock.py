from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import FakeClock

pytestmark = pytest.mark.anyio


async def test_sleep_and_timeouts_run_in_virtual_time() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    async with clock.autojump():
        await clock.sleep(5)
        assert clock.monotonic() - start == 5
        with clock.timeout_scope(2) as scope:
            await clock.sleep(10)
        assert scope.cancelled_caught
        assert clock.monotonic() - start == 7
        with clock.timeout_scope(100) as scope:
            await clock.sleep(1)
        assert not scope.cancelled_caught
    # The finished scope's timer is gone: time did not jump to its deadline.
    assert clock.monotonic() - start == 8
    assert clock.pending_timers == 0
    assert clock.sleeps == [5, 10, 1]


async def test_advance_fires_timers_in_order() -> None:
    clock = FakeClock()
    order: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "b", 2.0)
        tg.start_soon(sleeper, "a", 1.0)
        tg.start_soon(sleeper, "c", 3.0)
        await anyio.wait_all_tasks_blocked()
        await clock.advance(1.5)
        assert order == ["a"]
        await clock.advance(10)
    assert order == ["a", "b", "c"]


async def test_wall_time_advances_with_virtual_time() -> None:
    clock = FakeClock(start=50.0, wall_start=1_800_000_000.0)
    assert clock.time() == 1_800_000_000.0
    async with clock.autojump():
        await clock.sleep(90)
    assert (clock.monotonic(), clock.time()) == (140.0, 1_800_000_090.0)
    await clock.advance(10)
    assert clock.time() - 1_800_000_000.0 == clock.monotonic() - 50.0 == 100.0


async def test_outbox_stores_the_injected_wall_time(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=1_800_000_000.0)
    box = await Outbox.open(tmp_path / "outbox.sqlite3", clock=clock)
    try:
        event = Event(event_id="e1", type="info_notification", title="t", description="d", task_id="e1")
        (row,) = await box.enqueue(event, [1]) or []
        assert row.next_attempt_at == 1_800_000_000.0
        await clock.advance(30)
        assert (await box.counts()).oldest_pending_age_s == 30.0
    finally:
        await box.close()
