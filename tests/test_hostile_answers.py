"""A hostile world, the getUpdates poller: stranger floods and update ids beyond 64 bits.

Against the real stand-in over loopback HTTP and a real SQLite store."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from helpers import ALICE, STRANGER, polling, stores

from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_a_stranger_flood_writes_one_warning_line_and_counts_every_update(
    standin: TelegramStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _metrics):
        for i in range(50):
            standin.push_text(STRANGER, f"let me in {i}")
        with caplog.at_level(logging.WARNING, logger="cctg_mcp.answers.poller"), anyio.fail_after(10):
            assert await poller.poll_once() == []
    assert poller.unauthorized == 50
    lines = [r for r in caplog.records if "not in TELEGRAM_ALLOWED_USERS" in r.getMessage()]
    assert len(lines) == 1


async def test_an_update_id_beyond_64_bits_is_skipped_and_later_answers_still_arrive(
    standin: TelegramStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _metrics):
        message = {"message_id": 1, "from": {"id": ALICE}, "chat": {"id": ALICE}, "text": "x"}
        standin.push_raw_update({"update_id": 2**70, "message": message})
        standin.push_text(ALICE, "the real answer")
        with caplog.at_level(logging.WARNING, logger="cctg_mcp.answers.poller"), anyio.fail_after(10):
            rows = await poller.poll_once()
            assert [r.text for r in rows] == ["the real answer"]
            standin.push_text(ALICE, "and the next one")
            rows = await poller.poll_once()  # the odd update is offered again: skipped again
        assert [r.text for r in rows] == ["and the next one"]
        assert poller.skipped == 2 and poller.offset == await store.next_offset()
    assert any("out of range" in r.getMessage() for r in caplog.records)


async def test_a_batch_of_only_unusable_updates_waits_before_polling_again(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """Telegram offers such an update again at once (no long poll): the poller must not spin."""
    async with stores(tmp_path) as (store, _), polling(standin, store) as (poller, _metrics):
        message = {"message_id": 1, "from": {"id": ALICE}, "chat": {"id": ALICE}, "text": "x"}
        standin.push_raw_update({"update_id": 2**70, "message": message})
        with anyio.fail_after(10):
            delay = await poller._poll_guarded()
        assert poller.unusable_batch and delay == poller.min_backoff > 0
        standin.push_text(ALICE, "a real answer")
        with anyio.fail_after(10):
            delay = await poller._poll_guarded()
        assert not poller.unusable_batch and delay == 0.0
