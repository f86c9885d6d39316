"""Chaos in bridge delivery: kill the real bridge process, fail writes to the event directory.

- ``bridge_crash`` SIGKILLs the running CCTelegram bridge (the process ``start_bridge``
  started, or the one its pid file names). Nothing restarts it here: the health monitor sees
  ``/health`` fail, automatic recovery runs its chain and the seed's priority-one backup
  ``bridge-restart`` (for ``BRIDGE_UNHEALTHY``) starts it again. The rollback starts it only
  if nothing did, and says who restarted it (``restarted_by``: recovery or rollback).
- ``event_write_faults`` makes a share ``intensity`` of event-file writes fail at the open,
  as a full or busy disk does (``ENOSPC`` or ``EAGAIN``, drawn from the run's seeded RNG):
  the rows stay queued and are written once the fault is rolled back; nothing becomes dead.

``BridgeProbe`` gives the controller its safety readings and the recovery check: the bridge
breaker closed, the bridge running and healthy, the backlog drained.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Any

import anyio

from cctg_mcp.delivery.bridge import BRIDGE_COMPONENT, BridgeDispatcher
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.chaos import RunContext, SafetyReading
from cctg_mcp.transports.bridge.files import Opener

#: The errors a faulted write raises: both keep the row queued (ENOSPC a resource error, EAGAIN retried).
WRITE_ERRORS = (errno.ENOSPC, errno.EAGAIN)


class BridgeProcessCrashExperiment:
    """A chaos experiment that kills the CCTelegram bridge process (bridge delivery)."""

    name = "bridge_crash"
    description = (
        "Bridge mode: SIGKILL the running CCTelegram bridge process; automatic recovery (health check, "
        "then the bridge-restart backup) is expected to start it again. The rollback starts it if nothing did."
    )

    def __init__(self, service: NotificationService) -> None:
        self.service = service
        self._killed_pid: int | None = None
        self._killed_at = 0.0

    def unavailable(self) -> str | None:
        manager = self.service.bridge
        if manager.executable_or_none() is None:
            return "no bridge executable (CC_TELEGRAM_BRIDGE_PATH) to restart it with"
        if not manager.check_process().running:
            return "the bridge is not running: start it first (start_bridge)"
        return None

    async def inject(self, ctx: RunContext) -> None:
        manager = self.service.bridge
        state = manager.check_process()
        if not state.running or state.pid is None:
            ctx.observations["killed_pid"] = None
            return
        self._killed_pid, self._killed_at = state.pid, ctx.clock.monotonic()
        os.kill(state.pid, signal.SIGKILL)
        with anyio.move_on_after(5.0):  # wait (bounded) until the process is really gone
            while manager.check_process().pid == state.pid:  # noqa: ASYNC110  (a process, no event to wait on)
                await anyio.sleep(0.02)
        ctx.observations["killed_pid"] = state.pid

    async def rollback(self, ctx: RunContext) -> None:
        manager = self.service.bridge
        state = manager.check_process()
        by: str | None = "recovery" if state.running and state.pid != self._killed_pid else None
        if not state.running:
            result = await manager.start()
            by = "rollback" if result.success or result.action == "started_unverified" else None
            state = manager.check_process()
        ctx.observations.update(
            restarted_by=by,
            bridge_running=state.running,
            new_pid=state.pid,
            downtime_s=round(ctx.clock.monotonic() - self._killed_at, 3),
        )


class EventWriteFaultExperiment:
    """A chaos experiment that fails a share of event-file writes as a full or busy disk does."""

    name = "event_write_faults"
    description = (
        "Bridge mode: a share (intensity) of event-file writes fail as a full or busy disk does (ENOSPC, EAGAIN); "
        "the events stay queued and are written after the rollback."
    )

    def __init__(self, dispatcher: BridgeDispatcher | None) -> None:
        self.dispatcher = dispatcher
        self._original: Opener | None = None
        self._counts: dict[str, int] = {}

    def unavailable(self) -> str | None:
        return None if self.dispatcher is not None else "no bridge dispatcher (not configured)"

    async def inject(self, ctx: RunContext) -> None:
        assert self.dispatcher is not None
        writer = self.dispatcher.writer
        original = self._original = writer.opener
        counts = self._counts = {"writes": 0, "failed": 0}

        def faulty_open(path: str, flags: int, mode: int) -> int:
            counts["writes"] += 1
            if ctx.rng.random() < ctx.intensity:
                code = ctx.rng.choice(WRITE_ERRORS)
                counts["failed"] += 1
                counts[errno.errorcode[code]] = counts.get(errno.errorcode[code], 0) + 1
                raise OSError(code, f"{os.strerror(code)} (chaos)", path)
            return original(path, flags, mode)

        writer.opener = faulty_open

    async def rollback(self, ctx: RunContext) -> None:
        if self.dispatcher is not None and self._original is not None:
            self.dispatcher.writer.opener = self._original
            self.dispatcher.wake()  # the queued rows are written now
        self._original = None
        ctx.observations["event_writes"] = dict(self._counts)


async def safety_reading(service: NotificationService, component: str) -> SafetyReading:
    """What the safety checks watch: the component's calls and errors, dead letters, backlog."""
    calls = errors = dead = backlog = 0
    if service.metrics is not None:
        for m in service.metrics.series():
            if m.component == component:
                calls, errors = calls + m.calls, errors + m.calls - m.successes
    if service.outbox is not None:
        counts = await service.outbox.counts()
        dead, backlog = counts.dead, counts.pending + counts.in_flight
    return SafetyReading(calls, errors, dead, backlog)


def unclosed_breakers(service: NotificationService, component: str) -> list[str]:
    """Every breaker of ``component`` (its own and its per-operation ones) not closed (or
    disabled), as problems: a chaos run has recovered only when none is left."""
    if service.pipelines is None:
        return []
    return [
        f"the {breaker.name} breaker is {breaker.state.value}"
        for breaker in service.pipelines.for_component(component).breakers.values()
        if breaker.state.value not in ("closed", "disabled")
    ]


class BridgeProbe:
    """Safety readings and the recovery check in bridge delivery."""

    def __init__(self, service: NotificationService) -> None:
        self.service = service

    async def reading(self) -> SafetyReading:
        return await safety_reading(self.service, BRIDGE_COMPONENT)

    async def recovered(self, since_epoch: float) -> tuple[bool, str]:
        svc, problems = self.service, []
        if svc.dispatcher is not None and not svc.dispatcher.running:
            problems.append("the dispatcher is not running")
        problems += unclosed_breakers(svc, BRIDGE_COMPONENT)
        manager = svc.bridge
        if manager.executable_or_none() is not None:  # a bridge this server can manage
            if not manager.check_process().running:
                problems.append("the bridge is not running")
            else:
                health = await manager.health()
                if health.status != "healthy":
                    problems.append(f"the bridge's /health is {health.status}")
        if svc.outbox is not None:
            counts = await svc.outbox.counts()
            age = counts.oldest_pending_age_s
            if age is not None and svc.clock.time() - age < since_epoch:
                problems.append(f"{counts.pending + counts.in_flight} queued, oldest from before the rollback")
                if svc.dispatcher is not None:
                    svc.dispatcher.wake()
        return (not problems, "; ".join(problems) or "bridge running and healthy, backlog drained")


def bridge_experiments(service: NotificationService) -> list[Any]:
    dispatcher = service.dispatcher if isinstance(service.dispatcher, BridgeDispatcher) else None
    return [BridgeProcessCrashExperiment(service), EventWriteFaultExperiment(dispatcher)]
