"""Issue 13, item 3: ``cctg-mcp check`` contacts what it claims to and exits 0 only when a
send would reach every recipient. Run as a subprocess against the loopback stand-in."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio
USERS = (111, 222)


async def check(env: dict[str, str], *args: str) -> tuple[int, str]:
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "cctg_mcp", "check", *args], env={**env, "PATH": ""}, check=False
        )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


async def test_a_user_who_never_pressed_start_fails_the_check_by_id_with_the_fix(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    env = standin.server_env(tmp_path, USERS)
    ok_code, ok_out = await check(env)
    standin.never_started.add(222)
    bad_code, bad_out = await check(env)
    json_code, json_out = await check(env, "--json")
    assert ok_code == 0 and "Recipient 111: reachable" in ok_out and "Recipient 222: reachable" in ok_out
    assert "every recipient (2) can be reached" in ok_out
    assert bad_code == 1 and "OK:" not in bad_out
    assert "Recipient 222: NOT reachable" in bad_out and "User 222 must open @" in bad_out and "press Start" in bad_out
    facts: dict[str, Any] = json.loads(json_out)
    assert json_code == 1 and facts["ok"] is False and facts["bot"]["username"] == standin.bot_username
    assert [(r["chat_id"], r["reachable"]) for r in facts["recipients"]] == [(111, True), (222, False)]
    chat_actions = [r for r in standin.requests if r.method == "sendChatAction"]
    assert {r.params["chat_id"] for r in chat_actions} == set(USERS)  # it really asked Telegram, per user
    assert standin.sent == []  # and sent nobody a message
    assert standin.token not in ok_out + bad_out + json_out


async def test_network_errors_name_the_host_and_the_cause(standin: TelegramStandIn, tmp_path: Path) -> None:
    env = standin.server_env(tmp_path, USERS)
    refused_code, refused = await check({**env, "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9"})
    unresolved_code, unresolved = await check({**env, "TELEGRAM_API_BASE_URL": "http://no-such-host.invalid"})
    json_code, facts = await check({**env, "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9"}, "--json")
    assert refused_code == 1 and "connection refused by 127.0.0.1:9" in refused
    assert unresolved_code == 1 and "cannot resolve no-such-host.invalid" in unresolved
    assert json_code == 1 and "connection refused by 127.0.0.1:9" in json.loads(facts)["problems"][0]


async def test_bridge_mode_checks_the_bridge_health(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "CCTG_DATA_DIR": str(tmp_path / "data"),
        "CCTG_DELIVERY": "bridge",
        "CC_TELEGRAM_BRIDGE_HEALTH_URL": "http://127.0.0.1:9/health",
    }
    code, out = await check(env)
    assert code == 1 and "OK:" not in out
    assert "health check" in out and "127.0.0.1:9" in out and "Event files would wait" in out


@contextlib.contextmanager
def healthy_bridge() -> Iterator[str]:
    """A /health that answers {"status": "healthy"}, as a running bridge does."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "healthy"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


async def test_bridge_mode_ok_names_what_was_probed_and_an_unwritable_events_dir_fails(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    with healthy_bridge() as url:
        env = {
            "HOME": str(tmp_path),
            "CCTG_DATA_DIR": str(tmp_path / "data"),
            "CCTG_DELIVERY": "bridge",
            "CC_TELEGRAM_EVENTS_DIR": str(events),
            "CC_TELEGRAM_BRIDGE_HEALTH_URL": url,
        }
        code, out = await check(env)
        assert code == 0, out
        assert "OK: configuration is valid, the events directory is writable and the bridge's /health answers " in out
        assert "Telegram answers" not in out  # Telegram was not contacted in bridge mode
        assert list(events.iterdir()) == []  # the probe file was removed
        if os.geteuid() != 0:  # root writes anywhere
            events.chmod(0o500)
            try:
                bad_code, bad = await check(env)
            finally:
                events.chmod(0o700)
            assert bad_code == 1 and "OK:" not in bad and "is not writable" in bad, bad


def test_the_events_dir_probe_can_fail(tmp_path: Path) -> None:
    from cctg_mcp.ops.preflight import _unwritable

    assert _unwritable(tmp_path) is None and list(tmp_path.iterdir()) == []
    assert _unwritable(tmp_path / "missing") == "No such file or directory"  # a real create, not a stat
