"""The resilience status: what ``get_resilience_status`` and the library client report.

Computed from live state (breakers, retry statistics, the outbox, the dispatcher and the
pacer), never from samples or guesses; ``active_issues`` says in words what needs a look.
"""

from __future__ import annotations

from typing import Any, Literal

import anyio.to_thread
from pydantic import BaseModel, Field

from cctg_mcp.answers.report import AnswersSummary, answers_summary
from cctg_mcp.delivery.mode_switch import ModeStatus, mode_status
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.ops.health import BRIDGE_FILE_WAIT_S
from cctg_mcp.ops.verdict import Overall, Verdict, verdict
from cctg_mcp.resilience.health import HealthReport, HealthStatus
from cctg_mcp.resilience.recovery import RecoveryStatistics
from cctg_mcp.runtime import Runtime
from cctg_mcp.transports.bridge.files import waiting_event_files

BACKLOG_WARN_S = 300.0


class BreakerStatus(BaseModel):
    """One circuit breaker's state and counts."""

    name: str
    state: Literal["closed", "open", "half_open", "isolated", "disabled"]
    retry_after_s: float | None = Field(description="Seconds until the next probe is allowed (open only).")
    forced_by: str | None = Field(
        description="Who forced the current state (force_circuit_breaker, the library client, recovery, "
        "the configuration); null when the breaker reached it by itself."
    )
    window_calls: int = Field(description="Calls inside the monitoring window.")
    window_failures: int = Field(
        description="Counted failures inside the monitoring window (opens at failureThreshold)."
    )
    consecutive_failures: int
    failures: int
    successes: int
    rejections: int
    in_flight: int = Field(description="Calls in flight now (the bulkhead's count).")
    max_concurrent: int | None = Field(description="The bulkhead (maxConcurrentRequests); null when unlimited.")
    bulkhead_rejections: int = Field(description="Calls refused because max_concurrent were in flight.")
    transitions: int
    last_failure: str | None


class RetryStatus(BaseModel):
    """Retry counts for one component."""

    component: str
    operations: int
    first_try_successes: int
    retried_operations: int
    retries: int
    gave_up: int


class OutboxStatus(BaseModel):
    """Outbox rows by status, and the age of the oldest waiting one."""

    pending: int
    in_flight: int
    delivered: int
    dead: int
    oldest_pending_age_s: float | None
    problem: str | None = Field(
        default=None, description="Why the outbox cannot accept sends (its file deleted or replaced), else None."
    )


class BridgeFiles(BaseModel):
    """Bridge mode: the event files the bridge has not consumed yet, and the oldest one's age."""

    events_dir: str
    waiting: int = Field(description="Event files written and not yet consumed (deleted) by the bridge.")
    oldest_age_s: float | None = Field(description="Age of the oldest waiting file (null when none waits).")


class SessionStatus(BaseModel):
    """One server process sharing this bot (a coordination session)."""

    session_id: str
    pid: int
    host: str
    started_at: float = Field(description="Epoch seconds.")


class CoordinationStatus(BaseModel):
    """The server processes (sessions) sharing this bot's data dir, and what they share."""

    kind: str = Field(description="local: coordinated over the shared data dir.")
    session_id: str = Field(description="This server process (the owner name of its outbox leases).")
    sessions: list[SessionStatus] = Field(description="The live sessions sharing the data dir, this one included.")
    reader: str | None = Field(
        description="The session that reads getUpdates for all of them (None: none right now; one takes over "
        "within a second)."
    )
    this_session_reads_updates: bool
    peer_deaths_seen: int = Field(description="Sessions this one found stopped (their work moved to live ones).")
    deliveries_taken_over: int = Field(description="Deliveries leased by stopped sessions that this one released.")
    lease_seconds: float = Field(description="The lease a delivery holds while it is attempted (renewed while live).")
    budget: dict[str, Any] = Field(
        description="The shared send budget: seconds left of a 429 pause, pauses so far, the global bucket's "
        "tokens after the last send, chats with a bucket."
    )


class HealthSummary(BaseModel):
    """The health monitor's verdict in brief."""

    overall: Overall
    ready: bool = Field(description="No critical component is unhealthy.")
    live: bool = Field(description="The health monitor loop is running.")
    unhealthy: list[str]
    degraded: list[str]


class RecoverySummary(BaseModel):
    """Recovery counts, the levers in effect, and the newest finished session."""

    statistics: RecoveryStatistics
    delivery_paused: bool = Field(description="Fallback mode: events are queued, not attempted.")
    min_priority: str = Field(description="Degraded mode when above 'low': only this priority or higher is sent.")
    last_session: str | None = Field(description="The newest finished session, in words.")


class ResilienceStatus(BaseModel):
    """The whole resilience picture: configuration, breakers, retries, outbox, health, recovery."""

    overall: Overall = Field(
        description="The same verdict as get_health_report: unknown until the first health checks ran; "
        "unhealthy when not configured or a critical component is down; degraded when something is impaired."
    )
    ready: bool = Field(description="Sends can go out now: configured and no critical component unhealthy.")
    verdict_reason: str = Field(description="Why the overall verdict is what it is, in words.")
    configured: bool
    delivery: str
    environment: str
    resilience_enabled: bool
    breakers: list[BreakerStatus]
    retries: list[RetryStatus]
    outbox: OutboxStatus | None
    dispatcher_running: bool
    sending_paused_for_s: float = Field(description="Seconds left of a Telegram 429 pause (0 when none).")
    active_issues: list[str]
    health: HealthSummary | None = Field(
        default=None, description="The health monitor's cached view; details in get_health_report."
    )
    recovery: RecoverySummary | None = Field(
        default=None, description="Recovery sessions; details in get_recovery_history."
    )
    bridge_files: BridgeFiles | None = Field(
        default=None, description="Bridge delivery: event files waiting for the bridge to pick them up."
    )
    answers: AnswersSummary | None = Field(
        default=None,
        description="Reading the person's answers: getUpdates poller (telegram) or the bridge's response files.",
    )
    mode: ModeStatus | None = Field(
        default=None, description="nomad / local / muted (switch_to_*_mode, or /cct:* in Telegram)."
    )
    coordination: CoordinationStatus | None = Field(
        default=None, description="The sessions sharing this bot's data dir, the one reader, the shared budget."
    )


async def resilience_status(runtime: Runtime, *, refresh: bool = False) -> ResilienceStatus:
    """The status document. ``refresh`` runs the health checks first (as get_health_report does)."""
    service = runtime.service
    issues = list(service.settings.problems())
    breakers: list[BreakerStatus] = []
    retries: list[RetryStatus] = []
    if refresh and runtime.health is not None:
        await runtime.health.check_now()
    if service.pipelines is not None:
        for name, pipe in service.pipelines.in_use.items():  # only components that guard real calls
            for breaker in pipe.breakers.values():
                st = breaker.statistics()
                breakers.append(
                    BreakerStatus(
                        name=st.name,
                        state=st.state.value,
                        retry_after_s=st.retry_after,
                        forced_by=st.forced_by,
                        window_calls=st.window_calls,
                        window_failures=st.window_failures,
                        consecutive_failures=st.consecutive_failures,
                        failures=st.failures,
                        successes=st.successes,
                        rejections=st.rejections,
                        in_flight=st.in_flight,
                        max_concurrent=st.max_concurrent,
                        bulkhead_rejections=st.bulkhead_rejections,
                        transitions=st.transitions,
                        last_failure=st.last_failure,
                    )
                )
                forced = f" (forced by {st.forced_by})" if st.forced_by else ""
                if st.state.value in ("open", "isolated"):
                    after = f"; next probe in {st.retry_after:.1f}s" if st.retry_after is not None else ""
                    issues.append(
                        f"The {st.name} circuit breaker is {st.state.value}{forced}: "
                        f"sends through it are queued, not attempted{after}."
                    )
                elif st.state.value == "half_open":
                    issues.append(f"The {st.name} circuit breaker is half-open: probing whether {name} recovered.")
            every = [r.statistics for r in pipe.retries.values()]  # the component's and per-operation/event ones
            retries.append(
                RetryStatus(
                    component=name,
                    operations=sum(rs.operations for rs in every),
                    first_try_successes=sum(rs.first_try_successes for rs in every),
                    retried_operations=sum(rs.retried_operations for rs in every),
                    retries=sum(rs.retries for rs in every),
                    gave_up=sum(rs.gave_up for rs in every),
                )
            )
    outbox = None
    if service.outbox is not None:
        counts = await service.outbox.counts()
        gone = service.outbox.store_problem()
        outbox = OutboxStatus(**counts.to_dict(), problem=gone)
        if gone is not None:
            issues.append(f"The outbox is gone: {gone}. Sends are refused until the server restarts.")
        if counts.dead:
            issues.append(
                f"{counts.dead} delivery(ies) are dead (permanent failures such as a blocked bot or bad token); "
                "fix the cause, then requeue them."
            )
        if counts.oldest_pending_age_s is not None and counts.oldest_pending_age_s > BACKLOG_WARN_S:
            issues.append(f"The oldest queued delivery has waited {counts.oldest_pending_age_s:.0f}s.")
    dispatcher = service.dispatcher
    running = bool(dispatcher and dispatcher.running)
    if dispatcher is not None and not running:
        issues.append("The dispatcher is not running: queued events are not being delivered.")
    paused = dispatcher.pacer.paused_for() if dispatcher is not None else 0.0
    if paused > 0:
        issues.append(f"Telegram asked us to slow down (429): sending resumes in {paused:.1f}s.")
    bridge_files = await _bridge_files(service, issues)
    recovery = _recovery_summary(runtime, issues)
    answers = answers_summary(service, issues)
    mode = mode_status(service)
    if mode is not None and mode.managed_by == "server" and mode.mode != "nomad":
        issues.append(f"{mode.mode.capitalize() if mode.mode else ''} mode: {mode.meaning}.")
    report = runtime.health.report() if runtime.health is not None else None
    overall = verdict(runtime, report, answers=answers)  # built once: health's summary says the same
    health = _health_summary(issues, report, overall)
    coordination = await _coordination(service, issues)
    if answers is not None and answers.following and coordination is not None:
        answers.reader = coordination.reader  # who does read them, as far as this session knows
    config = service.resilience
    return ResilienceStatus(
        overall=overall.overall,
        ready=overall.ready,
        verdict_reason=overall.reason,
        configured=overall.configured,
        delivery=service.settings.delivery,
        environment=service.settings.environment,
        resilience_enabled=bool(config.enabled) if config is not None else False,
        breakers=breakers,
        retries=retries,
        outbox=outbox,
        dispatcher_running=running,
        sending_paused_for_s=round(paused, 3),
        active_issues=issues,
        health=health,
        recovery=recovery,
        answers=answers,
        bridge_files=bridge_files,
        mode=mode,
        coordination=coordination,
    )


async def _coordination(service: NotificationService, issues: list[str]) -> CoordinationStatus | None:
    coordinator, dispatcher = service.coordinator, service.dispatcher
    if coordinator is None or dispatcher is None:
        return None
    doc = await coordinator.describe(service.clock.monotonic())
    status = CoordinationStatus(
        **doc, deliveries_taken_over=dispatcher.taken_over, lease_seconds=round(dispatcher.lease_s, 3)
    )
    if status.reader is None and service.settings.delivery == "telegram":
        issues.append("No session reads answers from Telegram at this moment; one takes over within a second.")
    return status


def _recovery_summary(runtime: Runtime, issues: list[str]) -> RecoverySummary | None:
    manager, dispatcher = runtime.recovery, runtime.service.dispatcher
    if manager is None or dispatcher is None:
        return None
    if dispatcher.paused:
        issues.append("Delivery is paused by recovery (fallback mode): events are queued until it resumes.")
    if dispatcher.min_priority != "low":
        issues.append(f"Degraded mode: only {dispatcher.min_priority}-priority events or above are sent now.")
    last = next(iter(manager.history(1)), None)
    return RecoverySummary(
        statistics=manager.statistics(),
        delivery_paused=dispatcher.paused,
        min_priority=dispatcher.min_priority,
        last_session=None if last is None else f"{last.id} {last.component}: {last.status} ({last.summary})",
    )


def _health_summary(issues: list[str], report: HealthReport | None, overall: Verdict) -> HealthSummary | None:
    if report is None:
        return None
    for c in report.components:
        if c.status is HealthStatus.UNHEALTHY:
            issues.append(f"Health check {c.name!r} is unhealthy: {c.last_error or c.message}.")
    return HealthSummary(
        overall=overall.overall,
        ready=overall.ready,
        live=report.live,
        unhealthy=report.unhealthy,
        degraded=[c.name for c in report.components if c.status.value == "degraded"],
    )


async def _bridge_files(service: NotificationService, issues: list[str]) -> BridgeFiles | None:
    settings = service.settings
    if settings.delivery != "bridge":
        return None
    count, oldest, _ = await anyio.to_thread.run_sync(waiting_event_files, settings.events_dir)
    age = None if oldest is None else round(max(0.0, service.clock.time() - oldest), 1)
    if count and age is not None and age > BRIDGE_FILE_WAIT_S:
        issues.append(
            f"{count} event file(s) wait for the CCTelegram bridge in {settings.events_dir} (oldest {age:.0f}s): "
            "the bridge is not picking them up; see get_bridge_status."
        )
    return BridgeFiles(events_dir=str(settings.events_dir), waiting=count, oldest_age_s=age)
