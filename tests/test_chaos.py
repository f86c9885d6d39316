"""Chaos: each fault's effect and rollback (virtual time), the safety rules, and a seeded terrible network."""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from helpers import USERS, connected, fast_config, make_settings, text_of

from cctg_mcp.config import PacingSettings, load_settings
from cctg_mcp.delivery.dispatcher import Dispatcher
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.delivery.supervisor import DispatcherSupervisor
from cctg_mcp.ops.chaos import (
    ChaosSender,
    CpuSpikeExperiment,
    MemoryPressureExperiment,
    NetworkExperiment,
    build_chaos,
)
from cctg_mcp.resilience.chaos import (
    ChaosBusyError,
    ChaosController,
    ChaosRefusedError,
    Experiment,
    SafetyLimits,
    SafetyReading,
)
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock, FakeClock
from cctg_mcp.resilience.errors import NetworkError, TelegramRateLimited, TelegramServerError, ValidationError
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.testing import TelegramStandIn
from cctg_mcp.transports.api import BotApi

pytestmark = pytest.mark.anyio
TOKEN = "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz012"


class FakeTelegram:
    """An in-memory Telegram: every accepted message is recorded (in the order it accepted them)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[int, str, int]] = []
        self.calls = 0

    async def send_message(self, chat_id: int, text: str, *, reply_markup: Any = None, parse_mode: Any = "HTML") -> int:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        self.sent.append((chat_id, text, len(self.sent) + 1))
        return len(self.sent)

    async def get_me(self) -> dict[str, Any]:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        return {"id": 1, "is_bot": True}


def as_bot_api(fake: FakeTelegram) -> BotApi:
    """The fake implements only the calls the chaos sender and the dispatcher make."""
    return cast(BotApi, fake)


@dataclass
class FakeProbe:
    reading_now: SafetyReading = field(default_factory=lambda: SafetyReading(0, 0, 0, 0))
    healthy: bool = True
    checks: int = 0

    async def reading(self) -> SafetyReading:
        return self.reading_now

    async def recovered(self, since_epoch: float) -> tuple[bool, str]:
        self.checks += 1
        return self.healthy, "ok" if self.healthy else "breaker open"


@asynccontextmanager
async def hosted(controller: ChaosController, clock: FakeClock) -> AsyncIterator[ChaosController]:
    async with clock.autojump(), anyio.create_task_group() as tg:
        await tg.start(controller.run)
        yield controller
        tg.cancel_scope.cancel()


def network(name: str, clock: FakeClock, **kw: Any) -> tuple[ChaosController, ChaosSender, FakeTelegram, FakeProbe]:
    fake = FakeTelegram(clock)
    sender = ChaosSender(as_bot_api(fake), clock=clock)
    probe = FakeProbe()
    experiments: list[Experiment] = [NetworkExperiment(name, "test", sender)]
    return ChaosController("development", experiments, probe, clock=clock, **kw), sender, fake, probe


async def wait_done(controller: ChaosController, clock: FakeClock, limit: float = 600.0) -> None:
    with anyio.fail_after(30):
        start = clock.monotonic()
        while controller.active is not None:
            assert clock.monotonic() - start < limit
            await clock.sleep(0.1)


# ---- each network fault: effect, then rollback ------------------------------------------


async def test_partition_refuses_every_call_until_it_rolls_back_by_itself() -> None:
    clock = FakeClock()
    controller, sender, fake, _ = network("network_partition", clock)
    async with hosted(controller, clock):
        run = await controller.start("network_partition", duration_s=3.0)
        assert run.state == "active" and run.ends_in_s == 3.0
        for _ in range(5):
            with pytest.raises(NetworkError) as err:
                await sender.send_message(111, "hi")
            assert err.value.code == "ECONNREFUSED"
        assert fake.calls == 0
        await clock.sleep(3.1)
        await wait_done(controller, clock)
        assert await sender.send_message(111, "after") == 1
    (done,) = controller.history()
    assert done.ended_by == "duration" and not done.aborted and done.recovered is True
    assert done.observations["calls_faulted"] == {"refused": 5}
    assert 3.0 <= done.active_s < 3.6  # type: ignore[operator]


async def test_latency_is_added_on_the_clock_and_the_same_seed_reproduces_it() -> None:
    delays = []
    for _ in range(2):
        clock = FakeClock()
        controller, sender, fake, _ = network("high_latency", clock)
        async with hosted(controller, clock):
            await controller.start("high_latency", duration_s=60.0, intensity=0.5, seed=42)
            start = clock.monotonic()
            for i in range(20):
                await sender.send_message(111, f"m{i}")
            took = clock.monotonic() - start
            assert sender.fault is not None
            added = list(sender.fault.delays)
            await controller.stop()
        assert fake.calls == 20 and all(d in clock.sleeps for d in added)
        assert len(added) == 20 and took >= sum(added)
        mean = sum(added) / 20
        assert 0.5 < mean < 3.0 and max(added) <= 4 * (0.05 + 0.5 * 2.95)
        delays.append(added)
    assert delays[0] == delays[1]


async def test_message_loss_drops_requests_and_loses_responses_both() -> None:
    clock = FakeClock()
    controller, sender, fake, _ = network("message_loss", clock)
    async with hosted(controller, clock):
        await controller.start("message_loss", duration_s=60.0, intensity=1.0, seed=7)
        for i in range(40):
            with pytest.raises(NetworkError):
                await sender.send_message(111, f"m{i}")
        run = await controller.stop()
    assert run is not None
    counts = run.observations["calls_faulted"]
    assert counts["request_dropped"] + counts["response_lost"] == 40
    assert counts["request_dropped"] > 5 and counts["response_lost"] > 5
    # A lost response means Telegram has the message: exactly those reached it.
    assert [t for _, t, _ in fake.sent] == [lost.text for lost in sender.lost_responses]
    assert len(fake.sent) == counts["response_lost"]


async def test_error_responses_are_5xx_or_429_with_retry_after() -> None:
    clock = FakeClock()
    controller, sender, fake, _ = network("error_responses", clock)
    async with hosted(controller, clock):
        await controller.start("error_responses", duration_s=60.0, intensity=1.0, seed=3)
        kinds: Counter[str] = Counter()
        for i in range(50):
            try:
                await sender.send_message(111, f"m{i}")
            except TelegramRateLimited as exc:
                assert exc.retry_after is not None and 1 <= exc.retry_after <= 5
                kinds["429"] += 1
            except TelegramServerError as exc:
                assert exc.error_code in (500, 502, 503, 504)
                kinds["5xx"] += 1
        await controller.stop()
        assert await sender.send_message(111, "after") == 1
    assert kinds["429"] > 5 and kinds["5xx"] > 20 and fake.calls == 1


async def test_a_chat_target_spares_the_other_chats() -> None:
    clock = FakeClock()
    controller, sender, fake, _ = network("network_partition", clock)
    async with hosted(controller, clock):
        await controller.start("network_partition", duration_s=10.0, target="chat:222")
        assert await sender.send_message(111, "ok") == 1
        with pytest.raises(NetworkError):
            await sender.send_message(222, "cut off")
        await controller.stop()
        with pytest.raises(ValidationError):
            await controller.start("network_partition", duration_s=1, target="x")
        assert sender.fault is None and controller.active is None
    assert [c for c, _, _ in fake.sent] == [111]


# ---- the rules: production, one at a time, safety, shutdown, recovery ------------------


async def test_refused_in_production_with_how_to_enable() -> None:
    clock = FakeClock()
    fake = FakeTelegram(clock)
    controller = ChaosController(
        "production",
        [NetworkExperiment("network_partition", "t", ChaosSender(as_bot_api(fake)))],
        FakeProbe(),
        clock=clock,
    )
    async with hosted(controller, clock):
        with pytest.raises(ChaosRefusedError) as err:
            await controller.start("network_partition", duration_s=1.0)
    assert "production" in str(err.value) and "CCTG_ENVIRONMENT=development" in str(err.value)
    assert controller.history() == []


async def test_one_experiment_at_a_time_including_its_recovery() -> None:
    clock = FakeClock()
    controller, _, _, probe = network("network_partition", clock)
    probe.healthy = False
    async with hosted(controller, clock):
        await controller.start("network_partition", duration_s=1.0)
        with pytest.raises(ChaosBusyError):
            await controller.start("network_partition", duration_s=1.0)
        await clock.sleep(1.5)
        assert controller.active is not None and controller.active.state == "recovering"
        with pytest.raises(ChaosBusyError):
            await controller.start("network_partition", duration_s=1.0)
        probe.healthy = True
        await wait_done(controller, clock)
        second = await controller.start("network_partition", duration_s=1.0)
        assert second.id == "chaos-2"
        await wait_done(controller, clock)
    first = controller.history()[-1]
    assert first.recovered is True and first.time_to_recover_s is not None and first.time_to_recover_s > 0


async def test_safety_check_aborts_on_error_rate() -> None:
    clock = FakeClock()
    limits = SafetyLimits(max_error_rate=0.5, min_calls=10, check_interval_s=0.5)
    controller, sender, _, probe = network("error_responses", clock, limits=limits)
    async with hosted(controller, clock):
        await controller.start("error_responses", duration_s=60.0, intensity=1.0)
        await clock.sleep(2.0)
        assert sender.fault is not None
        probe.reading_now = SafetyReading(calls=20, errors=15, dead=0, backlog=3)
        await clock.sleep(1.0)
        assert sender.fault is None  # rolled back long before its 60 s
        await wait_done(controller, clock)
    (run,) = controller.history()
    assert run.aborted and run.ended_by == "safety" and "error rate 0.75" in (run.abort_reason or "")
    assert run.active_s is not None and run.active_s < 4.0 and run.recovered is True


async def test_safety_check_aborts_when_rows_die() -> None:
    clock = FakeClock()
    controller, sender, _, probe = network("message_loss", clock)
    async with hosted(controller, clock):
        await controller.start("message_loss", duration_s=60.0)
        probe.reading_now = SafetyReading(calls=1, errors=1, dead=1, backlog=0)
        await clock.sleep(1.0)
        assert sender.fault is None
        await wait_done(controller, clock)
    assert controller.history()[0].abort_reason == "1 delivery(ies) became dead during the experiment (bound 0)"


async def test_not_recovering_is_recorded_after_the_bounded_wait() -> None:
    clock = FakeClock()
    controller, _, _, probe = network("network_partition", clock, limits=SafetyLimits(recovery_timeout_s=30.0))
    probe.healthy = False
    async with hosted(controller, clock):
        await controller.start("network_partition", duration_s=1.0)
        await wait_done(controller, clock)
    (run,) = controller.history()
    assert run.recovered is False and "within 30s" in (run.recovery_detail or "") and probe.checks > 10


async def test_shutdown_rolls_the_fault_back() -> None:
    clock = FakeClock()
    controller, sender, _, _ = network("network_partition", clock)
    async with hosted(controller, clock):
        await controller.start("network_partition", duration_s=600.0)
        assert sender.fault is not None
    assert sender.fault is None
    assert controller.history()[0].ended_by == "shutdown" and controller.active is None


# ---- process faults ---------------------------------------------------------------------


async def _stack(
    tmp_path: Path, clock: Clock
) -> tuple[NotificationService, ChaosSender, FakeTelegram, DispatcherSupervisor]:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_ALLOWED_USERS": "111,222",
            "CCTG_DATA_DIR": str(tmp_path),
            "CCTG_ENVIRONMENT": "development",
        }
    )
    config = fast_config()
    metrics = MetricsRegistry(clock=clock)
    pipelines = PipelineSet(config, clock=clock, metrics=metrics, rng=random.Random(5))
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3", clock=clock)
    fake = FakeTelegram(clock)
    sender = ChaosSender(as_bot_api(fake), clock=clock)
    pacer = Pacer(PacingSettings(per_chat_per_second=1000, per_chat_burst=1000, global_per_second=1000), clock=clock)
    dispatcher = Dispatcher(
        outbox,
        sender,
        pipelines.for_component("telegram"),
        pacer,
        clock=clock,
        lease_s=60.0,
        send_timeout_s=10.0,
        idle_poll_s=1.0,
    )
    service = NotificationService(
        settings, outbox, dispatcher, clock=clock, pipelines=pipelines, metrics=metrics, resilience=config
    )
    return service, sender, fake, DispatcherSupervisor(dispatcher, clock=clock)


@pytest.mark.parametrize("restarted_by", ["rollback", "recovery"])
async def test_bridge_crash_kills_the_dispatcher_and_it_comes_back(tmp_path: Path, restarted_by: str) -> None:
    clock = FakeClock()
    service, sender, fake, supervisor = await _stack(tmp_path, clock)
    controller = build_chaos(service, sender, supervisor)
    assert service.outbox is not None
    try:
        async with clock.autojump(), anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            await tg.start(controller.run)
            await controller.start("bridge_crash", duration_s=600.0)
            assert not supervisor.running
            event = service.build_event(type="info_notification", title="t", description="queued while down")
            await service.outbox.enqueue(event, [111])
            await clock.sleep(2.0)
            assert fake.sent == [] and not supervisor.running  # killed and held: nothing goes out
            if restarted_by == "recovery":
                assert await supervisor.restart()
            stopped = await controller.stop()
            assert stopped is not None and stopped.ended_by == "stop"
            await wait_done(controller, clock)
            assert supervisor.running
            with anyio.fail_after(10):
                while not fake.sent:
                    await clock.sleep(0.1)
            tg.cancel_scope.cancel()
    finally:
        await service.outbox.close()
    (run,) = controller.history()
    assert run.observations["killed"] is True and run.observations["restarted_by"] == restarted_by
    assert run.recovered is True and supervisor.kills == 1


async def test_a_crashing_dispatcher_is_restarted_with_backoff() -> None:
    clock = FakeClock()

    class Crashy:
        running = False
        runs = 0

        async def run(self, *, task_status: Any) -> None:
            self.runs += 1
            self.running = True
            task_status.started()
            try:
                await clock.sleep(1.0)
            finally:
                self.running = False
            raise RuntimeError("boom")

    crashy = Crashy()
    supervisor = DispatcherSupervisor(crashy, clock=clock, restart_delay=1.0, max_restart_delay=4.0)  # type: ignore[arg-type]
    async with clock.autojump(), anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        await clock.sleep(1.0 + 1 + 1.0 + 2 + 1.0 + 4 + 0.5)
        tg.cancel_scope.cancel()
    assert crashy.runs == 4 and supervisor.crashes == 3 and supervisor.last_error == "RuntimeError: boom"


async def test_memory_pressure_holds_then_releases() -> None:
    from cctg_mcp.resilience.chaos import RunContext

    exp = MemoryPressureExperiment(max_mb=40)
    ctx = RunContext("r", 0.5, None, 1, 1.0, SYSTEM_CLOCK, random.Random(1))
    await exp.inject(ctx)
    assert ctx.observations["target_mb"] == 20 and sum(len(c) for c in exp._chunks) == 20 << 20
    await exp.rollback(ctx)
    assert exp._chunks == [] and ctx.observations["held_mb"] == 20


async def test_cpu_spike_runs_a_duty_cycled_thread_and_stops_it() -> None:
    from cctg_mcp.resilience.chaos import RunContext

    exp = CpuSpikeExperiment()
    ctx = RunContext("r", 0.5, None, 1, 1.0, SYSTEM_CLOCK, random.Random(1))

    def spinning() -> int:
        return sum(t.name == "chaos-cpu-spike" and t.is_alive() for t in threading.enumerate())

    await exp.inject(ctx)
    assert spinning() == 1
    ticks = 0
    with anyio.fail_after(5):
        for _ in range(20):  # the event loop keeps turning while the thread spins
            await anyio.sleep(0.02)
            ticks += 1
    await exp.rollback(ctx)
    assert ticks == 20 and spinning() == 0
    assert ctx.observations["duty_cycle"] == 0.45 and ctx.observations["cycles"] >= 2
    assert 0 < ctx.observations["cpu_busy_s"] < 1.0


# ---- a seeded terrible network, end to end through the real pipeline, in virtual time ----


async def test_terrible_network_every_event_exactly_once_or_dead(tmp_path: Path) -> None:
    """Events go through ``service.submit`` (the tool path) and the real dispatcher loop, under
    its supervisor, all in virtual time (the outbox's due times come from the same clock)."""
    clock = FakeClock()
    service, sender, fake, supervisor = await _stack(tmp_path, clock)
    controller = build_chaos(service, sender, supervisor, seed=2024)
    outbox, per_run = service.outbox, 50
    assert outbox is not None and service.pipelines is not None
    cycle = ["network_partition", "message_loss", "error_responses", "high_latency", "message_loss"]
    accepted: dict[str, str] = {}
    try:
        async with clock.autojump(), anyio.create_task_group() as tg:
            await tg.start(controller.run)
            await tg.start(supervisor.run)
            for n, name in enumerate(cycle):
                await wait_done(controller, clock)
                await controller.start(name, duration_s=3.0, intensity=0.6)
                for i in range(n * per_run, (n + 1) * per_run):
                    event = service.build_event(type="info_notification", title="soak", description=f"id=ev-{i:04d}")
                    result = await service.submit(event, operation="sendMessage")
                    assert result.status in ("delivered", "queued")
                    accepted[f"ev-{i:04d}"] = event.event_id
                    if i % 10 == 9:
                        await clock.sleep(0.5)  # events keep arriving while the fault is on
            await wait_done(controller, clock)
            with anyio.fail_after(60):
                while (c := await outbox.counts()).pending + c.in_flight:
                    await clock.sleep(0.5)
            tg.cancel_scope.cancel()
        seen = Counter((chat, _ev(text)) for chat, text, _ in fake.sent)
        lost = Counter((r.chat_id, _ev(r.text)) for r in sender.lost_responses)
        dead = 0
        for ev, event_id in accepted.items():
            for row in await outbox.deliveries(event_id):
                key = (row.chat_id, ev)
                if row.status == "dead":
                    dead += 1
                    assert seen[key] == lost[key]
                else:
                    assert row.status == "delivered"
                    assert seen[key] == 1 + lost[key], (key, seen[key], lost[key])  # exactly once + lost responses
    finally:
        await outbox.close()
    runs = controller.history(limit=50)
    faults: Counter[str] = Counter()
    for r in runs:
        faults.update(r.observations.get("calls_faulted", {}))
    assert {"refused", "response_lost", "request_dropped", "delayed"} <= set(faults), faults
    assert any(k in faults for k in ("500", "502", "503", "504"))
    duplicates = sum(seen.values()) - len(seen)
    assert duplicates == sum(lost.values()) == faults["response_lost"] > 0  # every duplicate is a lost response
    assert dead == 0 and len(accepted) == len(cycle) * per_run and len(seen) == len(accepted) * len(USERS)
    assert [r.experiment for r in runs][::-1] == cycle
    assert all(r.recovered for r in runs), [(r.experiment, r.recovery_detail) for r in runs]
    assert service.pipelines.for_component("telegram").breaker.state.value == "closed"
    transitions = service.metrics.breaker_transitions if service.metrics else {}
    assert transitions.get(("telegram", "closed", "open"), 0) >= 1  # the partition did open it


def _ev(text: str) -> str:
    found = re.search(r"ev-\d{4}", text)
    assert found is not None
    return found.group(0)


# ---- the tools, end to end over MCP ------------------------------------------------------


async def test_tools_run_show_stop_and_record_a_recovered_run(tmp_path: Path) -> None:
    with TelegramStandIn() as standin:
        async with connected(make_settings(standin, tmp_path)) as client:
            listed = (await client.call_tool("list_chaos_experiments", {})).structured_content
            assert listed is not None and listed["enabled"] is True
            assert {e["name"] for e in listed["experiments"]} == {
                "network_partition",
                "high_latency",
                "message_loss",
                "error_responses",
                "bridge_crash",
                "memory_pressure",
                "cpu_spike",
            }
            started = await client.call_tool(
                "run_chaos_experiment", {"experiment": "network_partition", "duration_ms": 60_000, "seed": 9}
            )
            assert not started.is_error, text_of(started)
            busy = await client.call_tool("run_chaos_experiment", {"experiment": "high_latency", "duration_ms": 500})
            assert busy.is_error and "one experiment runs at a time" in text_of(busy)
            sent = await client.call_tool("send_telegram_message", {"message": "during the partition"})
            assert sent.structured_content is not None and sent.structured_content["status"] == "queued"
            history = (await client.call_tool("get_chaos_history", {})).structured_content
            assert history is not None and history["active"]["experiment"] == "network_partition"
            assert history["active"]["state"] == "active" and history["active"]["parameters"]["seed"] == 9
            stopped = (await client.call_tool("stop_chaos_experiment", {})).structured_content
            assert stopped is not None and stopped["stopped"] is True
            with anyio.fail_after(20):
                while True:
                    history = (await client.call_tool("get_chaos_history", {"limit": 5})).structured_content
                    assert history is not None
                    if history["active"] is None:
                        break
                    await anyio.sleep(0.1)
            (run,) = history["runs"]
            assert run["ended_by"] == "stop" and run["recovered"] is True and run["time_to_recover_s"] is not None
            assert run["observations"]["calls_faulted"]["refused"] >= 1
        assert len(standin.messages_for(USERS[0])) == 1  # the queued message went out after the rollback


async def test_tools_refuse_in_production_and_say_how_to_enable(tmp_path: Path) -> None:
    with TelegramStandIn() as standin:
        async with connected(make_settings(standin, tmp_path, CCTG_ENVIRONMENT="production")) as client:
            listed = (await client.call_tool("list_chaos_experiments", {})).structured_content
            result = await client.call_tool("run_chaos_experiment", {"experiment": "cpu_spike", "duration_ms": 100})
    assert listed is not None and listed["enabled"] is False
    assert result.is_error and "CCTG_ENVIRONMENT=development" in text_of(result) and "production" in text_of(result)


def test_lease_seconds_setting_for_fast_crash_recovery(tmp_path: Path) -> None:
    from cctg_mcp.resilience.errors import ConfigurationError

    base = {"CCTG_DATA_DIR": str(tmp_path)}
    assert load_settings(base).lease_seconds == 120.0
    assert load_settings({**base, "CCTG_LEASE_SECONDS": "20"}).lease_seconds == 20.0
    with pytest.raises(ConfigurationError, match="CCTG_LEASE_SECONDS"):
        load_settings({**base, "CCTG_LEASE_SECONDS": "2"})
