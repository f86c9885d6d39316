"""Health monitor in virtual time, and the application's checks against real objects."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from cctg_mcp.config import PacingSettings
from cctg_mcp.delivery.dispatcher import Dispatcher
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.events.catalogue import Event
from cctg_mcp.ops.health import (
    breaker_check,
    disk_check,
    dispatcher_check,
    http_endpoint_check,
    outbox_check,
    telegram_check,
)
from cctg_mcp.resilience.breaker import BreakerSettings, BreakerState, CircuitBreaker
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.config import parse_resilience_config
from cctg_mcp.resilience.errors import TelegramServerError, ValidationError
from cctg_mcp.resilience.health import CheckResult, HealthMonitor, HealthSettings, HealthStatus, aggregate
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.transports.telegram import TelegramTransport

pytestmark = pytest.mark.anyio

H, D, U, UNK = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY, HealthStatus.UNKNOWN
TOKEN = "123456789:AAExampleExampleExampleExampleExample12"


class Scripted:
    """A check that returns the statuses it is told, counts its calls, and can hang on a gate."""

    def __init__(self, *statuses: HealthStatus, hang: bool = False) -> None:
        self.statuses = list(statuses)
        self.now = H
        self.calls = 0
        self.hang = hang
        self.gate = anyio.Event()

    async def __call__(self) -> CheckResult:
        self.calls += 1
        if self.hang:
            await self.gate.wait()
        status = self.statuses.pop(0) if self.statuses else self.now
        return CheckResult(status, f"scripted {status.value}")


def monitor(clock: FakeClock | None = None, **settings: Any) -> HealthMonitor:
    base: dict[str, Any] = {
        "interval": 30.0,
        "timeout": 5.0,
        "failure_threshold": 3,
        "recovery_threshold": 2,
        "grace_period": 10.0,
    }
    return HealthMonitor(HealthSettings(**{**base, **settings}), clock or FakeClock())


async def statuses_after(m: HealthMonitor, name: str, n: int) -> list[HealthStatus]:
    out = []
    for _ in range(n):
        await m.check_now(name)
        out.append(m.status_of(name))
    return out


# ---- thresholds and aggregation ---------------------------------------------------------


async def test_failure_and_recovery_thresholds_with_degraded_in_between() -> None:
    m = monitor(failure_threshold=3, recovery_threshold=2)
    m.add_check("dep", Scripted(H, U, U, U, U, H, H, H), critical=True)
    assert m.status_of("dep") is UNK and m.report().overall is UNK
    assert await statuses_after(m, "dep", 8) == [H, D, D, U, U, D, H, H]
    c = m.report().component("dep")
    assert (c.consecutive_successes, c.consecutive_failures, c.checks, c.failures) == (3, 0, 8, 4)
    assert c.last_error == "scripted unhealthy"


async def test_a_check_may_itself_report_degraded() -> None:
    m = monitor(failure_threshold=1, recovery_threshold=2)
    m.add_check("dep", Scripted(H, D, H, H, U, D, H, H))
    # degraded ends a success streak; an unhealthy component stays unhealthy on a degraded result
    assert await statuses_after(m, "dep", 8) == [H, D, D, H, U, U, D, H]


async def test_overall_critical_vs_non_critical_and_readiness() -> None:
    m = monitor(failure_threshold=1)
    crit, side = Scripted(), Scripted()
    m.add_check("crit", crit, critical=True)
    m.add_check("side", side, critical=False)
    r = m.report()
    assert (r.overall, r.ready) == (UNK, True)
    only = await m.check_now("crit")  # one known healthy, one unknown
    assert [c.name for c in only.components] == ["crit"] and only.overall is H  # overall covers all
    assert m.report().overall is H
    side.now = U
    await m.check_now()
    r = m.report()
    assert (r.overall, r.ready, r.unhealthy) == (D, True, ["side"])
    crit.now = U
    await m.check_now()
    r = m.report()
    assert (r.overall, r.ready, sorted(r.unhealthy)) == (U, False, ["crit", "side"])
    crit.now = side.now = D
    await m.check_now()
    assert (m.report().overall, m.report().ready) == (U, False)  # unhealthy stays until real successes
    crit.now = side.now = H
    await m.check_now()
    await m.check_now()
    assert (m.report().overall, m.report().ready) == (H, True)


async def test_settings_from_config_are_seconds_and_validated() -> None:
    cfg = parse_resilience_config(
        {
            "health": {
                "interval": 1500,
                "timeout": 250,
                "failureThreshold": 4,
                "recoveryThreshold": 1,
                "gracePeriod": 0,
                "enabled": False,
            }
        }
    )
    s = HealthSettings.from_config(cfg.health)
    assert (s.enabled, s.interval, s.timeout, s.failure_threshold, s.recovery_threshold, s.grace_period) == (
        False,
        1.5,
        0.25,
        4,
        1,
        0.0,
    )
    with pytest.raises(ValueError, match="failure_threshold"):
        HealthSettings(failure_threshold=0)
    with pytest.raises(ValueError, match="interval"):
        HealthSettings(interval=0)


async def test_unknown_component_names_the_known_ones() -> None:
    m = monitor()
    m.add_check("alpha", Scripted())
    with pytest.raises(ValidationError, match="alpha"):
        await m.check_now("beta")
    with pytest.raises(ValueError, match="already"):
        m.add_check("alpha", Scripted())


# ---- the background loop -----------------------------------------------------------------


async def test_no_check_before_the_grace_period_then_every_interval() -> None:
    clock = FakeClock()
    m = monitor(clock, grace_period=10.0, interval=30.0)
    check = Scripted()
    m.add_check("dep", check)
    assert not m.live
    async with anyio.create_task_group() as tg:
        await tg.start(m.run)
        assert m.live
        await clock.advance(9.999)
        assert check.calls == 0 and m.status_of("dep") is UNK
        await clock.advance(0.001)
        assert check.calls == 1 and m.status_of("dep") is H
        await clock.advance(29.9)
        assert check.calls == 1
        await clock.advance(0.1)
        assert check.calls == 2 and m.rounds == 2
        tg.cancel_scope.cancel()
    assert not m.live and m.report().live is False


async def test_a_hanging_check_is_cut_at_its_timeout_and_the_report_answers_meanwhile() -> None:
    clock = FakeClock()
    m = monitor(clock, grace_period=0.0, failure_threshold=1, timeout=5.0)
    hung, fine = Scripted(hang=True), Scripted()
    m.add_check("hung", hung, critical=True, kind="http", timeout=2.0)
    m.add_check("fine", fine)
    async with anyio.create_task_group() as tg:
        await tg.start(m.run)
        await anyio.wait_all_tasks_blocked()
        # The loop is stuck on "hung", yet the report answers at once from the cache.
        assert hung.calls == 1 and fine.calls == 1
        r = m.report()
        assert r.component("hung").status is UNK and r.component("fine").status is H
        await clock.advance(1.999)
        assert m.status_of("hung") is UNK
        await clock.advance(0.001)
        c = m.report().component("hung")
        assert c.status is U and c.last_error is not None and "timed out after 2s" in c.last_error
        assert c.latency_s == pytest.approx(2.0)
        assert m.report().overall is U and not m.report().ready
        tg.cancel_scope.cancel()


async def test_ten_concurrent_check_now_calls_start_one_probe() -> None:
    m = monitor()
    check = Scripted(hang=True)
    m.add_check("dep", check)
    done: list[HealthStatus] = []

    async def ask() -> None:
        report = await m.check_now("dep")
        done.append(report.component("dep").status)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            assert check.calls == 1 and done == []
            check.gate.set()
    assert check.calls == 1 and done == [H] * 10 and m.report().component("dep").checks == 1


async def test_a_raising_check_is_a_failure_with_a_redacted_message() -> None:
    m = monitor(failure_threshold=1)

    async def broken() -> CheckResult:
        raise RuntimeError(f"GET https://api.telegram.org/bot{TOKEN}/getMe exploded")

    m.add_check("dep", broken)
    await m.check_now("dep")
    c = m.report().component("dep")
    assert c.status is U and c.last_error is not None and "exploded" in c.last_error
    assert TOKEN not in str(m.report())
    data = m.report().to_dict()
    assert data["overall"] == "degraded" and data["components"][0]["status"] == "unhealthy"  # not critical
    assert json.loads(json.dumps(data)) == data


# ---- history, trend, listeners ----------------------------------------------------------


async def test_trend_and_bounded_history() -> None:
    m = monitor(failure_threshold=1, recovery_threshold=1)
    m.add_check("up", Scripted(U, U, U, U, H, H, H, H))
    m.add_check("down", Scripted(H, H, H, H, U, U, U, U))
    m.add_check("flat", Scripted())
    for _ in range(8):
        await m.check_now()
    r = m.report()
    assert r.component("up").trend == "improving"
    assert r.component("down").trend == "degrading"
    assert r.component("flat").trend == "stable"
    for _ in range(60):
        await m.check_now("flat")
    assert len(m.history("flat")) == 50 and m.report().component("flat").checks == 68


async def test_listeners_hear_transitions_and_a_raising_listener_is_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = monitor(failure_threshold=2, recovery_threshold=1)
    m.add_check("dep", Scripted(H, U, U, U, H))
    heard: list[tuple[str, str, str, str]] = []
    heard_async: list[str] = []

    def bad(*_: Any) -> None:
        raise RuntimeError("listener bug")

    def good(name: str, old: HealthStatus, new: HealthStatus, result: CheckResult) -> None:
        assert m.status_of(name) is new  # committed before listeners run
        heard.append((name, old.value, new.value, result.status.value))

    async def later(name: str, old: HealthStatus, new: HealthStatus, result: CheckResult) -> None:
        await anyio.lowlevel.checkpoint()
        heard_async.append(new.value)

    m.add_listener(bad)
    m.add_listener(good)
    m.add_listener(later)
    await statuses_after(m, "dep", 5)
    assert heard == [
        ("dep", "unknown", "healthy", "healthy"),
        ("dep", "healthy", "degraded", "unhealthy"),
        ("dep", "degraded", "unhealthy", "unhealthy"),
        ("dep", "unhealthy", "healthy", "healthy"),
    ]
    assert heard_async == ["healthy", "degraded", "unhealthy", "healthy"]
    assert sum("listener" in r.getMessage() and "raised" in r.getMessage() for r in caplog.records) == 4


# ---- component checks against real objects ------------------------------------------------


async def test_breaker_check_follows_a_real_breaker() -> None:
    clock = FakeClock()
    settings = BreakerSettings(failure_threshold=1, success_threshold=1, open_timeout=10.0)
    breaker = CircuitBreaker("telegram", settings, clock=clock)
    check = breaker_check(breaker)
    assert (await check()).status is H

    async def fail() -> None:
        raise TelegramServerError("Telegram sendMessage failed: 502 Bad Gateway", error_code=502)

    with pytest.raises(TelegramServerError):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    result = await check()
    assert result.status is U and "open" in result.message and "502" in result.message
    assert result.details["retry_after_s"] == pytest.approx(10.0)
    await clock.advance(10.0)
    permit = breaker.acquire()  # the probe
    assert (await check()).status is D
    permit.record_success()
    assert (await check()).status is H
    breaker.isolate()
    assert (await check()).status is U
    breaker.disable()
    assert (await check()).status is D


def _event(n: int) -> Event:
    return Event(event_id=f"e{n}", type="info_notification", title="t", description="d", task_id=f"t{n}")


async def test_outbox_check_on_a_real_outbox(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "outbox.sqlite3", max_pending=10)
    try:
        check = outbox_check(box, max_oldest_age_s=300)
        result = await check()
        assert result.status is H and result.details["pending"] == 0
        await box.enqueue(_event(1), [1, 2])
        result = await check()
        assert result.status is H and result.details["pending"] == 2
        await box.enqueue(_event(2), [1], now=time.time() - 900)  # waiting for 15 minutes
        result = await check()
        assert result.status is D and "waited" in result.message and result.details["oldest_pending_age_s"] > 300
        (row,) = await box.claim_due("w", 60, limit=1)
        await box.mark_dead(row.id, "403 blocked")
        result = await check()
        assert result.status is D and "1 dead" in result.message
        for n in range(3, 9):
            await box.enqueue(_event(n), [1])
        result = await check()  # 8 pending + 0 in flight of max 10 → 80%: not yet nearly full
        assert result.status is D
        await box.enqueue(_event(9), [1])
        result = await check()
        assert result.status is U and "nearly full" in result.message
    finally:
        await box.close()


class _NoSender:
    async def send_message(self, chat_id: int, text: str, **_: Any) -> int:
        raise AssertionError("nothing should be sent")


class _NoPipeline:
    async def call(
        self, operation: str, fn: Any, *, deadline: float | None = None, event_type: str | None = None
    ) -> Any:
        return await fn()


async def test_dispatcher_check_on_a_real_dispatcher(tmp_path: Path) -> None:
    clock = FakeClock()
    box = await Outbox.open(tmp_path / "outbox.sqlite3")
    pacer = Pacer(PacingSettings(), clock=clock)
    dispatcher = Dispatcher(box, _NoSender(), _NoPipeline(), pacer, clock=clock, idle_poll_s=5.0)
    check = dispatcher_check(dispatcher, max_silence_s=60.0)
    try:
        result = await check()
        assert result.status is U and "not running" in result.message
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            result = await check()
            assert result.status is H and result.details["heartbeat_age_s"] == 0
            dispatcher.paused = True
            assert (await check()).status is D
            dispatcher.paused = False
            dispatcher.min_priority = "high"
            assert "degraded mode" in (await check()).message
            dispatcher.min_priority = "low"
            pacer.pause(7.0)
            assert (await check()).status is D
            await clock.advance(7.0)
            assert dispatcher.heartbeat is not None
            dispatcher.heartbeat -= 61.0  # as if the loop had been stuck for a minute
            result = await check()
            assert result.status is U and "stalled" in result.message
            tg.cancel_scope.cancel()
        assert (await check()).status is U
    finally:
        await box.close()


async def test_disk_check_reads_real_free_space(tmp_path: Path) -> None:
    free_mb = shutil.disk_usage(tmp_path).free / 1_048_576
    result = await disk_check(tmp_path / "not" / "created" / "yet", min_free_mb=1)()
    assert result.status is H and result.details["path"] == str(tmp_path)
    assert (await disk_check(tmp_path, min_free_mb=free_mb * 10)()).status is U
    assert (await disk_check(tmp_path, min_free_mb=free_mb / 1.5)()).status is D


async def test_telegram_check_through_the_real_transport(standin: TelegramStandIn) -> None:
    transport = TelegramTransport(standin.token, standin.base_url)
    check = telegram_check(transport)
    try:
        with anyio.fail_after(10):
            result = await check()
            assert result.status is H and result.details["bot"] == "cctg_test_bot"
            standin.set_fault(FaultMode.UNAUTHORIZED, methods={"getMe"})
            result = await check()
            assert result.status is U and "TELEGRAM_INVALID_TOKEN" in result.message
            assert standin.token not in result.message
            standin.set_fault(FaultMode.RATE_LIMIT, methods={"getMe"}, retry_after=3)
            result = await check()
            assert result.status is D and result.details["retry_after_s"] == 3
            standin.set_fault(FaultMode.SERVER_ERROR, methods={"getMe"}, status=503)
            assert (await check()).status is U
    finally:
        await transport.aclose()


async def test_http_endpoint_check_against_a_real_server(standin: TelegramStandIn) -> None:
    url = f"{standin.base_url}/bot{standin.token}/getMe"
    with anyio.fail_after(10):
        ok = await http_endpoint_check("bridge-health", url, "GET", 2.0, [200])()
        assert ok.status is H and ok.details["status_code"] == 200
        assert standin.token not in ok.message
        wrong = await http_endpoint_check("x", url, "GET", 2.0, [204])()
        assert wrong.status is U and "expected 204" in wrong.message
        standin.set_fault(FaultMode.SERVER_ERROR, status=500)
        down = await http_endpoint_check("x", url, "GET", 2.0, [200], retries=2)()
        assert down.status is U and "HTTP 500" in down.message and down.details["attempts"] == 3
        standin.set_fault(FaultMode.RATE_LIMIT)
        assert (await http_endpoint_check("x", url)()).status is D
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        refused = await http_endpoint_check("x", f"http://127.0.0.1:{port}/health", timeout=2.0)()
        assert refused.status is U and "ConnectError" in refused.message


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ((H, U), U),  # exactly half of the endpoints down: unhealthy (the seed's rule)
        ((H, H, U), D),  # less than half: degraded
        ((U, U, H), U),
        ((H, H), H),
    ],
)
def test_half_or_more_endpoints_unhealthy_is_unhealthy(
    endpoints: tuple[HealthStatus, ...], expected: HealthStatus
) -> None:
    from types import SimpleNamespace

    comps = [SimpleNamespace(kind="http", critical=False, status=s) for s in endpoints]
    comps.append(SimpleNamespace(kind="component", critical=False, status=U))  # not an endpoint
    assert aggregate(comps) is (expected if expected is not H else D)
