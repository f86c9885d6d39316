"""``cctg-mcp setup`` as a real subprocess against the Telegram stand-in, with a scripted /start.

The token never appears in full on the terminal; the configuration files hold it (they must)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import clean_environ, reader_process

from cctg_mcp.commands.setup import data_dir, mask
from cctg_mcp.config import load_settings
from cctg_mcp.testing import DEFAULT_TOKEN, TelegramStandIn

pytestmark = pytest.mark.anyio

ADA = 424242
MASKED = mask(DEFAULT_TOKEN)


def env_for(standin: TelegramStandIn, home: Path, token: str = DEFAULT_TOKEN) -> dict[str, str]:
    env = clean_environ()
    env.update(HOME=str(home), TELEGRAM_BOT_TOKEN=token, TELEGRAM_API_BASE_URL=standin.base_url)
    return env


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cctg_mcp", "setup", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def finish(proc: subprocess.Popen[bytes], stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(stdin, timeout=60))
    return proc.returncode, out.decode(), err.decode()


async def waiting_for_start(standin: TelegramStandIn) -> None:
    """Setup skipped the updates already waiting and now long-polls for /start."""

    def drained() -> bool:
        return any(r.method == "getUpdates" and r.params.get("timeout") == 0 for r in standin.requests)

    assert await anyio.to_thread.run_sync(standin.wait_until, drained, 30)


async def test_setup_finds_the_chat_from_start_and_merges_the_config(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = tmp_path / "claude.json"
    config.write_text(json.dumps({"mcpServers": {"other": {"command": "x"}}, "theme": "dark"}))
    standin.push_text(999, "/start")  # an old update, from before setup ran: skipped
    proc = start(env_for(standin, tmp_path), "--client", "code", "--config-path", str(config), "--wait", "30")
    await waiting_for_start(standin)
    standin.push_start(ADA, first_name="Ada", username="ada")
    code, out, err = await finish(proc, b"y\n")
    assert code == 0, err
    assert out == ""
    assert f"Token {MASKED} works: the bot is @cctg_test_bot" in err
    assert "send /start" in err and "/start came from Ada (@ada), user id 424242." in err
    assert DEFAULT_TOKEN not in err + out
    data: dict[str, Any] = json.loads(config.read_text())
    assert data["theme"] == "dark" and data["mcpServers"]["other"] == {"command": "x"}  # kept
    entry = data["mcpServers"]["cctg"]
    assert entry["env"] == {
        "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_ALLOWED_USERS": str(ADA),
        "TELEGRAM_API_BASE_URL": standin.base_url,
    }
    assert entry["args"][-1] == "serve"
    assert entry["command"].endswith("cctg-mcp") or entry["command"] == sys.executable
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "claude.json.bak").read_text())["theme"] == "dark"
    # The /start was confirmed to Telegram: a server starting now does not read it again.
    assert standin.requests[-1].method == "getUpdates" and standin.requests[-1].params["offset"] > 2


async def test_saying_no_writes_nothing(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = tmp_path / "claude.json"
    proc = start(env_for(standin, tmp_path), "--client", "code", "--config-path", str(config), "--wait", "30")
    await waiting_for_start(standin)
    standin.push_start(ADA, first_name="Ada")
    code, _out, err = await finish(proc, b"n\n")
    assert code == 1 and "Not confirmed; nothing was written." in err
    assert not config.exists()


async def test_print_for_scripts_masks_the_token_unless_asked(standin: TelegramStandIn, tmp_path: Path) -> None:
    code, out, err = await finish(start(env_for(standin, tmp_path), "--user-id", "5", "--user-id", "7", "--print"))
    assert code == 0, err
    printed = json.loads(out)["mcpServers"]["cctg"]["env"]
    assert (printed["TELEGRAM_BOT_TOKEN"], printed["TELEGRAM_ALLOWED_USERS"]) == (MASKED, "5,7")
    assert DEFAULT_TOKEN not in out + err and "--show-token" in err
    assert not any(r.method == "getUpdates" for r in standin.requests)  # --user-id: no /start needed
    args = ("--user-id", "5", "--print", "--show-token", "--toolsets", "default,permissions")
    shown = start(env_for(standin, tmp_path), *args)
    code, out, _ = await finish(shown)
    env = json.loads(out)["mcpServers"]["cctg"]["env"]
    assert code == 0 and (env["TELEGRAM_BOT_TOKEN"], env["CCTG_TOOLSETS"]) == (DEFAULT_TOKEN, "default,permissions")
    code, out, err = await finish(start(env_for(standin, tmp_path), "--user-id", "5", "--print", "--toolsets", "nope"))
    assert (code, out) == (1, "") and "--toolsets names unknown toolset(s) 'nope'" in err


async def test_a_rejected_token_or_no_start_says_so_without_echoing_it(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    wrong = "123456:WRONG-abcdefghijklmnopqrstuvwxyz0123"
    code, out, err = await finish(start(env_for(standin, tmp_path, wrong), "--user-id", "5", "--print"))
    assert code == 1 and out == ""
    assert f"Telegram rejected the token {mask(wrong)}" in err and wrong not in err
    code, _out, err = await finish(
        start(env_for(standin, tmp_path), "--wait", "1", "--config-path", str(tmp_path / "x.json"))
    )
    assert code == 1 and "No /start arrived within 1 s; nothing was written." in err
    assert not (tmp_path / "x.json").exists()


def test_mask_keeps_the_bot_id_and_four_characters() -> None:
    assert mask("123456:ABCDEFGHIJKLMNOP") == "123456:AB…OP"
    assert mask("123456:short") == "123456:…"


@pytest.fixture
def server_reading(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real process that holds the reader lock of ``tmp_path/data``, as a running server does."""
    with reader_process(tmp_path / "data") as (_proc, session):
        yield tmp_path / "data", session


async def test_setup_refuses_to_read_updates_while_a_server_reads_them(
    standin: TelegramStandIn, tmp_path: Path, server_reading: tuple[Path, str]
) -> None:
    data, session = server_reading
    assert session
    env = {**env_for(standin, tmp_path), "CCTG_DATA_DIR": str(data)}
    standin.push_start(ADA, first_name="Ada")  # the server's to read, not setup's
    code, out, err = await finish(start(env, "--wait", "5", "--config-path", str(tmp_path / "c.json")))
    assert (code, out) == (1, ""), err
    assert f"A running cctg-mcp server (session {session}, data dir {data})" in err
    assert "Stop the server first, or pass --user-id" in err
    assert not any(r.method == "getUpdates" for r in standin.requests)  # it did not read (nor ack) anything
    assert not (tmp_path / "c.json").exists()
    code, _out, err = await finish(start(env, "--user-id", "5", "--print"))  # no updates needed: fine
    assert code == 0, err


async def test_setup_says_how_many_waiting_updates_it_discards(standin: TelegramStandIn, tmp_path: Path) -> None:
    standin.push_text(999, "hello")
    standin.push_text(998, "/start")  # from before setup ran: skipped
    env = {**env_for(standin, tmp_path), "CCTG_DATA_DIR": str(tmp_path / "data")}  # no server: it reads
    proc = start(env, "--wait", "30", "--print", "--yes")
    await waiting_for_start(standin)
    standin.push_start(ADA, first_name="Ada")
    code, out, err = await finish(proc)
    assert code == 0, err
    assert "2 update(s) already waiting for the bot are skipped and discarded" in err
    assert json.loads(out)["mcpServers"]["cctg"]["env"]["TELEGRAM_ALLOWED_USERS"] == str(ADA)


def test_setup_looks_for_a_reader_in_the_data_dir_the_server_would_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stripped and ``~`` expanded, as the settings read CCTG_DATA_DIR."""
    for raw in ("~/cctg-data", f" {tmp_path} "):
        monkeypatch.setenv("CCTG_DATA_DIR", raw)
        assert data_dir() == load_settings({"CCTG_DATA_DIR": raw}).data_dir.expanduser()
