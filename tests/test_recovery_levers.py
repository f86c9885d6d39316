"""Recovery levers that depend on the delivery mode: the dispatcher loop restart, and bridge
fallback (event files are already the fallback, so nothing is paused)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers import USERS, direct_answers, fast_config, make_settings, present

from cctg_mcp.app import open_service
from cctg_mcp.config import load_settings
from cctg_mcp.resilience.errors import RecoveryStrategy
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

CONFIG = fast_config(health={"enabled": False}, recovery={"recoveryDelay": 0, "maxRecoveryAttempts": 1})


async def test_restart_brings_a_killed_dispatcher_loop_back_and_it_delivers(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    async with open_service(make_settings(standin, tmp_path), resilience=CONFIG) as runtime:
        service = runtime.service
        dispatcher = service.dispatcher
        assert dispatcher is not None
        assert present(service.supervisor).kill(hold=True)
        with anyio.fail_after(10):
            await present(service.supervisor).wait_stopped()
        assert not dispatcher.running
        assert runtime.recovery is not None
        manager = runtime.recovery  # picks restart by default for a stopped loop
        event = service.build_event(type="info_notification", title="t", description="while the loop was down")
        dispatcher.paused = True  # the tool's own attempt is held too: only the loop can deliver
        queued = await service.submit(event)
        assert queued.status == "queued"
        dispatcher.paused = False
        session = await manager.recover("dispatcher")
        assert session.attempts[0].strategy == RecoveryStrategy.RESTART
        assert session.status == "succeeded", session
        assert dispatcher.running
        await standin.await_messages(len(USERS), timeout=10)


async def test_fallback_in_bridge_mode_keeps_writing_event_files(tmp_path: Path) -> None:
    settings = load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_DELIVERY": "bridge"})
    async with open_service(settings, resilience=CONFIG) as runtime:
        service = runtime.service
        session = await present(runtime.recovery).recover("bridge", strategy=RecoveryStrategy.FALLBACK)
        # bridge delivery has no fallback to switch to: doing nothing is not reported as a recovery
        assert session.status == "failed" and session.attempts[0].outcome == "failed"
        assert session.attempts[0].detail.startswith("no fallback in bridge delivery")
        assert service.dispatcher is not None and service.dispatcher.paused is False
        event = service.build_event(type="build_completed", title="Build", description="green", task_id="b-1")
        result = await service.submit(event)
    assert result.status == "queued" and result.reason and "has not picked it up" in result.reason  # no bridge runs
    assert [p.name.startswith("b-1_") for p in settings.events_dir.glob("*.json")] == [True]


async def test_alert_thresholds_come_from_the_monitoring_configuration(tmp_path: Path) -> None:
    config = fast_config(monitoring={"alertThresholds": {"errorRate": 0.25, "responseTime": 1500}})
    settings = load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_DELIVERY": "telegram"})
    async with open_service(settings, resilience=config) as runtime:
        service = runtime.service
        assert service.metrics is not None
        thresholds = service.metrics.thresholds
    assert (thresholds.error_rate, thresholds.response_time_ms) == (0.25, 1500)


async def test_prometheus_exposition_is_served_on_loopback_when_enabled(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    import socket

    import httpx

    with socket.socket() as probe:  # a free port for the exposition
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = fast_config(monitoring={"prometheus": {"enabled": True, "port": port, "endpoint": "/scrape"}})
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        service = runtime.service
        assert runtime.prometheus_port == port
        async with httpx.AsyncClient() as http:
            with anyio.fail_after(10):
                before = await http.get(f"http://127.0.0.1:{port}/scrape")
            event = service.build_event(type="info_notification", title="t", description="counted")
            assert (await service.submit(event)).status == "delivered"
            with anyio.fail_after(10):
                response = await http.get(f"http://127.0.0.1:{port}/scrape")
                wrong_path = await http.get(f"http://127.0.0.1:{port}/metrics")
    # Breaker state gauges exist from start-up, before any transition or call.
    assert 'cctg_breaker_state{breaker="telegram",state="closed"} 1.0' in before.text
    assert "process_resident_memory_bytes" in before.text
    assert response.status_code == 200 and wrong_path.status_code == 404
    assert "# TYPE" in response.text and 'operation="sendEvent"' in response.text  # the event's operation


async def test_retention_purges_finished_rows_and_answers_but_never_waiting_ones(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    from cctg_mcp.answers import Answers
    from cctg_mcp.delivery.housekeeping import purge_once
    from cctg_mcp.testing import FaultMode

    async with open_service(make_settings(standin, tmp_path), resilience=CONFIG) as runtime:
        service = runtime.service
        done = service.build_event(type="info_notification", title="t", description="delivered long ago")
        assert (await service.submit(done)).status == "delivered"
        standin.set_fault(FaultMode.SERVER_ERROR, status=502)
        waiting = service.build_event(type="info_notification", title="t", description="still waiting")
        assert (await service.submit(waiting)).status == "queued"
        standin.push_text(USERS[0], "an answer")
        with anyio.fail_after(10):
            while not (await direct_answers(service).responses(limit=10)).responses:
                await present(direct_answers(service).poller).round_done().wait()
        assert service.outbox is not None and isinstance(service.answers, Answers)
        kept = await purge_once(service.outbox, service.answers.store, retention_s=3600)  # nothing is that old yet
        assert kept.outbox_rows == 0 and kept.answers == 0
        purged = await purge_once(service.outbox, service.answers.store, retention_s=-1)  # all finished is "old"
        counts = await service.outbox.counts()
        stored = await direct_answers(service).responses(limit=10)
    assert purged.outbox_rows == len(USERS) and purged.answers == 1
    assert counts.delivered == 0 and counts.pending + counts.in_flight == len(USERS)
    assert stored.responses == []


async def test_a_429_pauses_every_send_for_retry_after_and_the_send_still_succeeds(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    from cctg_mcp.testing import FaultMode

    async with open_service(make_settings(standin, tmp_path), resilience=CONFIG) as runtime:
        service = runtime.service
        standin.set_fault(FaultMode.RATE_LIMIT, methods={"sendMessage"}, retry_after=1, count=1)
        event = service.build_event(type="info_notification", title="t", description="after a 429")
        result = await service.submit(event)
        assert service.dispatcher is not None and service.pipelines is not None
        pacer = service.dispatcher.pacer
    assert result.status == "delivered"
    assert pacer.pauses == 1  # the per-bot limit held the shared pacer, not just this retry
    assert len(standin.sent) == len(USERS)
    assert service.pipelines.for_component("telegram").breaker.statistics().failures == 0  # a 429 never counts


async def test_the_levers_say_they_hold_this_session_only_when_others_share_the_bot(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """Fallback and degradation pause this session's dispatcher; another live session on the
    data dir keeps claiming the shared queue, and the detail says so instead of implying all."""
    from cctg_mcp.delivery.local_coordination import LocalCoordinator

    settings = make_settings(standin, tmp_path)
    async with open_service(settings, resilience=CONFIG) as runtime:
        alone = await present(runtime.recovery).recover("telegram", strategy=RecoveryStrategy.FALLBACK)
        assert "this session only" not in alone.attempts[0].detail
        peer = LocalCoordinator(settings.data_dir)
        await peer.start()  # a second session joins the data dir (its own lock file)
        try:
            for strategy in (RecoveryStrategy.FALLBACK, RecoveryStrategy.GRACEFUL_DEGRADATION):
                session = await present(runtime.recovery).recover("telegram", strategy=strategy)
                detail = session.attempts[-1].detail
                assert "this session only: 1 other live session(s) sharing the bot keep delivering" in detail
        finally:
            await peer.aclose()
