"""Shared fixtures. Every async test runs on both anyio backends (asyncio and trio)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from helpers import FAKE_BRIDGE, RATE, FakeBridge, free_port

from cctg_mcp.testing import TelegramStandIn


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def standin() -> Iterator[TelegramStandIn]:
    """The Telegram Bot API stand-in on 127.0.0.1 (real HTTP), stopped after the test."""
    with TelegramStandIn() as server:
        yield server


@pytest.fixture
def fake_bridge(tmp_path: Path) -> Iterator[FakeBridge]:
    """A stand-in bridge executable in tmp_path (serves /health, consumes event files); any
    process it left behind is killed."""
    script = tmp_path / "fake-cctelegram-bridge"
    script.write_text(FAKE_BRIDGE.format(python=sys.executable))
    script.chmod(0o755)
    bridge = FakeBridge(tmp_path, script, free_port(), tmp_path / "processed.jsonl", tmp_path / "data" / "events")
    yield bridge
    for pid_file in tmp_path.rglob("bridge.pid"):  # never leave a process behind, whatever failed
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def flood() -> Iterator[TelegramStandIn]:
    """The stand-in with Telegram's per-chat flood limit, for several server processes pacing
    at ``RATE`` with no burst (``CCTG_RATE_PER_CHAT_BURST=1``, see ``session_env``).

    It admits one message early (burst 2): Telegram counts arrivals, the servers count
    departures, and on a loaded 2-core runner the gap between them passed the pacer's 0.1 s
    spacing (one 429 in 28 in a CI run). That slack does not hide a budget that is not shared:
    n processes pacing alone send at n x RATE, and 429s follow within a second."""
    with TelegramStandIn(flood_limits=True, per_chat_per_second=RATE, per_chat_burst=2) as standin:
        yield standin


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[IO[str]]:
    """Where the server processes a test starts write their stderr: tmp_path/stderr.log."""
    with (tmp_path / "stderr.log").open("w") as log:
        yield log
