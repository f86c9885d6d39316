"""The log file in the data dir (kept for MONITORING_LOGS_RETENTION) through the real server
over stdio, and NODE_ENV honoured when CCTG_ENVIRONMENT is unset."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
import pytest
from helpers import USERS, connected, make_settings, text_of
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.config import load_settings
from cctg_mcp.resilience.config import load_resilience_config
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

HOUR = 3600


def old_log(directory: Path, name: str, age_s: float) -> Path:
    path = directory / name
    path.write_text("an earlier server's log\n")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def read_log(path: Path) -> tuple[int, str]:
    return path.stat().st_mode & 0o777, path.read_text()


async def test_the_server_keeps_a_log_file_and_purges_old_ones(standin: TelegramStandIn, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    expired = old_log(logs, "cctg-mcp-20260101T000000Z-4242.log", 3 * HOUR)
    rotated = old_log(logs, "cctg-mcp-20260101T000000Z-4242.log.1", 5 * HOUR)
    recent = old_log(logs, "cctg-mcp-20260101T060000Z-4343.log", HOUR)
    foreign = old_log(logs, "notes.txt", 10 * HOUR)  # not ours: never touched
    env = standin.server_env(tmp_path, USERS, MONITORING_LOGS_RETENTION="2h", CCTG_ENVIRONMENT="development")
    params = StdioServerParameters(command=sys.executable, args=["-m", "cctg_mcp", "serve"], env=env)
    with (tmp_path / "stderr.log").open("w") as errlog, anyio.fail_after(60):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            sent = await client.call_tool("send_telegram_message", {"message": "logged"})
            assert not sent.is_error, text_of(sent)
            report = (await client.call_tool("get_health_report", {})).structured_content
            history = (await client.call_tool("get_recovery_history", {})).structured_content
    assert report is not None and history is not None
    log_file = Path(report["log_file"])
    assert history["log_file"] == report["log_file"] and log_file.parent == logs
    assert log_file.name.startswith("cctg-mcp-") and log_file.name.endswith(".log")
    mode, written = read_log(log_file)
    assert mode == 0o600
    assert "cctg_mcp" in written and standin.token not in written
    assert written.splitlines()[0] in (tmp_path / "stderr.log").read_text()  # the same lines as stderr
    assert not expired.exists() and not rotated.exists()  # older than MONITORING_LOGS_RETENTION
    assert recent.exists() and foreign.exists()


async def test_without_the_command_line_there_is_no_log_file_to_point_to(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with connected(make_settings(standin, tmp_path)) as client:
        report = (await client.call_tool("get_health_report", {})).structured_content
    assert report is not None and report["log_file"] is None


def test_node_env_sets_the_environment_when_cctg_environment_is_unset(tmp_path: Path) -> None:
    base = {"CCTG_DATA_DIR": str(tmp_path)}
    assert load_settings(base).environment == "production"  # the default stays production
    assert load_settings({**base, "NODE_ENV": "development"}).environment == "development"
    assert load_settings({**base, "NODE_ENV": "Staging"}).environment == "staging"
    both = {**base, "NODE_ENV": "development", "CCTG_ENVIRONMENT": "production"}
    assert load_settings(both).environment == "production"  # ours wins
    assert load_settings({**base, "NODE_ENV": "test"}).environment == "production"  # not one of ours: ignored
    assert load_resilience_config({"NODE_ENV": "staging"}).environment == "staging"
    assert load_resilience_config({"NODE_ENV": "staging", "CCTG_ENVIRONMENT": "development"}).environment == (
        "development"
    )


async def test_node_env_development_enables_chaos_in_the_running_server(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    env = {**standin.server_env(tmp_path, USERS), "CCTG_DATA_DIR": str(tmp_path), "NODE_ENV": "development"}
    settings = load_settings(env)
    async with connected(settings, load_resilience_config(env)) as client:
        status = (await client.call_tool("get_resilience_status", {})).structured_content
        chaos = (await client.call_tool("list_chaos_experiments", {})).structured_content
    assert status is not None and status["environment"] == "development"
    assert chaos is not None and chaos["enabled"] is True
