"""Bridge mode under chaos, through the running server and a real (stand-in) bridge process:
``bridge_crash`` SIGKILLs the bridge and automatic recovery (health check, then the seed's
priority-one ``bridge-restart`` backup) brings it back; ``event_write_faults`` fails event-file
writes, the events stay queued and are written after the rollback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from helpers import FakeBridge, await_gone, call, connected, fast_config

pytestmark = pytest.mark.anyio

FAST_BRIDGE = {
    "circuitBreaker": {"bridge": {"failureThreshold": 50, "timeout": 200}},
    "retry": {"bridge": {"maxAttempts": 2, "baseDelay": 10, "maxDelay": 20, "jitterEnabled": False}},
}


@pytest.fixture
def bridge_env(fake_bridge: FakeBridge, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBridge]:
    for key, value in fake_bridge.env().items():
        monkeypatch.setenv(key, value)  # the bridge the server starts inherits its environment
    yield fake_bridge


async def test_a_killed_bridge_is_restarted_by_automatic_recovery(bridge_env: FakeBridge, tmp_path: Path) -> None:
    first = await bridge_env.manager().start()  # running before the server starts (found by its pid file)
    assert first.success and first.pid is not None
    config = fast_config(
        **FAST_BRIDGE,
        health={"interval": 100, "timeout": 1000, "failureThreshold": 1, "recoveryThreshold": 1, "gracePeriod": 0},
        recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1, "restartDelay": 0},
    )
    async with connected(bridge_env.settings(tmp_path / "data"), config) as client:
        listed = await call(client, "list_chaos_experiments", limit=30)
        names = {e["name"]: e for e in listed["experiments"]}
        assert listed["enabled"] and {"bridge_crash", "event_write_faults"} <= set(names)

        await call(
            client, "run_chaos_experiment", {"experiment": "bridge_crash", "duration_ms": 60_000, "seed": 7}, limit=30
        )
        await await_gone(first.pid)
        with anyio.fail_after(30):
            while True:
                history = await call(client, "get_recovery_history", {}, limit=30)
                done = [s for s in history["sessions"] if s["component"] == "bridge" and s["status"] == "succeeded"]
                if done:
                    break
                await anyio.sleep(0.1)  # the monitor and recovery run on their own
        (session,) = done
        assert (session["trigger"], session["error_code"]) == ("health", "BRIDGE_UNHEALTHY")
        assert session["attempts"][0]["outcome"] == "failed"  # the retry saw /health fail: no false success
        assert session["attempts"][-1]["backup"] == "bridge-restart"
        assert "bridge /health healthy" in session["attempts"][-1]["detail"]

        stopped = await call(client, "stop_chaos_experiment", limit=30)
        observed = stopped["run"]["observations"]
        assert observed["killed_pid"] == first.pid and observed["restarted_by"] == "recovery"
        assert observed["bridge_running"] and observed["new_pid"] != first.pid
        status = await call(client, "get_bridge_status", limit=30)
        assert (status["running"], status["health"], status["pid"]) == (True, "healthy", observed["new_pid"])

        sent = await call(client, "send_telegram_message", {"message": "after the crash"}, limit=30)
        assert sent["status"] == "delivered"
        processed = await bridge_env.await_processed(1)
        assert processed[-1]["event"]["description"] == "after the crash"
        await call(client, "stop_bridge", limit=30)
    await await_gone(observed["new_pid"])


async def test_event_write_faults_keep_events_queued_until_rolled_back(bridge_env: FakeBridge, tmp_path: Path) -> None:
    config = fast_config(**FAST_BRIDGE, health={"enabled": False}, recovery={"enabled": False})
    settings = bridge_env.settings(tmp_path / "data")
    async with connected(settings, config) as client:
        run = await call(
            client,
            "run_chaos_experiment",
            {"experiment": "event_write_faults", "duration_ms": 60_000, "intensity": 1.0, "seed": 3},
            limit=30,
        )
        assert run["experiment"] == "event_write_faults"
        sent = await call(
            client,
            "send_telegram_event",
            {"type": "build_completed", "title": "B", "description": "d", "task_id": "w1"},
            limit=30,
        )
        assert sent["status"] == "queued", sent  # seed 3 draws ENOSPC for the first write
        assert "no space left on device (ENOSPC). The event stays queued" in sent["reason"], sent
        assert list(settings.events_dir.glob("w1_*.json")) == []

        stopped = await call(client, "stop_chaos_experiment", limit=30)
        writes = stopped["run"]["observations"]["event_writes"]
        assert writes["failed"] >= 1 and writes["failed"] == writes["writes"]  # intensity 1: every write failed
        with anyio.fail_after(30):
            while not list(settings.events_dir.glob("w1_*.json")):  # noqa: ASYNC110  (the dispatcher writes it)
                await anyio.sleep(0.05)
        (written,) = settings.events_dir.glob("w1_*.json")
        assert json.loads(written.read_text())["title"] == "B"
        status = await call(client, "get_resilience_status", limit=30)
    assert status["outbox"]["dead"] == 0
