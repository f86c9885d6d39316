"""Many sessions, one bot: real ``cctg-mcp serve`` processes over stdio on one data dir.

The stand-in behaves as Telegram does for one bot: a per-chat flood limit without bursts,
and a 409 for an overlapped getUpdates reader. Several server processes share the data dir
(as Claude Code sessions do): they must send with no 429, read getUpdates with no 409,
deliver every accepted message exactly once, and hand each answer to the process that
waits for it. SIGKILL of the reader mid-drain: a live process takes over its rows (by
liveness, not by the 120 s lease) and the reading.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from helpers import WOKEN_S, Session, answers_reach_their_waiters, arrived, send_all, session_env, wait_for
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn


@pytest.fixture
def anyio_backend() -> str:
    """The servers are separate processes (one per backend in turn); the client runs once."""
    return "asyncio"


@asynccontextmanager
async def sessions(env: dict[str, str] | list[dict[str, str]], n: int, errlog: Any) -> AsyncIterator[list[Session]]:
    """``n`` server processes, started one after another (the first becomes the reader),
    alternating the asyncio and trio backends; ``env`` is every process's, or one per process."""
    envs = env if isinstance(env, list) else [env] * n
    async with AsyncExitStack() as stack:
        out: list[Session] = []
        for i in range(n):
            backend = ("asyncio", "trio")[i % 2]
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "cctg_mcp", "serve", "--backend", backend], env=envs[i]
            )
            # (bounded by the caller's fail_after: a scope here would not nest with the client's task group)
            client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
            session = Session(client, i)
            doc = await session.coordination()
            session.session_id = doc["session_id"]
            session.pid = next(s["pid"] for s in doc["sessions"] if s["session_id"] == doc["session_id"])
            out.append(session)
        yield out


@pytest.mark.anyio
@pytest.mark.parametrize("n", [2, 4])
async def test_sessions_share_one_budget_one_reader_and_every_answer(
    flood: TelegramStandIn, tmp_path: Path, errlog: IO[str], n: int
) -> None:
    with anyio.fail_after(240):
        async with sessions(session_env(flood, tmp_path / "data"), n, errlog) as group:
            docs = [await s.coordination() for s in group]
            assert {d["reader"] for d in docs} == {group[0].session_id}  # one reader, known to all
            assert sum(d["this_session_reads_updates"] for d in docs) == 1
            assert {s["session_id"] for s in docs[-1]["sessions"]} == {s.session_id for s in group}

            accepted = await send_all(group, 24 // n)
            await wait_for(lambda: accepted <= set(arrived(flood)), 60)
            latencies = await answers_reach_their_waiters(flood, group)
    counts = arrived(flood)
    assert len(accepted) == 24 and set(counts) == accepted  # 0 lost
    assert max(counts.values()) == 1, counts.most_common(3)  # 0 duplicates
    assert flood.rate_limited_count == 0  # the budget held across processes
    assert flood.getupdates_conflicts == 0  # one reader
    assert max(latencies) < WOKEN_S, latencies


@pytest.mark.anyio
async def test_the_control_sessions_that_share_nothing_are_refused(
    flood: TelegramStandIn, tmp_path: Path, errlog: IO[str]
) -> None:
    """The control for the test above: two sessions on separate data dirs (no shared budget)
    send at twice the limit between them, and the stand-in, one message of slack and all,
    answers 429. So 0 there is the shared budget's doing, not a lenient stand-in."""
    for i in range(2):
        (tmp_path / f"m{i}").mkdir()
    envs = [session_env(flood, tmp_path / f"m{i}" / "data") for i in range(2)]
    with anyio.fail_after(120):
        async with sessions(envs, 2, errlog) as group:
            await send_all(group, 6)
    assert flood.rate_limited_count > 0


@pytest.mark.anyio
async def test_sigkill_of_the_reader_mid_drain_moves_its_work(
    flood: TelegramStandIn, tmp_path: Path, errlog: IO[str]
) -> None:
    with anyio.fail_after(240):
        async with sessions(session_env(flood, tmp_path / "data"), 2, errlog) as (reader, other):
            flood.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
            accepted = await send_all([reader, other], 20)  # an outage: 40 queued for one chat
            flood.clear_fault()  # Telegram is back: both processes drain the backlog together
            await wait_for(lambda: len(arrived(flood)) >= 8, 60)
            os.kill(reader.pid, signal.SIGKILL)  # mid-drain, holding leased rows and the reader lock
            killed = time.monotonic()
            await wait_for(lambda: accepted <= set(arrived(flood)), 60)
            while (doc := await other.coordination())["reader"] != other.session_id:
                assert time.monotonic() - killed < 5, doc  # the reading moves within seconds
            assert doc["this_session_reads_updates"] and doc["peer_deaths_seen"] == 1
            assert [s["session_id"] for s in doc["sessions"]] == [other.session_id]
            (latency,) = await answers_reach_their_waiters(flood, [other])
    counts = arrived(flood)
    assert set(counts) == accepted  # 0 lost
    assert sum(c - 1 for c in counts.values()) <= 1, counts.most_common(3)  # at most the one in flight at the kill
    assert flood.rate_limited_count == 0
    assert latency < WOKEN_S


@pytest.mark.anyio
async def test_kill_9_and_restart_the_40_queued_events_go_out_without_waiting_for_the_lease(
    flood: TelegramStandIn, tmp_path: Path, errlog: IO[str]
) -> None:
    """One session, killed with 40 events queued (some leased by it), then started again:
    its old session's leases are released at start by liveness (the lease is the default
    120 s), and all 40 go out at the rate limit."""
    env = session_env(flood, tmp_path / "data")
    with anyio.fail_after(240):
        accepted: set[str] = set()
        try:
            async with sessions(env, 1, errlog) as (first,):
                flood.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
                accepted = await send_all([first], 40)
                os.kill(first.pid, signal.SIGKILL)
        except Exception:  # the killed server's client may fail on the way out; that is the point
            pass
        assert len(accepted) == 40
        flood.clear_fault()
        async with sessions(env, 1, errlog) as (second,):
            restarted = time.monotonic()  # the new process is up
            await wait_for(lambda: accepted <= set(arrived(flood)), 60)
            took = time.monotonic() - restarted
            doc = await second.coordination()
    counts = arrived(flood)
    assert set(counts) == accepted and max(counts.values()) == 1  # 0 lost, 0 duplicates
    assert flood.rate_limited_count == 0
    # Not the lease: liveness released the old rows (waiting out the lease would take 120 s).
    # The drain itself is ~14 s at this rate; its speed is the bench's business, not a test's.
    assert doc["lease_seconds"] >= 120 and took < doc["lease_seconds"], took


@pytest.mark.anyio
async def test_a_follower_does_not_claim_the_answers_it_did_not_check(
    flood: TelegramStandIn, tmp_path: Path, errlog: IO[str]
) -> None:
    with anyio.fail_after(120):
        # (health monitoring on: with it off the verdict is "unknown", not a check that passed)
        env = {**session_env(flood, tmp_path / "data"), "HEALTH_CHECK_ENABLED": "true"}
        async with sessions(env, 2, errlog) as (reader, follower):
            lead = await reader.call("get_resilience_status", {"refresh": True})
            follow = await follower.call("get_resilience_status", {"refresh": True})
    assert lead["answers"]["healthy"] is True and lead["answers"]["following"] is False
    assert lead["answers"]["reader"] is None
    answers = follow["answers"]
    assert answers["following"] is True and answers["poller_running"] is False
    assert answers["healthy"] is None  # it did not look: not "healthy"
    assert answers["reader"] == reader.session_id  # what it knows: who does read them
    assert follow["overall"] == lead["overall"] == "healthy"  # sessions agree on the verdict ...
    # ... and the follower says its answers were not a check it ran
    assert (
        follow["verdict_reason"]
        == "every health check passed; answers are read by another session (not checked by this one)"
    )
    assert lead["verdict_reason"] == "every health check passed"
