"""Many sessions, one bot: real ``cctg-mcp serve`` processes over stdio on one data dir.

The stand-in behaves as Telegram does for one bot: a per-chat flood limit without bursts,
and a 409 for an overlapped getUpdates reader. Several server processes share the data dir
(as Claude Code sessions do): they must send with no 429, read getUpdates with no 409,
deliver every accepted message exactly once, and hand each answer to the process that
waits for it. SIGKILL of the reader mid-drain: a live process takes over its rows (by
liveness, not by the 120 s lease) and the reading.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import FAST, text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn

USER = 111
RATE = 4  # messages per second per chat, at the stand-in and in the servers' pacing


@pytest.fixture
def anyio_backend() -> str:
    """The servers are separate processes (one per backend in turn); the client runs once."""
    return "asyncio"


@pytest.fixture
def flood() -> Any:
    with TelegramStandIn(flood_limits=True, per_chat_per_second=RATE, per_chat_burst=1) as standin:
        yield standin


def env_for(standin: TelegramStandIn, data_dir: Path) -> dict[str, str]:
    config = data_dir.parent / "resilience.json"
    config.write_text(json.dumps(FAST))
    return {
        **standin.server_env(data_dir, [USER]),
        "CCTG_ENVIRONMENT": "development",
        "CCTG_CONFIG": str(config),
        "CCTG_RATE_PER_CHAT": str(RATE),
        "CCTG_RATE_PER_CHAT_BURST": "1",
        "HEALTH_CHECK_ENABLED": "false",
    }


class Session:
    def __init__(self, client: Client, index: int) -> None:
        self.client, self.index = client, index
        self.session_id = ""
        self.pid = 0

    async def call(self, tool: str, args: dict[str, Any], limit: float = 30) -> dict[str, Any]:
        with anyio.fail_after(limit):
            result = await self.client.call_tool(tool, args)
        assert not result.is_error, text_of(result)
        content: dict[str, Any] | None = result.structured_content
        assert content is not None
        return content

    async def coordination(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.call("get_resilience_status", {}))["coordination"]
        return doc


@asynccontextmanager
async def sessions(env: dict[str, str], n: int, errlog: Any) -> AsyncIterator[list[Session]]:
    """``n`` server processes, started one after another (the first becomes the reader),
    alternating the asyncio and trio backends."""
    async with AsyncExitStack() as stack:
        out: list[Session] = []
        for i in range(n):
            backend = ("asyncio", "trio")[i % 2]
            params = StdioServerParameters(
                command=sys.executable, args=["-m", "cctg_mcp", "serve", "--backend", backend], env=env
            )
            # (bounded by the caller's fail_after: a scope here would not nest with the client's task group)
            client = await stack.enter_async_context(Client(stdio_client(params, errlog=errlog)))
            session = Session(client, i)
            doc = await session.coordination()
            session.session_id = doc["session_id"]
            session.pid = next(s["pid"] for s in doc["sessions"] if s["session_id"] == doc["session_id"])
            out.append(session)
        yield out


def arrived(standin: TelegramStandIn) -> Counter[str]:
    return Counter(m.plain_text.split("\n\n")[1] for m in standin.sent if "multi-session" in m.plain_text)


async def wait_for(predicate: Any, limit: float) -> None:
    """Poll state the stand-in's threads change, bounded by ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.02)


async def send_all(group: list[Session], per_session: int) -> set[str]:
    accepted: set[str] = set()

    async def one(session: Session) -> None:
        for k in range(per_session):
            text = f"multi-session {session.index}-{k:02d}"
            sent = await session.call("send_telegram_message", {"message": text})
            assert sent["status"] in ("delivered", "queued"), sent
            accepted.add(text)

    async with anyio.create_task_group() as tg:
        for session in group:
            tg.start_soon(one, session)
    return accepted


async def answers_reach_their_waiters(standin: TelegramStandIn, group: list[Session]) -> list[float]:
    """Every session asks for approval and waits; each press reaches the one that asked.
    Returns the seconds from each press to its waiter's answer."""
    events: list[str] = []
    keyboards = [m.reply_markup for m in standin.messages_for(USER) if m.reply_markup]
    for session in group:
        sent = await session.call("send_approval_request", {"title": f"Deploy {session.index}?", "description": "x"})
        events.append(sent["event_id"])
    await wait_for(lambda: sum(bool(m.reply_markup) for m in standin.messages_for(USER)) == len(group), 30)
    assert not keyboards
    buttons = [
        [b["callback_data"] for row in m.reply_markup["inline_keyboard"] for b in row]
        for m in standin.messages_for(USER)
        if m.reply_markup
    ]
    latencies: list[float] = []
    for session, event_id, (approve, _deny) in zip(group, events, buttons, strict=True):
        result: list[dict[str, Any]] = []

        async def waiter(s: Session = session, e: str = event_id, r: list[dict[str, Any]] = result) -> None:
            r.append(await s.call("wait_for_response", {"event_id": e, "timeout_seconds": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.3)  # let the call reach the server and wait there (checked below)
            assert not result
            pressed = time.monotonic()
            standin.push_callback(USER, approve)
            with anyio.fail_after(10):
                while not result:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            latencies.append(time.monotonic() - pressed)
        (answer,) = result
        assert (answer["status"], answer["action"]) == ("answered", "approve"), answer
        assert answer["response"]["event_id"] == event_id
        assert answer["waited_seconds"] >= 0.2  # it was waiting before the press: woken, not found
    return latencies


@pytest.mark.anyio
@pytest.mark.parametrize("n", [2, 4])
async def test_sessions_share_one_budget_one_reader_and_every_answer(
    flood: TelegramStandIn, tmp_path: Path, request: pytest.FixtureRequest, n: int
) -> None:
    errlog = (tmp_path / "stderr.log").open("w")
    request.addfinalizer(errlog.close)
    with anyio.fail_after(240):
        async with sessions(env_for(flood, tmp_path / "data"), n, errlog) as group:
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
    assert max(latencies) < 0.5, latencies


@pytest.mark.anyio
async def test_sigkill_of_the_reader_mid_drain_moves_its_work(
    flood: TelegramStandIn, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    errlog = (tmp_path / "stderr.log").open("w")
    request.addfinalizer(errlog.close)
    with anyio.fail_after(240):
        async with sessions(env_for(flood, tmp_path / "data"), 2, errlog) as (reader, other):
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
    assert latency < 0.5


@pytest.mark.anyio
async def test_kill_9_and_restart_the_40_queued_events_go_out_without_waiting_for_the_lease(
    flood: TelegramStandIn, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """One session, killed with 40 events queued (some leased by it), then started again:
    its old session's leases are released at start by liveness (the lease is the default
    120 s), and all 40 go out at the rate limit."""
    errlog = (tmp_path / "stderr.log").open("w")
    request.addfinalizer(errlog.close)
    env = env_for(flood, tmp_path / "data")
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
    flood: TelegramStandIn, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    errlog = (tmp_path / "stderr.log").open("w")
    request.addfinalizer(errlog.close)
    with anyio.fail_after(120):
        async with sessions(env_for(flood, tmp_path / "data"), 2, errlog) as (reader, follower):
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
