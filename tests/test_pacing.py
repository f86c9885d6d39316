"""Pacing to Telegram's flood limits (DESIGN §3 "Outbox and dispatcher"), in virtual time."""

from __future__ import annotations

import itertools

import pytest

from cctg_mcp.config import PacingSettings
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.errors import DeadlineExceededError

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
