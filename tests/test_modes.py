"""Modes (nomad / local / muted) through the running server: a real mcp.Client, the server's
poller and dispatcher, the Telegram stand-in over HTTP; bridge mode writes the original's
Mode Switch Request event file."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import (
    USERS,
    FakeBridge,
    call,
    connected,
    connected_in_virtual_time,
    fast_config,
    make_settings,
    text_of,
    wait_for,
)
from mcp import Client

from cctg_mcp.app import open_service
from cctg_mcp.config import PacingSettings, Settings
from cctg_mcp.delivery.dispatcher import Dispatcher
from cctg_mcp.delivery.mode import ModeStore, parse_command, read_mode_file
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.server import build_server
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

ALICE, BOB = USERS
STRANGER = 999


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Client]:
    """The server with a 1-second long poll, so Telegram commands are read promptly."""
    server = build_server(lambda: open_service(settings, resilience=fast_config(), poll_timeout=1))
    async with Client(server) as client:
        yield client


def mode_file(data_dir: Path) -> Any:
    return json.loads((data_dir / "bridge_mode.json").read_text())


def test_commands_are_parsed_like_the_bridge() -> None:
    assert parse_command("/cct:nomad") == "nomad"
    assert parse_command("  /cct:mute@CCTelegramBot ") == "muted"
    assert parse_command("/CCT:LOCAL now") == "local"
    assert parse_command("/cct:nomadx") is None and parse_command("please /cct:mute") is None
    assert parse_command("") is None and parse_command(None) is None


def test_the_mode_file_is_the_bridges_format(tmp_path: Path) -> None:
    store = ModeStore(tmp_path / "bridge_mode.json")
    assert store.get() == "nomad" and not store.path.exists()  # no file: nomad
    assert store.set("muted", by="tool") == "nomad"
    assert json.loads(store.path.read_text()) == "Muted"
    muted_at = store.path.stat().st_mtime_ns
    other = ModeStore(store.path)  # another process sharing the data dir
    other.set("local", by="tool")
    os.utime(store.path, ns=(muted_at, muted_at))  # a coarse clock: the same mtime, and the same size
    assert store.get() == "local"  # seen anyway: the switch replaced the file
    (tmp_path / "bridge_mode.json").write_text('"Local"')  # or the bridge wrote it in place
    assert ModeStore(store.path).get() == "local" and store.get() == "local"
    store.path.write_text('"Loud"')
    with pytest.raises(ValueError, match='"Nomad", "Local", "Muted"'):
        read_mode_file(store.path)
    assert store.get() == "local" and store.error is not None  # a bad file keeps the last good mode


async def test_mute_queues_every_send_and_unmuting_delivers_them(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        muted = await call(client, "switch_to_mute_mode")
        assert (muted["success"], muted["mode"], muted["previous_mode"]) == (True, "muted", "nomad")
        assert mode_file(tmp_path) == "Muted"

        sent = await call(client, "send_telegram_message", {"message": "build green"})
        assert (sent["status"], sent["reason"]) == ("queued", "muted")
        assert sent["next_attempt_at"] is None and "Muted" in sent["message"]
        approval = await call(client, "send_approval_request", {"title": "Deploy?", "description": "prod"})
        assert (approval["status"], approval["reason"]) == ("queued", "muted")
        status = await call(client, "get_resilience_status")
        assert status["mode"]["mode"] == "muted" and status["mode"]["changed_by"] == "tool"
        assert status["outbox"]["pending"] == 4  # two events x two people, none sent
        assert standin.sent == []

        back = await call(client, "switch_to_nomad_mode")
        assert (back["mode"], back["previous_mode"]) == ("nomad", "muted")
        await standin.await_messages(4)
        texts = [m.text for m in standin.messages_for(ALICE)]
        assert any("build green" in t for t in texts) and any("Deploy?" in t for t in texts)
        assert mode_file(tmp_path) == "Nomad"


async def test_local_mode_sends_notifications_and_holds_approvals(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        assert (await call(client, "switch_to_local_mode"))["mode"] == "local"
        assert mode_file(tmp_path) == "Local"
        note = await call(client, "send_telegram_message", {"message": "tests pass"})
        assert note["status"] == "delivered"
        approval = await call(client, "send_approval_request", {"title": "Merge?", "description": "PR 7"})
        assert (approval["status"], approval["reason"]) == ("queued", "local")
        asks = await call(
            client,
            "send_telegram_event",
            {"type": "info_notification", "title": "Q", "description": "?", "data": {"requires_response": True}},
        )
        assert asks["reason"] == "local"
        assert len(standin.sent) == 2 and all("tests pass" in m.text for m in standin.sent)

        await call(client, "switch_to_nomad_mode")
        await standin.await_messages(6)
        keyboards = [m.reply_markup for m in standin.messages_for(ALICE) if "Merge?" in m.text]
        assert len(keyboards) == 1 and keyboards[0] is not None  # the approval went out with its buttons


async def test_a_mode_file_from_before_the_start_is_in_force(standin: TelegramStandIn, tmp_path: Path) -> None:
    (tmp_path / "bridge_mode.json").write_text('"Muted"')  # e.g. switched by another session
    async with connected(make_settings(standin, tmp_path)) as client:
        sent = await call(client, "send_telegram_message", {"message": "quiet"})
        status = await call(client, "get_resilience_status")
    assert (sent["status"], sent["reason"]) == ("queued", "muted") and standin.sent == []
    assert status["mode"]["mode"] == "muted" and status["mode"]["persisted"] is True
    assert any(issue.startswith("Muted mode") for issue in status["active_issues"])


async def test_telegram_commands_from_an_allowed_user_switch_the_mode(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with serving(make_settings(standin, tmp_path)) as client:
        standin.push_text(ALICE, "/cct:mute")
        await wait_for(lambda: (tmp_path / "bridge_mode.json").exists())
        assert mode_file(tmp_path) == "Muted"
        await standin.await_messages(2)  # the confirmation goes to both people, even when muting
        assert all("Muted mode" in m.text for m in standin.sent)

        standin.push_text(STRANGER, "/cct:nomad")  # not in TELEGRAM_ALLOWED_USERS: ignored
        with anyio.fail_after(15):  # until the poller has read (and counted) the stranger's update
            while (await call(client, "get_resilience_status"))["answers"]["unauthorized_ignored"] < 1:  # noqa: ASYNC110  (the server's poller thread counts it)
                await anyio.sleep(0.02)
        sent = await call(client, "send_telegram_message", {"message": "held"})
        assert (sent["status"], sent["reason"]) == ("queued", "muted")
        status = await call(client, "get_resilience_status")
        assert (status["mode"]["mode"], status["mode"]["changed_by"]) == ("muted", f"telegram:{ALICE}")
        assert status["answers"]["unauthorized_ignored"] == 1 and mode_file(tmp_path) == "Muted"
        assert len(standin.sent) == 2  # no confirmation for the stranger's command

        standin.push_text(BOB, "/cct:nomad@CCTelegramBot")
        await standin.await_messages(6)  # the Nomad confirmation and the held message, to both
        assert mode_file(tmp_path) == "Nomad"
        assert any("held" in m.text for m in standin.messages_for(BOB))
        responses = await call(client, "get_telegram_responses", {"limit": 10})
    assert responses["total"] == 0  # commands are not answers


async def test_bridge_mode_asks_the_bridge_as_the_original_did(tmp_path: Path) -> None:
    settings = make_settings(
        None, tmp_path, CCTG_DELIVERY="bridge", CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health"
    )
    (settings.responses_dir).mkdir(parents=True, exist_ok=True)
    (settings.responses_dir / "bridge_mode.json").write_text('"Local"')  # what the bridge saved
    async with connected_in_virtual_time(settings) as (client, _):  # no bridge takes the request: a deadline
        result = await call(client, "switch_to_mute_mode")
        status = await call(client, "get_resilience_status")
    # No bridge runs: the request is written for it, and not claimed as done.
    assert (result["success"], result["mode"]) == (False, "unknown") and "queued" in result["message"]
    (written,) = [json.loads(p.read_text()) for p in settings.events_dir.glob("*.json")]
    assert (written["type"], written["title"], written["description"]) == (
        "info_notification",
        "Mode Switch Request",
        "/cct:mute",
    )
    assert (written["data"]["command"], written["data"]["requested_mode"]) == ("/cct:mute", "muted")
    assert written["event_id"] == result["event_id"]
    assert (status["mode"]["managed_by"], status["mode"]["mode"]) == ("bridge", "local")  # the bridge decides
    assert not (tmp_path / "bridge_mode.json").exists()  # the server does not switch itself in bridge mode


async def test_bridge_mode_switch_succeeds_once_the_bridge_takes_the_request(
    fake_bridge: FakeBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in fake_bridge.env().items():
        monkeypatch.setenv(key, value)
    started = await fake_bridge.manager().start()
    assert started.success
    settings = fake_bridge.settings(tmp_path / "data")
    async with connected(settings) as client:
        result = await call(client, "switch_to_nomad_mode")
        await call(client, "stop_bridge")
    assert (result["success"], result["mode"]) == (True, "nomad"), result
    (taken,) = await fake_bridge.await_processed(1)
    assert taken["event"]["data"]["command"] == "/cct:nomad" and taken["event"]["event_id"] == result["event_id"]


async def test_mode_tools_without_configuration_say_what_to_set(tmp_path: Path) -> None:
    async with connected(make_settings(None, tmp_path, CCTG_DELIVERY="telegram")) as client:
        result = await client.call_tool("switch_to_nomad_mode", {})
    assert result.is_error and "TELEGRAM_BOT_TOKEN" in text_of(result)


async def test_a_permission_request_in_local_mode_is_denied_saying_how_to_be_asked(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        await call(client, "switch_to_local_mode")
        with anyio.fail_after(15):
            result = await client.call_tool("permission_prompt", {"tool_name": "Bash", "input": {"command": "ls"}})
        status = await call(client, "get_resilience_status")
    decision = json.loads(text_of(result))
    assert decision["behavior"] == "deny" and "local" in decision["message"]
    assert "switch_to_nomad_mode" in decision["message"] and "withdrawn" in decision["message"]
    assert standin.sent == [] and status["outbox"]["pending"] == 0  # withdrawn: it never pops up later


class _ClockedTelegram:
    """Accepts every message at once and notes when (virtual time) each arrived."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.at: list[float] = []
        self.arrived = anyio.Event()

    async def send_message(self, chat_id: int, text: str, **_: Any) -> int:
        self.at.append(self.clock.monotonic())
        self.arrived.set()
        return len(self.at)


class _Direct:
    async def call(
        self, operation: str, fn: Any, *, deadline: float | None = None, event_type: str | None = None
    ) -> Any:
        return await fn()


async def test_in_local_mode_a_held_approval_does_not_delay_a_notification_due_soon(tmp_path: Path) -> None:
    clock = FakeClock()
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3", clock=clock)
    telegram = _ClockedTelegram(clock)
    dispatcher = Dispatcher(outbox, telegram, _Direct(), Pacer(PacingSettings(), clock=clock), clock=clock)
    assert dispatcher.idle_poll_s == 5.0
    dispatcher.mode = ModeStore(tmp_path / "bridge_mode.json", clock=clock)
    dispatcher.mode.set("local", by="test")
    try:
        start = clock.monotonic()
        approval = Event(event_id="a", type="approval_request", title="Deploy?", description="?", task_id="a")
        notice = Event(event_id="n", type="info_notification", title="Note", description="d", task_id="n")
        assert await outbox.enqueue(approval, [ALICE])  # due now, but held while local
        assert await outbox.enqueue(notice, [ALICE], now=clock.time() + 1.0)  # due in 1 s (a retry's backoff)
        async with clock.autojump():
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    await tg.start(dispatcher.run)
                    await telegram.arrived.wait()
                    tg.cancel_scope.cancel()
        assert telegram.at == [pytest.approx(start + 1.0, abs=0.3)]  # not at the next 5 s idle poll
        (held,) = await outbox.deliveries("a")
        assert held.status == "pending"
    finally:
        await outbox.close()
