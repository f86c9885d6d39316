"""Many machines, one bot: ``cctg-mcp serve`` processes with separate data dirs sharing one
real ``redis-server`` (``CCTG_REDIS_URL``), against the stand-in's per-chat flood limits and
its 409 for an overlapped getUpdates reader.

The servers run on asyncio (redis-py's asyncio client); ``--backend trio`` with Redis is
refused at start-up, which is tested here too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from helpers import USER, WOKEN_S, Session, answers_reach_their_waiters, arrived, send_all, session_env, wait_for
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.testing.redis_server import redis_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the servers are separate processes; redis-py runs on asyncio


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as url:
        yield url


@asynccontextmanager
async def machines(standin: TelegramStandIn, root: Path, url: str, n: int, errlog: Any) -> AsyncIterator[list[Session]]:
    """``n`` server processes, each with its own data dir (its own machine), one Redis."""
    async with AsyncExitStack() as stack:
        out: list[Session] = []
        for i in range(n):
            (root / f"machine{i}").mkdir(exist_ok=True)
            env = {**session_env(standin, root / f"machine{i}" / "data"), "CCTG_REDIS_URL": url}
            params = StdioServerParameters(command=sys.executable, args=["-m", "cctg_mcp", "serve"], env=env)
            client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
            session = Session(client, i)
            doc = await session.coordination()
            assert doc["kind"] == "redis", doc
            session.session_id = doc["session_id"]
            session.pid = next(s["pid"] for s in doc["sessions"] if s["session_id"] == doc["session_id"])
            out.append(session)
        yield out


@pytest.mark.anyio
async def test_three_machines_share_one_budget_one_reader_and_every_answer(
    flood: TelegramStandIn, tmp_path: Path, redis_url: str, errlog: IO[str]
) -> None:
    with anyio.fail_after(240):
        async with machines(flood, tmp_path, redis_url, 3, errlog) as group:
            docs = [await s.coordination() for s in group]
            assert {d["reader"] for d in docs} == {group[0].session_id}  # one reader, seen from every machine
            assert sum(d["this_session_reads_updates"] for d in docs) == 1
            assert {s["session_id"] for s in docs[-1]["sessions"]} == {s.session_id for s in group}
            accepted = await send_all(group, 8)
            await wait_for(lambda: accepted <= set(arrived(flood)), 60)
            # Each machine asks; the press is read by machine 0 and reaches the machine that asked.
            latencies = await answers_reach_their_waiters(flood, group)
    counts = arrived(flood)
    assert len(accepted) == 24 and set(counts) == accepted  # 0 lost
    assert max(counts.values()) == 1, counts.most_common(3)  # 0 duplicates
    assert flood.rate_limited_count == 0  # the budget held across machines
    assert flood.getupdates_conflicts == 0  # one reader
    assert max(latencies) < WOKEN_S, latencies
    log = (tmp_path / "stderr.log").read_text()
    assert flood.token not in log and "redis://" not in log.replace(redis_url, "")


@pytest.mark.anyio
async def test_sigkill_of_the_reading_machine_hands_over_within_the_lease(
    flood: TelegramStandIn, tmp_path: Path, redis_url: str, errlog: IO[str]
) -> None:
    with anyio.fail_after(240):
        async with machines(flood, tmp_path, redis_url, 2, errlog) as (reader, other):
            os.kill(reader.pid, signal.SIGKILL)
            killed = time.monotonic()
            while (doc := await other.coordination())["reader"] != other.session_id:
                assert time.monotonic() - killed < 12, doc  # the 10 s lease, and a heartbeat
                await anyio.sleep(0.2)
            assert doc["this_session_reads_updates"]
            (latency,) = await answers_reach_their_waiters(flood, [other])
    # (the killed reader's long poll may still be open at the stand-in when the new reader
    # starts: one 409 then is Telegram's behaviour too, and the new reader goes on)
    assert latency < WOKEN_S and flood.getupdates_conflicts <= 1


@pytest.mark.anyio
async def test_redis_restarted_mid_drain_loses_nothing(flood: TelegramStandIn, tmp_path: Path, errlog: IO[str]) -> None:
    (tmp_path / "redis").mkdir()
    with anyio.fail_after(240):
        redis = redis_server(tmp_path / "redis")
        url = redis.__enter__()
        try:
            async with machines(flood, tmp_path, url, 2, errlog) as group:
                flood.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
                accepted = await send_all(group, 10)  # an outage: 20 queued
                flood.clear_fault()
                await wait_for(lambda: len(arrived(flood)) >= 4, 60)
                redis.__exit__(None, None, None)  # Redis goes away mid-drain ...
                port = url.rsplit(":", 1)[1].split("/")[0]
                status = await group[1].call("get_resilience_status", {})
                assert status["coordination"]["kind"] == "redis"
                redis = redis_server(tmp_path / "redis", port=int(port))  # ... and comes back on its port
                url = redis.__enter__()
                await wait_for(lambda: accepted <= set(arrived(flood)), 90)
        finally:
            redis.__exit__(None, None, None)
    counts = arrived(flood)
    assert set(counts) == accepted  # 0 lost
    assert flood.rate_limited_count == 0


def test_trio_backend_is_refused_with_redis(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TELEGRAM_BOT_TOKEN": "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi",
        "TELEGRAM_ALLOWED_USERS": str(USER),
        "CCTG_DATA_DIR": str(tmp_path / "data"),
        "CCTG_REDIS_URL": "redis://:pw-secret@127.0.0.1:9/0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cctg_mcp", "serve", "--backend", "trio"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "CCTG_REDIS_URL" in done.stderr and "asyncio only" in done.stderr
    assert "pw-secret" not in done.stderr
