"""Crash safety: the real ``cctg-mcp serve`` (stdio, official client) killed with SIGKILL.

Three kill points on one data dir: mid-stream after a few sends, while Telegram (the stand-in)
hangs a request, and right after a tool answered ``queued``. After the last restart every
accepted message arrives: 0 lost, and duplicates only for messages the stand-in took in the
instant of a kill (at most one per kill: one recipient, one send at a time). Leases are short
(CCTG_LEASE_SECONDS=5) so the restarted server does not wait the default 120 s.

Also: a corrupt outbox file stops start-up with a message naming the file and what to do,
and the file is left as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from helpers import FAST, text_of, wait_for
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn

USER = 111


@pytest.fixture
def anyio_backend() -> str:
    """The servers alternate between asyncio and trio across the restarts of one run, so
    the (slow: four server start-ups) test runs once, its client on asyncio."""
    return "asyncio"


def server_env(standin: TelegramStandIn, data_dir: Path, **extra: str) -> dict[str, str]:
    config = data_dir.parent / f"{data_dir.name}-resilience.json"
    config.write_text(json.dumps(FAST))
    return {
        **standin.server_env(data_dir, [USER]),
        "CCTG_ENVIRONMENT": "development",
        "CCTG_CONFIG": str(config),
        "CCTG_LEASE_SECONDS": "5",
        "CCTG_RATE_PER_CHAT": "1000",
        "CCTG_RATE_PER_CHAT_BURST": "1000",
        "HEALTH_CHECK_ENABLED": "false",
        **extra,
    }


def params(env: dict[str, str], backend: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "cctg_mcp", "serve", "--backend", backend], env=env
    )


def server_pid() -> int:
    """The ``cctg_mcp serve`` child of this test process (the stdio client spawned it)."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and b"cctg_mcp" in cmdline and b"serve" in cmdline:
            return int(entry.name)
    raise AssertionError("the server process was not found")


class Run:
    """Sends numbered messages through one server and remembers what was accepted."""

    def __init__(self, standin: TelegramStandIn, env: dict[str, str], backend: str, stderr: Any) -> None:
        self.standin, self.env, self.backend, self.stderr = standin, env, backend, stderr
        self.accepted: set[str] = set()  # the tool answered delivered or queued
        self.committed: set[str] = set()  # known to be in the outbox although the call never answered
        self.statuses: list[str] = []
        self.kills = 0
        self.serial = 0

    async def session(self, during: Any) -> None:
        """Start the server, run ``during(client, tg)``; it ends by killing the server (or not)."""
        try:
            server = stdio_client(params(self.env, self.backend), errlog=self.stderr)
            async with Client(server) as client, anyio.create_task_group() as tg:
                await during(client, tg)
        except BaseException as exc:  # the killed server's client fails; that is the point
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                raise

    async def send(self, client: Client) -> str:
        text = f"crash-test message {self.serial:03d}"
        self.serial += 1
        result = await client.call_tool("send_telegram_message", {"message": text})
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        self.statuses.append(result.structured_content["status"])
        self.accepted.add(text)
        return text

    def kill(self) -> None:
        os.kill(server_pid(), signal.SIGKILL)
        self.kills += 1

    def arrived(self) -> Counter[str]:
        return Counter(m.plain_text.split("\n\n")[1] for m in self.standin.sent if "crash-test" in m.plain_text)


@pytest.mark.anyio
async def test_sigkill_at_three_points_loses_nothing(standin: TelegramStandIn, tmp_path: Path, errlog: IO[str]) -> None:
    run = Run(standin, server_env(standin, tmp_path / "data"), "asyncio", errlog)

    async def mid_stream(client: Client, tg: Any) -> None:
        async def stream() -> None:
            for _ in range(200):
                await run.send(client)

        tg.start_soon(stream)
        await wait_for(lambda: len(standin.sent) >= 4, 30, "four deliveries")
        run.kill()

    async def while_telegram_hangs(client: Client, tg: Any) -> None:
        await run.send(client)  # the server is up and delivering
        standin.set_fault(FaultMode.HANG, methods={"sendMessage"})
        hung = f"crash-test message {run.serial:03d}"
        tg.start_soon(run.send, client)
        await wait_for(lambda: standin.hanging >= 1, 30, "a hanging sendMessage")
        run.committed.add(hung)  # sending starts only after the outbox commit
        run.kill()
        standin.clear_fault()  # the hung request now completes at the stand-in: a possible duplicate

    async def right_after_queued(client: Client, tg: Any) -> None:
        standin.set_fault(FaultMode.SERVER_ERROR, status=502, methods={"sendMessage"})
        await run.send(client)
        assert run.statuses[-1] == "queued"
        run.kill()
        standin.clear_fault()

    async def drain(client: Client, tg: Any) -> None:
        expected = run.accepted | run.committed
        await wait_for(lambda: expected <= set(run.arrived()), 60, "every accepted message")

    with anyio.fail_after(150):
        for phase in (mid_stream, while_telegram_hangs, right_after_queued, drain):
            await run.session(phase)
            run.backend = "trio" if run.backend == "asyncio" else "asyncio"  # both server backends, in turn
    arrived = run.arrived()
    lost = (run.accepted | run.committed) - set(arrived)
    duplicates = sum(n - 1 for n in arrived.values())
    assert run.kills == 3 and len(run.accepted) >= 5
    assert not lost, f"lost after SIGKILL: {sorted(lost)}"
    assert duplicates <= run.kills, arrived.most_common(5)
    assert {m.chat_id for m in standin.sent} == {USER}


def test_a_corrupt_outbox_stops_start_up_naming_the_file(standin: TelegramStandIn, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    garbage = b"not a database, but maybe someone's undelivered events " * 50
    (data / "outbox.sqlite3").write_bytes(garbage)
    env = {**server_env(standin, data), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "cctg_mcp", "serve"],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert str(data / "outbox.sqlite3") in stderr, stderr
    assert "Nothing was deleted" in stderr and "CCTG_DATA_DIR" in stderr, stderr
    assert (data / "outbox.sqlite3").read_bytes() == garbage  # never a silent reset
    assert standin.token not in stderr


def test_an_unreadable_outbox_is_an_error_too(standin: TelegramStandIn, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    data = tmp_path / "data"
    data.mkdir()
    (data / "outbox.sqlite3").write_bytes(b"")
    (data / "outbox.sqlite3").chmod(0)
    env = {**server_env(standin, data), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "cctg_mcp", "serve"],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and str(data / "outbox.sqlite3") in result.stderr.decode()
