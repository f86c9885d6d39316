"""LocalCoordinator: liveness, the one reader, shared budgets and the answers signal.

Two coordinators on one data dir in one process see each other as two processes do
(``flock`` locks belong to open file descriptions); the SIGKILL cases use a real child
process. Budget times are given explicitly (virtual time).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from helpers import reader_process

from cctg_mcp.delivery.coordination import BucketSpec, Coordinator
from cctg_mcp.delivery.local_coordination import LocalCoordinator

pytestmark = pytest.mark.anyio

CHAT = BucketSpec("chat:7", rate=1.0, burst=1.0)
GLOBAL = BucketSpec("global", rate=30.0, burst=30.0)


@asynccontextmanager
async def coordinator(data_dir: Path, **kwargs: float) -> AsyncIterator[LocalCoordinator]:
    c = LocalCoordinator(data_dir, answers_path=data_dir / "answers.sqlite3", **kwargs)  # type: ignore[arg-type]
    await c.start()
    try:
        yield c
    finally:
        await c.aclose()


async def test_it_is_a_coordinator(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as c:
        assert isinstance(c, Coordinator)


async def test_sessions_see_each_other_and_a_closed_one_is_gone(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as a:
        async with coordinator(tmp_path) as b:
            ids = {s.session_id for s in await a.sessions()}
            assert ids == {a.session_id, b.session_id}
            assert all(s.pid == os.getpid() for s in await b.sessions())
            gone = "s1-0123abcd"
            assert await a.dead_among([b.session_id, gone, "hook-0123456789ab"]) == {gone}  # a hook: its lease
        assert {s.session_id for s in await a.sessions()} == {a.session_id}


async def test_one_reader_and_failover_when_it_closes(tmp_path: Path) -> None:
    async with coordinator(tmp_path, lead_retry_s=0.02) as a, coordinator(tmp_path, lead_retry_s=0.02) as b:
        with anyio.fail_after(5):
            await a.lead()
        assert a.is_leader() and not b.is_leader()
        assert await b.leader() == a.session_id
        led = anyio.Event()

        async def follow() -> None:
            await b.lead()
            led.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            assert not b.is_leader()  # a still holds the reader lock
            await a.aclose()
            with anyio.fail_after(5):
                await led.wait()
        assert await b.leader() == b.session_id


@pytest.fixture
def child(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real process that joins the data dir, takes the reader lock and prints its id."""
    with reader_process(tmp_path) as found:
        yield found


async def test_a_sigkilled_peer_is_dead_at_once_and_its_leadership_moves(
    tmp_path: Path, child: tuple[subprocess.Popen[str], str]
) -> None:
    proc, sid = child
    async with coordinator(tmp_path, lead_retry_s=0.02, liveness_interval_s=0.02) as a:
        died = anyio.Event()
        a.add_death_listener(died.set)
        assert await a.dead_among([sid]) == set()
        assert await a.leader() == sid
        os.kill(proc.pid, signal.SIGKILL)
        await anyio.to_thread.run_sync(proc.wait)
        assert await a.dead_among([sid]) == {sid}
        async with anyio.create_task_group() as tg:
            await tg.start(a.run)
            with anyio.fail_after(5):
                await a.lead()
                await died.wait()
            tg.cancel_scope.cancel()
        assert a.peer_deaths == 1
        assert {s.session_id for s in await a.sessions()} == {a.session_id}


async def test_buckets_are_shared_and_atomic(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as a, coordinator(tmp_path) as b:
        assert (await a.take([CHAT, GLOBAL], now=100.0)).wait == 0.0
        blocked = await b.take([CHAT, GLOBAL], now=100.0)
        assert blocked.wait == pytest.approx(1.0)  # the other process used the chat's token
        assert (await b.take([GLOBAL], now=100.0)).wait == 0.0  # all or none: global was not taken above
        state = await a.budget(now=100.0)
        assert state["global_tokens_at_last_send"] == pytest.approx(28.0)
        assert state["chat_buckets"] == 1
        assert (await b.take([CHAT, GLOBAL], now=101.0)).wait == 0.0
        await b.give_back([CHAT, GLOBAL], now=101.0)  # never sent: the slot comes back
        assert (await a.take([CHAT, GLOBAL], now=101.0)).wait == 0.0


async def test_the_need_margin_is_kept(tmp_path: Path) -> None:
    spec = BucketSpec("chat:9", rate=1.0, burst=1.0, need=1.25)
    async with coordinator(tmp_path) as a:
        assert (await a.take([spec], now=10.0)).wait == 0.0  # the burst is the need: 1.25, one taken
        assert (await a.take([spec], now=10.5)).wait == pytest.approx(0.5)  # 0.75 held, 1.25 needed
        assert (await a.take([spec], now=11.0)).wait == 0.0


async def test_a_429_pause_holds_every_process(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as a, coordinator(tmp_path) as b:
        await a.pause(5.0, now=200.0)
        held = await b.take([GLOBAL], now=201.0)
        assert held.wait == pytest.approx(4.0) and held.paused_s == pytest.approx(4.0)
        await b.pause(1.0, now=201.0)  # a shorter pause never shortens a longer one
        assert (await a.take([GLOBAL], now=204.5)).paused_s == pytest.approx(0.5)
        assert (await a.take([GLOBAL], now=205.0)).wait == 0.0
        state = await b.budget(now=205.0)
        assert state["pauses"] == 2 and state["paused_for_s"] == 0.0
        await a.pause(60.0, now=300.0)
        assert await b.end_pause(now=310.0) == pytest.approx(50.0)  # trigger_recovery ends it for all
        assert (await a.take([GLOBAL], now=310.0)).wait == 0.0
        assert await a.end_pause(now=310.0) == 0.0


async def test_state_from_before_a_reboot_does_not_stall(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as a:
        await a.pause(60.0, now=1e6)
        for _ in range(2):
            await a.take([CHAT], now=1e6)
        # The monotonic clock restarts at boot: times far ahead of now are from before it.
        assert (await a.take([CHAT], now=50.0)).wait == 0.0


async def test_an_answer_stored_by_another_process_wakes_the_waiter(tmp_path: Path) -> None:
    answers = tmp_path / "answers.sqlite3"
    writer = sqlite3.connect(answers, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE responses (id INTEGER PRIMARY KEY)")
    try:
        async with coordinator(tmp_path, change_interval_s=0.02) as a, anyio.create_task_group() as tg:
            await tg.start(a.run)
            changed = a.answers_changed()
            await anyio.sleep(0.1)  # a few rounds of the watcher with nothing new
            assert not changed.is_set()
            writer.execute("INSERT INTO responses DEFAULT VALUES")
            with anyio.fail_after(5):
                await changed.wait()
            assert a.answers_changed() is not changed  # the next waiter gets a fresh event
            tg.cancel_scope.cancel()
    finally:
        writer.close()


async def test_describe_names_sessions_reader_and_budget(tmp_path: Path) -> None:
    async with coordinator(tmp_path) as a, coordinator(tmp_path) as b:
        with anyio.fail_after(5):
            await b.lead()
        doc = await a.describe(now=1.0)
        assert doc["reader"] == b.session_id and not doc["this_session_reads_updates"]
        assert {s["session_id"] for s in doc["sessions"]} == {a.session_id, b.session_id}
        assert doc["budget"]["paused_for_s"] == 0.0
