"""A hostile world, slow and huge peers: a Telegram that drips bytes or answers 200 MB.

The real transport against the real stand-in over loopback HTTP (its DRIP and HUGE_BODY
faults); short timeouts so the bound shows in a second, not a minute."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers import USERS, fast_config

from cctg_mcp.answers import ANSWERS_FILE, ResponsePoller, ResponseStore, updates_pipeline
from cctg_mcp.resilience.errors import AttemptTimeoutError, ResourceError
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.transports.telegram import TelegramTransport

pytestmark = pytest.mark.anyio


def transport(standin: TelegramStandIn, **kwargs: float) -> TelegramTransport:
    return TelegramTransport(
        standin.token,
        standin.base_url,
        timeout=0.5,
        connect_timeout=0.5,
        call_margin=0.5,
        long_poll_margin=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_long_poll_that_drips_one_byte_at_a_time_is_bounded_as_a_whole(standin: TelegramStandIn) -> None:
    """Each byte arrives well inside the read timeout, so only a bound on the whole call ends it."""
    standin.drip_interval = 0.2  # < the 0.5 s read timeout; the 26-byte answer would take 5 s
    standin.set_fault(FaultMode.DRIP, methods={"getUpdates"})
    async with transport(standin) as client:
        with anyio.fail_after(4), pytest.raises(AttemptTimeoutError) as caught:
            await client.get_updates(None, timeout=0)
    assert caught.value.code == "TOTAL_TIMEOUT" and "no complete answer" in str(caught.value)
    assert standin.token not in str(caught.value)


async def test_a_huge_body_is_refused_not_read_whole(standin: TelegramStandIn) -> None:
    standin.huge_body_bytes = 32 * 1024 * 1024
    standin.set_fault(FaultMode.HUGE_BODY, methods={"getUpdates"})
    async with transport(standin, max_body_bytes=1024 * 1024) as client:
        with anyio.fail_after(10), pytest.raises(ResourceError) as caught:
            await client.get_updates(None, timeout=0)
        assert caught.value.code == "BODY_TOO_LARGE"
        standin.clear_fault()
        with anyio.fail_after(10):
            assert await client.get_updates(None, timeout=0) == []  # the next call is fine


async def test_a_dripping_getupdates_is_a_failed_round_for_the_poller_not_a_hang(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """The reported case: the poller hung for good while the status said healthy."""
    standin.drip_interval = 0.2
    standin.set_fault(FaultMode.DRIP, methods={"getUpdates"})
    store = await ResponseStore.open(tmp_path / ANSWERS_FILE)
    try:
        async with transport(standin) as client:
            pipelines = PipelineSet(fast_config(retry={"telegram": {"maxAttempts": 1}}))
            poller = ResponsePoller(store, client, updates_pipeline(pipelines), allowed_users=USERS, poll_timeout=0)
            with anyio.fail_after(10):
                delay = await poller._poll_guarded()
            assert delay > 0 and poller.consecutive_failures == 1
            assert poller.last_error is not None and "no complete answer" in poller.last_error
            standin.clear_fault()
            with anyio.fail_after(10):
                assert await poller._poll_guarded() == 0 and poller.consecutive_failures == 0
    finally:
        await store.close()
