"""A hostile world, storage: the data directory deleted under the running server, a full
disk, a database locked by another process.

A real server (``mcp.Client`` in memory), the real stand-in, a real SQLite file that the test
really deletes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from helpers import USERS, call_raw, connected, fast_config, make_settings, read_line, text_of
from mcp import Client

from cctg_mcp.app import open_service
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.delivery.sqlite_worker import storage_error
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


async def test_a_deleted_data_dir_refuses_sends_honestly_and_status_says_so(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path / "data")
    async with connected(settings) as client:
        first = await call_raw(client, "send_telegram_message", {"message": "before"})
        assert not first.is_error, text_of(first)
        shutil.rmtree(settings.data_dir)
        refused = await call_raw(client, "send_telegram_message", {"message": "after the data dir is gone"})
        assert refused.is_error
        text = text_of(refused)
        assert "outbox is gone" in text and "deleted" in text and "Restart the server" in text
        assert "stored durably" not in text
        status = (await call_raw(client, "get_resilience_status", {})).structured_content
        assert status is not None
        assert status["overall"] == "unhealthy"
        assert "deleted" in (status["outbox"]["problem"] or "")
        assert any("The outbox is gone" in issue for issue in status["active_issues"])
        assert any("Answers are stored in a file that is gone" in issue for issue in status["active_issues"])


async def test_a_replaced_outbox_file_is_noticed_too(standin: TelegramStandIn, tmp_path: Path) -> None:
    settings = make_settings(standin, tmp_path / "data")
    async with connected(settings) as client:
        path = settings.outbox_path
        path.rename(path.with_suffix(".moved"))
        path.write_bytes(b"")  # another file now sits at the path
        refused = await call_raw(client, "send_telegram_message", {"message": "x"})
        assert refused.is_error and "replaced" in text_of(refused)


# ---- a full disk, a locked database ------------------------------------------------------


def full_disk(path: Path) -> sqlite3.OperationalError:
    """The error SQLite raises when the disk is full (what ``database or disk is full`` is)."""
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorname = "SQLITE_FULL"
    return exc


async def test_a_record_that_fails_after_telegram_accepted_is_still_delivered_and_never_resent(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """The disk fills between Telegram's acceptance and our record of it: the tool says
    delivered (not an opaque error), a lease that runs out does not send it again, and the
    record is written once there is room."""
    settings = make_settings(standin, tmp_path / "data")
    async with open_service(settings, resilience=fast_config(health={"enabled": False})) as runtime:
        service = runtime.service
        outbox, dispatcher = service.outbox, service.dispatcher
        assert outbox is not None and dispatcher is not None
        real = outbox.mark_delivered
        disk_full = True
        tried_after_lease: set[int] = set()
        lease_ran_out = False
        retried, recorded = anyio.Event(), anyio.Event()
        written: list[int] = []

        async def mark_delivered(delivery_id: int, message_ids: list[int]) -> None:
            if disk_full:  # the storage fault: the write fails as SQLite fails it on a full disk
                if lease_ran_out:
                    tried_after_lease.add(delivery_id)
                    if len(tried_after_lease) == len(USERS):
                        retried.set()
                raise storage_error(full_disk(outbox.path), outbox.path)
            await real(delivery_id, message_ids)
            written.append(delivery_id)
            if len(set(written)) == len(USERS):
                recorded.set()

        outbox.mark_delivered = mark_delivered  # type: ignore[method-assign]
        event = service.build_event(type="info_notification", title="t", description="while the disk fills")
        with anyio.fail_after(15):
            result = await service.submit(event)
        assert result.status == "delivered", result
        assert all(r.status == "delivered" and "disk holding" in (r.reason or "") for r in result.recipients)
        assert len(standin.sent) == len(USERS)
        assert len(dispatcher.unsettled) == len(USERS)
        # Our lease runs out while the disk is still full: the rows come back, are not sent again.
        lease_ran_out = True
        assert await outbox.recover_expired_leases(now=time.time() + 10_000) == len(USERS)
        dispatcher.wake()
        with anyio.fail_after(15):
            await retried.wait()
        assert len(standin.sent) == len(USERS)
        disk_full = False  # space is back: the record is written
        dispatcher.wake()
        with anyio.fail_after(15):
            await recorded.wait()
        assert (await outbox.counts()).delivered == len(USERS)
        assert dispatcher.unsettled == {} and len(standin.sent) == len(USERS)


async def test_a_send_on_a_full_disk_is_refused_in_plain_words(standin: TelegramStandIn, tmp_path: Path) -> None:
    """A real SQLITE_FULL: the outbox may not grow past its current pages (max_page_count)."""
    settings = make_settings(standin, tmp_path / "data")
    services: list[NotificationService] = []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        async with open_service(settings, resilience=fast_config()) as runtime:
            services.append(runtime.service)
            yield runtime

    async with Client(build_server(opened)) as client:
        first = await call_raw(client, "send_telegram_message", {"message": "fits"})
        assert not first.is_error
        (service,) = services
        box = service.outbox
        assert box is not None
        (pages,) = await box._run(lambda: box._conn.execute("PRAGMA page_count").fetchone())
        # max_page_count is per connection: set on the server's own, the file may not grow.
        await box._run(box._conn.execute, f"PRAGMA max_page_count={pages}")
        texts = []
        for i in range(20):
            result = await call_raw(client, "send_telegram_message", {"message": f"{i} " + "x" * 3500})
            if result.is_error:
                texts.append(text_of(result))
                break
        assert texts, "the outbox never filled"
        assert "is full" in texts[0] and "Free some space" in texts[0], texts[0]
        assert "OperationalError" not in texts[0] and "Traceback" not in texts[0]


def test_start_up_with_the_outbox_locked_by_another_process_says_so_fast(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "outbox.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE x (y)").connection.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None); c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and read_line(holder.stdout) == b"locked\n"
        env = {**standin.server_env(data, USERS), "PATH": os.environ.get("PATH", "")}
        result = subprocess.run(
            [sys.executable, "-m", "cctg_mcp", "serve"],
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()  # a pipe left to the garbage collector is a ResourceWarning
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert "locked by another process" in stderr and str(path) in stderr, stderr
    assert "Traceback" not in stderr, stderr


async def test_a_zero_length_outbox_is_refused_not_silently_replaced(tmp_path: Path) -> None:
    from cctg_mcp.delivery.outbox import Outbox
    from cctg_mcp.resilience.errors import ConfigurationError

    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"")
    with pytest.raises(ConfigurationError, match="empty") as caught:
        await Outbox.open(path)
    assert str(path) in str(caught.value) and "Nothing was deleted" in str(caught.value)
    assert path.read_bytes() == b""  # left as found
