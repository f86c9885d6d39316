"""Pacing to Telegram's flood limits (DESIGN §3 "Outbox and dispatcher"), in virtual time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import pytest

from cctg_mcp.config import PacingSettings
from cctg_mcp.delivery.dispatcher import Dispatcher
from cctg_mcp.delivery.local_coordination import LocalCoordinator
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.errors import DeadlineExceededError, TelegramRateLimited

pytestmark = pytest.mark.anyio


async def send_times(pacer: Pacer, clock: FakeClock, chats: list[int]) -> list[float]:
    start, times = clock.monotonic(), []
    async with clock.autojump():
        for chat in chats:
            await pacer.acquire(chat)
            times.append(round(clock.monotonic() - start, 6))
    return times


async def test_one_chat_gets_its_burst_then_one_message_per_second() -> None:
    clock = FakeClock()
    pacer = Pacer(
        PacingSettings(per_chat_per_second=1, per_chat_burst=3, global_per_second=30), clock=clock, margin_s=0
    )
    assert await send_times(pacer, clock, [7] * 7) == [0, 0, 0, 1, 2, 3, 4]


async def test_the_overall_limit_spaces_messages_to_different_chats() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingSettings(global_per_second=5), clock=clock, margin_s=0)
    times = await send_times(pacer, clock, list(range(1, 11)))
    assert times[:5] == [0] * 5 and times[5:] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


async def test_groups_get_twenty_per_minute_without_a_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingSettings(), clock=clock, margin_s=0)
    assert await send_times(pacer, clock, [-100123] * 3) == pytest.approx([0, 3, 6])


async def test_the_jitter_margin_is_paid_once_and_the_rate_never_exceeds_the_limit() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingSettings(per_chat_per_second=1, per_chat_burst=2), clock=clock)  # margin 0.25 s
    times = await send_times(pacer, clock, [7] * 6)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps[1:])  # never faster than 1/s once the burst is used
    assert times[-1] <= 4.25 + 1e-9  # the spare costs 0.25 s once, not per message


async def test_without_a_burst_sends_are_spaced_past_the_limit() -> None:
    """A receiver that allows no burst holds no spare for a message that arrives early:
    every gap is 1/rate plus the spacing margin (0.1 s), in one process as in several."""
    clock = FakeClock()
    pacer = Pacer(PacingSettings(per_chat_per_second=1, per_chat_burst=1), clock=clock)
    times = await send_times(pacer, clock, [7] * 6)
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [1.1] * 5


async def test_a_429_pause_holds_every_chat_until_it_ends() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingSettings(), clock=clock, margin_s=0)
    pacer.pause(7)
    assert pacer.paused_for() == 7
    assert await send_times(pacer, clock, [1, 2, 3]) == [7, 7, 7]
    assert pacer.pauses == 1 and pacer.paused_for() == 0


async def test_a_wait_past_the_deadline_is_refused_without_using_a_slot() -> None:
    clock = FakeClock()
    pacer = Pacer(PacingSettings(per_chat_per_second=1, per_chat_burst=1), clock=clock, margin_s=0)
    await pacer.acquire(7)
    with pytest.raises(DeadlineExceededError) as info:
        await pacer.acquire(7, deadline=clock.monotonic() + 0.5)
    assert info.value.retry_after == pytest.approx(1.0)
    assert clock.sleeps == []  # refused at once, nothing slept
    pacer.refund(7)  # the first message was never sent after all: its slot comes back
    await pacer.acquire(7, deadline=clock.monotonic())  # so this one needs no wait


class _RateLimitedOnce:
    """Telegram answering one 429 (retry_after 3 s) to the first message, then accepting."""

    def __init__(self) -> None:
        self.calls = 0

    async def send_message(self, chat_id: int, text: str, **_: Any) -> int:
        self.calls += 1
        if self.calls == 1:
            raise TelegramRateLimited("Too Many Requests: retry after 3", retry_after=3.0)
        return self.calls


class _OneTry:
    """A pipeline that makes one attempt (no retry): the 429 reaches the dispatcher."""

    async def call(
        self, operation: str, fn: Any, *, deadline: float | None = None, event_type: str | None = None
    ) -> Any:
        return await fn()


async def test_one_429_counts_one_pause_here_and_in_the_shared_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    coordinator = LocalCoordinator(tmp_path, clock=clock)
    await coordinator.start()
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3", clock=clock)
    pacer = Pacer(PacingSettings(), clock=clock, shared=coordinator)
    dispatcher = Dispatcher(outbox, _RateLimitedOnce(), _OneTry(), pacer, clock=clock, coordinator=coordinator)
    try:
        event = Event(event_id="e1", type="info_notification", title="t", description="d", task_id="t1")
        claimed = await outbox.enqueue(event, [7], lease=(dispatcher.owner, dispatcher.lease_s))
        assert claimed is not None
        with anyio.fail_after(10):
            outcome = await dispatcher.deliver(claimed[0])
        assert outcome.status == "queued" and outcome.error_code == "TELEGRAM_RATE_LIMIT"
        budget = await coordinator.budget(now=clock.monotonic())
        assert pacer.pauses == 1 and budget["pauses"] == 1  # one 429, one pause (it was applied twice)
        assert pacer.paused_for() == pytest.approx(3.0) and budget["paused_for_s"] == pytest.approx(3.0)
    finally:
        await outbox.close()
        await coordinator.aclose()


async def test_a_pause_ended_by_another_process_frees_a_send_waiting_here(tmp_path: Path) -> None:
    """Two processes' pacers on one data dir: a 429 in A pauses both; B's send waits. When A
    ends the pause (trigger_recovery there), B's send goes within a second, not after the 600 s
    it had read (it used to keep its own copy of the pause and sleep through it)."""
    clock = FakeClock()
    a_coord, b_coord = LocalCoordinator(tmp_path, clock=clock), LocalCoordinator(tmp_path, clock=clock)
    await a_coord.start()
    await b_coord.start()
    a = Pacer(PacingSettings(), clock=clock, shared=a_coord)
    b = Pacer(PacingSettings(), clock=clock, shared=b_coord)
    sent_at: list[float] = []

    async def send_from_b() -> None:
        await b.acquire(7)
        sent_at.append(clock.monotonic())

    try:
        start = clock.monotonic()
        with anyio.fail_after(30):
            await a.rate_limited(600.0)
            async with clock.autojump(), anyio.create_task_group() as tg:
                tg.start_soon(send_from_b)
                await clock.sleep(5.0)
                assert not sent_at and 590 < b.paused_for() <= 600  # held by the shared pause
                assert await a.end_pause() == pytest.approx(595.0, abs=1.0)
        assert sent_at and sent_at[0] - start <= 5.0 + 1.0 + 1e-6, sent_at
        assert b.paused_for() == 0.0 and b.waits == 1  # one wait, however many times it looked
    finally:
        await a_coord.aclose()
        await b_coord.aclose()
