"""A hostile world, slow and huge peers: a Telegram that drips bytes or answers 200 MB.

The real transport against the real stand-in over loopback HTTP (its DRIP and HUGE_BODY
faults); short timeouts so the bound shows in a second, not a minute."""

from __future__ import annotations

import anyio
import pytest

from cctg_mcp.resilience.errors import AttemptTimeoutError, ResourceError
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
