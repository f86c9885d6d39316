"""``cctg-mcp hook``: Claude Code hook events become notifications, as a real subprocess with
real hook JSON on stdin, against the Telegram stand-in; with and without a running server.

A hook must never break the agent: exit 0 and an empty stdout in every case."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from helpers import USERS, clean_environ, fast_config, make_settings

from cctg_mcp.app import open_service
from cctg_mcp.commands.hook import DEFAULT_EVENTS, Notice, notice_for, parse_events
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.testing import FaultMode, TelegramStandIn

ALICE, BOB = USERS
SESSION = "3f6c1a52-9d2b-4b8e-a7c1-5e0f2d9b8a11"
NOTIFICATION = {
    "session_id": SESSION,
    "transcript_path": f"/home/ada/.claude/projects/shop/{SESSION}.jsonl",
    "cwd": "/home/ada/src/shop",
    "hook_event_name": "Notification",
    "message": "Claude needs your permission to use Bash",
    "title": "Claude Code",
}
STOP = {
    "session_id": SESSION,
    "transcript_path": f"/home/ada/.claude/projects/shop/{SESSION}.jsonl",
    "cwd": "/home/ada/src/shop",
    "hook_event_name": "Stop",
    "stop_hook_active": False,
}


def env_for(standin: TelegramStandIn | None, data_dir: Path, **extra: str) -> dict[str, str]:
    env = clean_environ()
    if standin is not None:
        env.update(standin.server_env(data_dir, USERS))
    else:
        env["CCTG_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def run_hook(stdin: bytes, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cctg_mcp", "hook", *args], input=stdin, env=env, capture_output=True, timeout=30
    )


async def hook(stdin: bytes, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.to_thread.run_sync(lambda: run_hook(stdin, env, *args))


async def pending(data_dir: Path) -> int:
    outbox = await Outbox.open(data_dir / "outbox.sqlite3")
    try:
        counts = await outbox.counts()
        return counts.pending + counts.in_flight
    finally:
        await outbox.close()


# ---- what is said about which event ---------------------------------------------------------


def test_stop_and_notification_become_notices_and_the_rest_is_filtered() -> None:
    stop = notice_for(STOP, DEFAULT_EVENTS)
    assert isinstance(stop, Notice) and stop.type == "task_completion"
    assert stop.title == "Claude Code finished in shop"
    assert "Folder: /home/ada/src/shop" in stop.description and "Session: 3f6c1a52" in stop.description
    note = notice_for(NOTIFICATION, DEFAULT_EVENTS)
    assert isinstance(note, Notice) and (note.title, note.priority) == ("Claude Code (shop)", "high")
    assert note.description.startswith("Claude needs your permission to use Bash")
    assert "stop_hook_active" in str(notice_for({**STOP, "stop_hook_active": True}, DEFAULT_EVENTS))
    assert "not in --events" in str(notice_for(STOP, ("Notification",)))
    assert "no hook_event_name" in str(notice_for({"cwd": "/x"}, DEFAULT_EVENTS))
    assert parse_events("Stop, SubagentStop,Bogus") == ("Stop", "SubagentStop")
    assert parse_events(None) == ("Stop", "Notification")


# ---- as Claude Code runs it -----------------------------------------------------------------

anyio_test = pytest.mark.anyio


@anyio_test
async def test_without_a_server_the_hook_delivers_itself(standin: TelegramStandIn, tmp_path: Path) -> None:
    done = await hook(json.dumps(NOTIFICATION).encode(), env_for(standin, tmp_path), "--limit", "20")
    assert (done.returncode, done.stdout) == (0, b""), done.stderr
    assert b"delivered" in done.stderr, done.stderr
    sent = sorted(standin.sent, key=lambda m: m.chat_id)
    assert [m.chat_id for m in sent] == [ALICE, BOB]
    assert "Claude needs your permission to use Bash" in sent[0].plain_text
    assert "Claude Code (shop)" in sent[0].plain_text
    assert await pending(tmp_path) == 0


@anyio_test
async def test_an_event_not_chosen_or_bad_input_sends_nothing_and_exits_0(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    env = env_for(standin, tmp_path)
    for stdin, args in (
        (json.dumps(STOP).encode(), ("--events", "Notification")),
        (b"{not json", ()),
        (b"[1, 2]", ()),
        (b"", ()),
        (json.dumps({**STOP, "stop_hook_active": True}).encode(), ()),
    ):
        done = await hook(stdin, env, *args)
        assert (done.returncode, done.stdout) == (0, b""), (stdin, done.stderr)
        assert b"nothing sent" in done.stderr, done.stderr
    assert standin.sent == []


@anyio_test
async def test_not_configured_exits_0_and_says_so_on_stderr(tmp_path: Path) -> None:
    done = await hook(json.dumps(STOP).encode(), env_for(None, tmp_path))
    assert (done.returncode, done.stdout) == (0, b"")
    assert b"not configured" in done.stderr and b"TELEGRAM_BOT_TOKEN" in done.stderr


@anyio_test
async def test_a_hanging_telegram_cannot_hold_the_hook_and_the_event_stays_queued(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    standin.set_fault(FaultMode.HANG, methods={"sendMessage"})
    done = await hook(json.dumps(STOP).encode(), env_for(standin, tmp_path), "--limit", "4")
    assert (done.returncode, done.stdout) == (0, b""), done.stderr
    assert b"queued" in done.stderr, done.stderr
    assert standin.hanging >= 1  # it returned while Telegram still held its request
    assert standin.sent == []
    assert await pending(tmp_path) == len(USERS)  # committed, waiting for a server


@asynccontextmanager
async def server(standin: TelegramStandIn, data_dir: Path) -> AsyncIterator[NotificationService]:
    async with open_service(make_settings(standin, data_dir), resilience=fast_config(), poll_timeout=1) as runtime:
        service = runtime.service
        yield service


@anyio_test
async def test_with_a_running_server_what_the_hook_could_not_send_is_delivered_by_it(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with server(standin, tmp_path):
        standin.set_fault(FaultMode.SERVER_ERROR, methods={"sendMessage"}, status=502)
        done = await hook(json.dumps(NOTIFICATION).encode(), env_for(standin, tmp_path), "--limit", "4")
        assert (done.returncode, done.stdout) == (0, b""), done.stderr
        assert b"queued" in done.stderr, done.stderr
        assert standin.sent == []
        standin.clear_fault()
        sent = await standin.await_messages(2, timeout=25)  # the server's dispatcher picks it up
        assert sorted(m.chat_id for m in sent) == [ALICE, BOB]
        assert all("Claude needs your permission to use Bash" in m.plain_text for m in sent)


def test_a_stdin_that_never_ends_cannot_hold_the_hook(standin: TelegramStandIn, tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "cctg_mcp", "hook"],
        env=env_for(standin, tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(STOP).encode())  # no end of file: the pipe stays open
        proc.stdin.flush()
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        out, err = proc.stdout.read(), proc.stderr.read()
    assert (code, out) == (0, b"")
    assert b"stdin did not end in time; nothing sent" in err
    assert standin.sent == []


def stored_priorities(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "outbox.sqlite3") as db:
        return [json.loads(row[0])["priority"] for row in db.execute("SELECT payload FROM events")]


@anyio_test
async def test_muted_the_hook_sends_nothing_and_the_event_stays_queued(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    (tmp_path / "bridge_mode.json").write_text('"Muted"')  # as /cct:mute or set_mode wrote it
    done = await hook(json.dumps(NOTIFICATION).encode(), env_for(standin, tmp_path), "--limit", "20")
    assert (done.returncode, done.stdout) == (0, b""), done.stderr
    assert b"queued (muted" in done.stderr and b"delivered" not in done.stderr, done.stderr
    assert standin.sent == []
    assert await pending(tmp_path) == len(USERS)  # waiting, unleased, for the mode to switch back
    (tmp_path / "bridge_mode.json").write_text('"Local"')  # local holds only what asks for an answer
    done = await hook(json.dumps(STOP).encode(), env_for(standin, tmp_path), "--limit", "20")
    assert b"delivered" in done.stderr, done.stderr
    assert len(standin.sent) == len(USERS)


@anyio_test
async def test_with_redis_coordination_the_hook_only_commits(standin: TelegramStandIn, tmp_path: Path) -> None:
    """The bot's budget lives in Redis then, which the hook does not join: sending on the data
    dir's local budget could break the limits the servers keep together. (Nothing listens on
    port 9: the hook must not even try Redis.)"""
    env = env_for(standin, tmp_path, CCTG_REDIS_URL="redis://127.0.0.1:9/0")
    done = await hook(json.dumps(STOP).encode(), env, "--limit", "20")
    assert (done.returncode, done.stdout) == (0, b""), done.stderr
    assert b"queued (Redis coordination" in done.stderr and b"delivered" not in done.stderr, done.stderr
    assert standin.sent == []
    assert await pending(tmp_path) == len(USERS)  # committed, unleased: a server sends it


@anyio_test
async def test_a_configured_event_priority_applies_to_hook_events(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = tmp_path / "resilience.json"
    config.write_text(json.dumps({"events": {"task_completion": {"priority": "critical"}}}))
    done = await hook(json.dumps(STOP).encode(), env_for(standin, tmp_path, CCTG_CONFIG=str(config)), "--limit", "20")
    assert b"delivered" in done.stderr, done.stderr
    done = await hook(json.dumps(NOTIFICATION).encode(), env_for(standin, tmp_path, CCTG_CONFIG=str(config)))
    # As the service gives: the configured priority, and for info_notification the default
    # table's (low), which the service's own info_notification gets too.
    assert sorted(stored_priorities(tmp_path)) == ["critical", "low"]


def test_the_watchdog_says_what_was_delivered_not_queued() -> None:
    script = (
        "import time\n"
        "from cctg_mcp.commands import hook\n"
        "hook._STATE.update(committed='e1', outcome='e1 chat 1: delivered')\n"
        "hook._watchdog(time.time())\n"
        "time.sleep(20)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    assert done.returncode == 0
    assert b"e1 chat 1: delivered (out of time while closing)" in done.stderr, done.stderr
    assert b"queued" not in done.stderr
