"""Graceful shutdown: stdin closing or SIGTERM stops the server with exit code 0; deliveries in
progress get a bounded time (the resilience config's ``recovery.gracefulShutdownTimeout``, 30 s
by default, or ``open_service(shutdown_grace=...)``), and what is not done by then goes back to
pending, so no row is left ``in_flight`` (leased) in the file.

The process tests speak raw JSON-RPC over the child's pipes (the official client owns and reaps
its child, so it cannot report the exit code).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from helpers import INIT, USERS, fast_config, make_settings, wait_for

from cctg_mcp.app import open_service
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.events.catalogue import Event
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio


def statuses(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall())


async def rpc(proc: Process, message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    await proc.stdin.send((json.dumps(message) + "\n").encode())


async def read_response(proc: Process, request_id: int) -> dict[str, Any]:
    assert proc.stdout is not None
    buffer = b""
    while True:
        buffer += await proc.stdout.receive()
        for line in buffer.split(b"\n"):
            if line.strip():
                message = json.loads(line)
                if message.get("id") == request_id:
                    return dict(message)


@pytest.mark.parametrize(("how", "backend"), [("stdin-close", "trio"), ("sigterm", "asyncio")])
async def test_shutdown_exits_0_and_leaves_no_leased_rows(
    standin: TelegramStandIn,
    tmp_path: Path,
    how: str,
    backend: str,
    anyio_backend: str,
    request: pytest.FixtureRequest,
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("one client backend is enough: the server backend is the parameter")
    env = {
        "PATH": os.environ.get("PATH", ""),
        **standin.server_env(tmp_path, USERS, CCTG_ENVIRONMENT="development", HEALTH_CHECK_ENABLED="false"),
        "CCTG_CONFIG": str(tmp_path / "resilience.json"),
    }
    (tmp_path / "resilience.json").write_text(json.dumps({"recovery": {"gracefulShutdownTimeout": 1500}}))
    stderr = (tmp_path / "stderr.log").open("wb")
    request.addfinalizer(stderr.close)
    command = [sys.executable, "-m", "cctg_mcp", "serve", "--backend", backend]
    with anyio.fail_after(60):
        async with await anyio.open_process(command, env=env, stderr=stderr) as proc:
            await rpc(proc, INIT)
            assert "result" in await read_response(proc, 1)
            await rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            standin.set_fault(FaultMode.HANG, methods={"sendMessage"})
            await rpc(
                proc,
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "send_telegram_message", "arguments": {"message": "in flight at shutdown"}},
                },
            )
            await wait_for(lambda: standin.hanging >= 1, 30)
            assert statuses(tmp_path / "outbox.sqlite3").get("in_flight") == len(USERS)
            started = time.monotonic()
            if how == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                assert proc.stdin is not None
                await proc.stdin.aclose()
            code = await proc.wait()
            took = time.monotonic() - started
    standin.stop()  # release the hung requests without them being served
    log = (tmp_path / "stderr.log").read_text()
    assert code == 0, log[-2000:]
    assert took < 15, took
    assert statuses(tmp_path / "outbox.sqlite3") == {"pending": len(USERS)}, log[-2000:]
    assert "shutting down" in log and standin.token not in log


async def test_a_delivery_in_progress_may_finish_within_the_grace(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path)
    event = Event(event_id="graceful-1", type="info_notification", title="t", description="finishing", task_id="g1")
    config = fast_config(recovery={"gracefulShutdownTimeout": 5000})  # the seed's key bounds the drain
    async with open_service(settings, resilience=config) as runtime:
        service = runtime.service
        assert service.outbox is not None and service.dispatcher is not None
        standin.set_fault(FaultMode.HANG, methods={"sendMessage"})
        await service.outbox.enqueue(event, list(USERS))
        service.dispatcher.wake()
        await wait_for(lambda: standin.hanging >= 1, 10)
        threading.Timer(0.3, standin.clear_fault).start()  # Telegram answers while we shut down
    box = await Outbox.open(settings.outbox_path)
    try:
        assert {d.status for d in await box.deliveries("graceful-1")} == {"delivered"}
    finally:
        await box.close()
    assert len(standin.sent) == len(USERS)


async def test_the_grace_is_bounded_and_the_rest_stays_pending(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path)
    event = Event(event_id="graceful-2", type="info_notification", title="t", description="stuck", task_id="g2")
    config = fast_config(recovery={"gracefulShutdownTimeout": 300})
    async with open_service(settings, resilience=config) as runtime:
        service = runtime.service
        assert service.outbox is not None and service.dispatcher is not None
        standin.set_fault(FaultMode.HANG, methods={"sendMessage"})
        await service.outbox.enqueue(event, list(USERS))
        service.dispatcher.wake()
        await wait_for(lambda: standin.hanging >= 1, 10)
        started = time.monotonic()
    took = time.monotonic() - started
    assert took < 3.0, took
    box = await Outbox.open(settings.outbox_path)
    try:
        assert {d.status for d in await box.deliveries("graceful-2")} == {"pending"}
    finally:
        await box.close()
