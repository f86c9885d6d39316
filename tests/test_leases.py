"""Leases held by live owners, released by liveness (#15; #19 item 6).

A delivery slower than its lease must not be taken over by the background loop while the
attempt still runs (it went out twice before leases were renewed), and rows leased by a
process found dead go back to the queue at once, not after the lease. Leases are wall-clock
times in the outbox, so these tests run in real (short) time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import fast_config, make_settings

from cctg_mcp.app import lease_for, open_service
from cctg_mcp.config import PacingSettings
from cctg_mcp.delivery.dispatcher import BACKGROUND_CANCEL_MARGIN_S, Dispatcher, Outcome, background_send_timeout
from cctg_mcp.delivery.local_coordination import LocalCoordinator
from cctg_mcp.delivery.outbox import Delivery, Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.delivery.supervisor import DispatcherSupervisor
from cctg_mcp.events.catalogue import Event
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio
FREE = PacingSettings(per_chat_per_second=1000, per_chat_burst=1000, global_per_second=1000)


class SlowTelegram:
    """Takes ``delay`` seconds to accept each message, like a slow peer."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[str] = []

    async def send_message(self, chat_id: int, text: str, **_: Any) -> int:
        self.sent.append(text)  # it reached Telegram: it will be shown, whatever happens here next
        await anyio.sleep(self.delay)
        return len(self.sent)


class Plain:
    async def call(
        self, operation: str, fn: Any, *, deadline: float | None = None, event_type: str | None = None
    ) -> Any:
        return await fn()


def event(n: int = 0) -> Event:
    return Event(event_id=f"e{n}", type="info_notification", title="t", description=f"slow {n}", task_id=f"t{n}")


async def test_a_delivery_slower_than_its_lease_goes_out_once(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    telegram = SlowTelegram(delay=2.0)
    dispatcher = Dispatcher(outbox, telegram, Plain(), Pacer(FREE), lease_s=0.6, send_timeout_s=30, idle_poll_s=0.05)
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher.run)  # the background loop looks for expired leases all along
                claimed = await outbox.enqueue(event(), [7], lease=(dispatcher.owner, dispatcher.lease_s))
                assert claimed is not None
                outcome = await dispatcher.deliver(claimed[0])  # the tool's own attempt: 2 s > the 0.6 s lease
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
        assert outcome.status == "delivered"
        assert len(telegram.sent) == 1, telegram.sent  # renewed, never re-taken: one copy
        assert (await outbox.counts()).delivered == 1
    finally:
        await outbox.close()


async def test_rows_of_a_dead_session_return_at_once_not_after_the_lease(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    gone = LocalCoordinator(tmp_path)
    await gone.start()
    live = LocalCoordinator(tmp_path)
    await live.start()
    telegram = SlowTelegram(delay=0)
    dispatcher = Dispatcher(outbox, telegram, Plain(), Pacer(FREE), lease_s=3600, coordinator=live)
    try:
        for n in range(3):  # leased for an hour by a session that then stops
            await outbox.enqueue(event(n), [7], lease=(gone.session_id, 3600))
        await gone.aclose()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher.run)
                while (await outbox.counts()).delivered < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()
        assert dispatcher.taken_over == 3 and len(telegram.sent) == 3
    finally:
        await live.aclose()
        await outbox.close()


def test_the_lease_is_never_shorter_than_the_longest_attempt() -> None:
    config = fast_config()  # 2 s per operation; per-event budgets (events.<type>.timeout) up to 10 s
    budgets = [config.timeout_for(op, event) for op in ("sendEvent", "sendMessage") for event in config.events]
    assert max(budgets) == 10.0
    # a tool waits its budget + 2 s; the background loop its send timeout (lease/2) + 5 s
    assert lease_for(5.0, config) == pytest.approx(max(10.0 + 3.0, 2.5 + 6.0))
    assert lease_for(120.0, config) == 120.0


async def test_restarting_the_loop_during_a_tools_attempt_sends_the_message_once(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    telegram = SlowTelegram(delay=1.0)
    dispatcher = Dispatcher(outbox, telegram, Plain(), Pacer(FREE), lease_s=60, send_timeout_s=30, idle_poll_s=0.05)
    supervisor = DispatcherSupervisor(dispatcher)
    outcomes: list[Outcome] = []

    async def tool_attempt(delivery: Delivery) -> None:
        outcomes.append(await dispatcher.deliver(delivery))

    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run)
                claimed = await outbox.enqueue(event(), [7], lease=(dispatcher.owner, dispatcher.lease_s))
                assert claimed is not None
                tg.start_soon(tool_attempt, claimed[0])  # the send tool's own attempt (1 s at Telegram)
                while not telegram.sent:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                assert await supervisor.restart()  # the loop stops and starts while the tool still sends
                while not outcomes:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                await anyio.sleep(0.3)  # the restarted loop has had many rounds to (wrongly) claim the row
                tg.cancel_scope.cancel()
        assert outcomes[0].status == "delivered"
        assert len(telegram.sent) == 1, telegram.sent
        counts = await outbox.counts()
        assert (counts.delivered, counts.pending, counts.in_flight) == (1, 0, 0)
    finally:
        await outbox.close()


async def test_a_stopped_loop_hands_back_the_rows_it_claimed(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    telegram = SlowTelegram(delay=30.0)  # never finishes while the loop runs
    dispatcher = Dispatcher(outbox, telegram, Plain(), Pacer(FREE), lease_s=60, send_timeout_s=30, idle_poll_s=0.05)
    try:
        for n in range(2):
            await outbox.enqueue(event(n), [7 + n])
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher.run)
                while len(telegram.sent) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                assert (await outbox.counts()).in_flight == 2
                tg.cancel_scope.cancel()
        counts = await outbox.counts()
        assert (counts.pending, counts.in_flight) == (2, 0)  # back in the queue at once, not after the lease
    finally:
        await outbox.close()


async def test_every_dispatcher_uses_the_one_background_send_timeout(standin: TelegramStandIn, tmp_path: Path) -> None:
    assert background_send_timeout(120.0) == 30.0 and background_send_timeout(20.0) == 10.0
    for delivery in ("bridge", "telegram"):
        settings = make_settings(standin, tmp_path / delivery, CCTG_DELIVERY=delivery, CCTG_LEASE_SECONDS="20")
        async with open_service(settings, resilience=fast_config()) as runtime:
            service = runtime.service
            dispatcher = service.dispatcher
            assert dispatcher is not None
            assert dispatcher.send_timeout_s == background_send_timeout(20.0) == 10.0, delivery
            # the lease outlasts the loop's longest attempt (send timeout + cancel margin)
            assert dispatcher.lease_s >= dispatcher.send_timeout_s + BACKGROUND_CANCEL_MARGIN_S, delivery
