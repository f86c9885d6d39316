"""The bridge process manager against a stand-in bridge executable, and bridge mode end to end.

The stand-in (written to tmp_path) serves ``/health`` on a loopback port and consumes event
files like the real bridge (parse, record, delete: ``auto_cleanup``). Waits are bounded with
``anyio.fail_after``; the only polling loops wait on the subprocess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from helpers import FakeBridge, await_gone, connected, fast_config, gone, make_settings, text_of
from mcp import Client

from cctg_mcp.app import open_service
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.transports.bridge.process import BridgeNotFoundError, BridgeProcessManager, probe_bridge_health

pytestmark = pytest.mark.anyio

# ---- the process manager -------------------------------------------------------------------


async def test_start_check_stop(fake_bridge: FakeBridge) -> None:
    manager = fake_bridge.manager()
    assert manager.check_process().running is False
    started = await manager.start()
    assert (started.success, started.action, started.message) == (True, "started", "Bridge started successfully")
    assert started.pid is not None and manager.pid_file.read_text().strip() == str(started.pid)
    check = manager.check_process()
    assert (check.running, check.pid, check.started_here) == (True, started.pid, True)
    assert (await manager.health()).status == "healthy"
    again = await manager.ensure_running()
    assert (again.action, again.pid) == ("already_running", started.pid)
    assert "fake bridge listening" in manager.log_file.read_text()

    stopped = await manager.stop()
    assert (stopped.success, stopped.action, stopped.pid) == (True, "stopped", started.pid)
    assert gone(started.pid) and not manager.pid_file.exists()
    assert manager.check_process().running is False
    assert (await manager.stop()).action == "not_running"
    assert (await probe_bridge_health(fake_bridge.health_url, timeout_s=1)).status == "unhealthy"


async def test_a_start_whose_health_never_says_healthy_is_not_a_success(fake_bridge: FakeBridge) -> None:
    """The process runs, but /health answers 200 {"status": "unhealthy"} until start_timeout_s:
    the start says so (started_unverified, success False), and so does the restart."""
    manager = fake_bridge.manager(start_timeout_s=1.0, extra_env={"FAKE_BRIDGE_STATUS": "unhealthy"})
    started = await manager.start()
    assert (started.success, started.action) == (False, "started_unverified")
    assert started.pid is not None and manager.check_process().running
    assert "did not answer healthy within 1s" in started.message and "'unhealthy'" in started.message
    restarted = await manager.restart()
    assert (restarted.success, restarted.action) == (False, "started_unverified")
    assert restarted.message.startswith("Restart unverified:") and restarted.pid != started.pid
    assert (await manager.stop()).action == "stopped"


async def test_a_200_that_says_unhealthy_is_unhealthy_in_the_report_and_the_status(
    fake_bridge: FakeBridge, tmp_path: Path
) -> None:
    """One reading of the bridge's /health: 200 {"status": "unhealthy"} is unhealthy in the health
    monitor's bridge-health check (get_health_report, get_resilience_status) and in
    get_bridge_status alike (the monitor used to read only the status code: healthy); and a
    recovery restart whose bridge never says healthy fails (started_unverified), not succeeds."""
    manager = fake_bridge.manager(start_timeout_s=0.5, extra_env={"FAKE_BRIDGE_STATUS": "unhealthy"})
    started = await manager.start()  # found by the server through its pid file
    assert started.action == "started_unverified" and started.pid is not None
    settings = fake_bridge.settings(tmp_path / "data")
    config = fast_config(
        health={"interval": 3_600_000, "gracePeriod": 0, "failureThreshold": 1},
        recovery={"enabled": False, "restartDelay": 0, "maxRecoveryAttempts": 1},
    )

    @asynccontextmanager
    async def opened() -> AsyncIterator[Runtime]:
        # the same bridge, with a short start timeout
        async with open_service(settings, resilience=config, bridge=manager) as runtime:
            yield runtime

    try:
        async with Client(build_server(opened)) as client:
            with anyio.fail_after(30):
                report = await client.call_tool("get_health_report", {"component": "bridge-health", "refresh": True})
                status = await client.call_tool("get_resilience_status", {"refresh": True})
                bridge = await client.call_tool("get_bridge_status", {})
            assert report.structured_content is not None and status.structured_content is not None
            (component,) = report.structured_content["components"]
            assert component["status"] == "unhealthy", component
            assert "HTTP 200, status 'unhealthy'" in component["message"]
            assert "bridge-health" in status.structured_content["health"]["unhealthy"]
            assert status.structured_content["overall"] == "unhealthy" and not status.structured_content["ready"]
            assert bridge.structured_content is not None
            assert (bridge.structured_content["running"], bridge.structured_content["health"]) == (True, "unhealthy")

            with anyio.fail_after(60):
                run = await client.call_tool("trigger_recovery", {"component": "bridge", "strategy": "restart"})
            assert not run.is_error, text_of(run)
            assert run.structured_content is not None
            (session,) = run.structured_content["sessions"]
            assert session["status"] != "succeeded", session
            restart = session["attempts"][0]
            assert restart["strategy"] == "restart" and restart["outcome"] == "failed", restart
            assert "started_unverified" in restart["detail"] and not restart.get("verified"), restart
    finally:
        await manager.stop()


async def test_a_bridge_ignoring_sigterm_is_killed_after_the_grace_period(fake_bridge: FakeBridge) -> None:
    manager = fake_bridge.manager(grace_s=0.3, extra_env={"FAKE_BRIDGE_IGNORE_TERM": "1"})
    started = await manager.start()
    assert started.success and started.pid is not None
    with anyio.fail_after(10):
        stopped = await manager.stop()
    assert (stopped.success, stopped.action) == (True, "killed")
    assert "SIGKILL" in stopped.message and "0.3s" in stopped.message
    assert gone(started.pid) and not manager.pid_file.exists()


async def test_restart_replaces_the_process(fake_bridge: FakeBridge) -> None:
    manager = fake_bridge.manager()
    first = await manager.start()
    assert first.pid is not None
    restarted = await manager.restart()
    assert restarted.success and restarted.action == "restarted" and restarted.message.startswith("Restart successful")
    assert restarted.pid is not None and restarted.pid != first.pid
    assert gone(first.pid) and manager.check_process().pid == restarted.pid
    assert (await manager.health()).status == "healthy"
    await manager.stop()


async def test_a_second_manager_finds_the_bridge_by_its_pid_file_and_stops_it(fake_bridge: FakeBridge) -> None:
    started = await fake_bridge.manager().start()
    assert started.pid is not None
    other = fake_bridge.manager()  # e.g. the server restarted: the bridge outlived it
    check = other.check_process()
    assert (check.running, check.pid, check.started_here) == (True, started.pid, False)
    assert (await other.stop()).action == "stopped"
    await await_gone(started.pid)
    assert not other.pid_file.exists()


async def test_a_stale_pid_file_is_ignored_and_never_signalled(fake_bridge: FakeBridge) -> None:
    manager = fake_bridge.manager()
    manager.pid_file.parent.mkdir(parents=True)
    finished = await anyio.run_process([sys.executable, "-c", "pass"])
    assert finished.returncode == 0
    dead = await anyio.open_process([sys.executable, "-c", "pass"])
    await dead.wait()
    for pid in (dead.pid, os.getpid()):  # an exited process; a live one that is not the bridge (us)
        manager.pid_file.write_text(f"{pid}\n")
        check = manager.check_process()
        assert check.running is False and "stale" in check.message
        assert not manager.pid_file.exists()
    manager.pid_file.write_text(f"{os.getpid()}\n")
    assert (await manager.stop()).action == "not_running"  # and we are still here


async def test_a_bridge_that_exits_at_once_is_reported_as_failed(fake_bridge: FakeBridge) -> None:
    manager = fake_bridge.manager(extra_env={"FAKE_BRIDGE_EXIT": "3"})
    result = await manager.start()
    assert (result.success, result.action) == (False, "failed")
    assert "status 3" in result.message and str(manager.log_file) in result.message
    assert not manager.pid_file.exists() and manager.check_process().running is False


async def test_no_executable_is_an_error_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    missing = BridgeProcessManager(data_dir=tmp_path, health_url="http://127.0.0.1:9/health")
    with pytest.raises(BridgeNotFoundError, match="CC_TELEGRAM_BRIDGE_PATH"):
        await missing.start()
    (tmp_path / "not-executable").write_text("")
    wrong = BridgeProcessManager(
        data_dir=tmp_path, health_url="http://127.0.0.1:9/health", executable=tmp_path / "not-executable"
    )
    with pytest.raises(BridgeNotFoundError, match=r"CC_TELEGRAM_BRIDGE_PATH=.*not-executable"):
        await wrong.ensure_running()


# ---- end to end: mcp.Client, bridge delivery, no token ----------------------------------------


async def test_bridge_mode_end_to_end_through_the_mcp_tools(
    fake_bridge: FakeBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in fake_bridge.env().items():
        monkeypatch.setenv(key, value)  # the bridge child inherits the server's environment
    settings = fake_bridge.settings(tmp_path / "data")
    assert settings.token == "" and settings.events_dir == fake_bridge.events_dir
    config = fast_config(recovery={"restartDelay": 0})
    async with connected(settings, config) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        read_only = {name: getattr(tool.annotations, "read_only_hint", None) for name, tool in tools.items()}
        for name in ("start_bridge", "stop_bridge", "restart_bridge", "check_bridge_process"):
            assert read_only[name] is False  # check_bridge_process removes a stale pid file
        assert read_only["get_bridge_status"] is True and "ensure_bridge_running" not in tools

        # The bridge is not running: the file is written and waits for it, so the send is queued,
        # saying why (the bridge has not consumed it) and what its health check says.
        sent = await client.call_tool(
            "send_telegram_event",
            {"type": "build_completed", "title": "Build", "description": "green", "task_id": "build-42"},
        )
        assert not sent.is_error, text_of(sent)
        assert sent.structured_content is not None and sent.structured_content["status"] == "queued"
        reason = sent.structured_content["reason"]
        assert "has not picked it up" in reason and "health check unhealthy" in reason, reason
        waiting = (await client.call_tool("get_resilience_status", {})).structured_content
        assert waiting is not None and waiting["bridge_files"]["waiting"] == 1
        assert waiting["bridge_files"]["oldest_age_s"] is not None and waiting["bridge_files"]["oldest_age_s"] >= 0
        files_check = await client.call_tool("get_health_report", {"component": "bridge-files", "refresh": True})
        assert files_check.structured_content is not None
        assert "1 event file(s) waiting for the bridge" in files_check.structured_content["components"][0]["message"]
        status = (await client.call_tool("get_bridge_status", {})).structured_content
        assert status is not None and (status["running"], status["health"], status["pending_events"]) == (
            False,
            "unhealthy",
            1,
        )
        assert (await client.call_tool("check_bridge_process", {})).structured_content == {
            "running": False,
            "pid": None,
            "message": "Bridge process is not running",
            "started_here": False,
        }

        started = (await client.call_tool("start_bridge", {})).structured_content
        assert started is not None and started["success"] and started["action"] == "started"
        (first,) = await fake_bridge.await_processed(1)
        assert first["file"].startswith("build-42_") and first["event"]["title"] == "Build"

        approval = await client.call_tool(
            "send_approval_request", {"title": "Deploy?", "description": "prod now", "options": ["Ship", "Wait"]}
        )
        # the bridge runs now and consumes the file within the tool's deadline: delivered
        assert approval.structured_content is not None and approval.structured_content["status"] == "delivered"
        second = (await fake_bridge.await_processed(2))[1]["event"]
        assert second["type"] == "approval_request"
        assert second["data"]["approval_prompt"] == "prod now" and second["data"]["options"] == ["Ship", "Wait"]
        assert second["event_id"] == approval.structured_content["event_id"]

        status = (await client.call_tool("get_bridge_status", {})).structured_content
        assert status is not None and status["running"] and status["health"] == "healthy"
        assert status["pid"] == started["pid"] and status["pending_events"] == 0
        assert status["last_event_time"] is not None and status["metrics"]["uptime_seconds"] > 0
        ensured = (await client.call_tool("start_bridge", {})).structured_content  # the seed's ensure_bridge_running
        assert ensured is not None and ensured["action"] == "already_running"

        restarted = (await client.call_tool("restart_bridge", {})).structured_content
        assert restarted is not None and restarted["success"] and restarted["pid"] != started["pid"]
        stopped = (await client.call_tool("stop_bridge", {})).structured_content
        assert stopped is not None and stopped["action"] == "stopped"
        resilience = (await client.call_tool("get_resilience_status", {})).structured_content
    assert resilience is not None and resilience["delivery"] == "bridge" and resilience["outbox"]["delivered"] == 2
    await await_gone(restarted["pid"])


async def test_start_bridge_without_an_executable_is_a_tool_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    settings = make_settings(
        None, tmp_path, CCTG_DELIVERY="bridge", CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health"
    )
    async with connected(settings) as client:
        result = await client.call_tool("start_bridge", {})
        status = (await client.call_tool("get_bridge_status", {})).structured_content
    assert result.is_error and "CC_TELEGRAM_BRIDGE_PATH" in text_of(result)
    assert status is not None and status["running"] is False and status["executable"] is None
