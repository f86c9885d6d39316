from __future__ import annotations

import anyio
import pytest

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
