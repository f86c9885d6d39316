"""The health checks of this application, built from real objects, and their default wiring.

Each factory returns an ``async () -> CheckResult`` for ``HealthMonitor.add_check``. Checks
report what they see; the monitor applies timeouts, thresholds and history.
``install_default_checks(monitor, service)`` registers the defaults for the delivery mode.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from cctg_mcp.delivery.dispatcher import Dispatcher
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.breaker import BreakerState, CircuitBreaker
from cctg_mcp.resilience.clock import Clock, iso_z
from cctg_mcp.resilience.config_tables import DEFAULTS
from cctg_mcp.resilience.errors import BaseResilienceError, TelegramRateLimited, classify, redact
from cctg_mcp.resilience.health import CheckFn, CheckResult, HealthMonitor, HealthStatus
from cctg_mcp.transports.bridge.files import waiting_event_files
from cctg_mcp.transports.bridge.process import probe_bridge_health
from cctg_mcp.transports.http_check import HttpEndpointProbe

if TYPE_CHECKING:  # only when CCTG_REDIS_URL is set
    from cctg_mcp.delivery.redis_coordination import RedisCoordinator

#: Component names the defaults register (the recovery manager keys on them).
TELEGRAM, OUTBOX, DISPATCHER, DISK, BRIDGE_HEALTH = "telegram", "outbox", "dispatcher", "disk", "bridge-health"
#: The seed's default health endpoints, which describe the CCTelegram bridge (bridge mode only).
SEED_BRIDGE_ENDPOINTS = frozenset((e["name"], e["url"]) for e in DEFAULTS["health"]["endpoints"])
BRIDGE_FILES = "bridge-files"
#: Seconds an event file may wait for the bridge before the bridge-files check says degraded.
BRIDGE_FILE_WAIT_S = 60.0


def breaker_name(component: str) -> str:
    return f"{component}_breaker"


class BotApi(Protocol):
    """What the Telegram health check needs: one getMe call."""

    async def get_me(self) -> dict[str, Any]: ...


#: Which of a component's breakers speaks for it: the one that blocks the most.
_WORST = {
    BreakerState.OPEN: 0,
    BreakerState.ISOLATED: 1,
    BreakerState.HALF_OPEN: 2,
    BreakerState.DISABLED: 3,
    BreakerState.CLOSED: 4,
}


def worst_breaker(breakers: Iterable[CircuitBreaker]) -> CircuitBreaker:
    """The breaker in the worst state (ties: the first, i.e. the component's own)."""
    return min(breakers, key=lambda b: _WORST[b.state])


def breaker_check(
    breaker: CircuitBreaker,
    siblings: Mapping[str, CircuitBreaker] | None = None,
    *,
    bypassed: Callable[[], bool] | None = None,
) -> CheckFn:
    """closed → healthy; half_open or disabled → degraded; open or isolated → unhealthy.
    ``siblings`` (a live mapping, e.g. ``Pipeline.breakers``): the component's per-operation
    breakers; the worst of them all speaks for the component. ``bypassed``: true while the
    pipeline runs calls past every breaker (``RESILIENCE_ENABLED=false``): degraded, as disabled."""

    async def check() -> CheckResult:
        if bypassed is not None and bypassed():
            return CheckResult.degraded(
                f"resilience disabled: calls bypass breaker {breaker.name} (no protection)", state="bypassed"
            )
        worst = worst_breaker((breaker, *(siblings or {}).values()))
        st = worst.statistics()
        details = {
            "state": st.state.value,
            "retry_after_s": st.retry_after,
            "consecutive_failures": st.consecutive_failures,
        }
        state = st.state
        if state is BreakerState.CLOSED:
            return CheckResult.healthy(f"breaker {worst.name} is closed", **details)
        if state is BreakerState.HALF_OPEN:
            return CheckResult.degraded(f"breaker {worst.name} is half-open (probing)", **details)
        if state is BreakerState.DISABLED:
            return CheckResult.degraded(f"breaker {worst.name} is disabled (no protection)", **details)
        why = f"; last failure: {redact(st.last_failure)}" if st.last_failure else ""
        if state is BreakerState.ISOLATED:
            return CheckResult.unhealthy(f"breaker {worst.name} is isolated (manual){why}", **details)
        after = f" (probe in {st.retry_after:.1f}s)" if st.retry_after is not None else ""
        return CheckResult.unhealthy(f"breaker {worst.name} is open{after}{why}", **details)

    return check


COORDINATION = "coordination"


def redis_check(coordinator: RedisCoordinator) -> CheckFn:
    """Redis answers PING: unhealthy when it does not (sends queue locally meanwhile)."""

    async def check() -> CheckResult:
        try:
            await coordinator.redis.ping()
        except Exception as exc:
            return CheckResult.unhealthy(
                f"Redis coordination unreachable ({redact(str(exc))}); sends stay queued in this machine's outbox"
            )
        return CheckResult.healthy("Redis coordination answers", leader=coordinator.is_leader())

    return check


def outbox_check(outbox: Outbox, max_oldest_age_s: float = 300.0, full_fraction: float = 0.9) -> CheckFn:
    """Backlog and oldest pending age. Dead rows or an old backlog → degraded; nearly full, or the
    file deleted or replaced under the running server → unhealthy."""

    async def check() -> CheckResult:
        counts = await outbox.counts()
        details = counts.to_dict()
        gone = outbox.store_problem()
        if gone is not None:
            return CheckResult.unhealthy(f"outbox gone: {gone}; sends are refused until a restart", **details)
        backlog = counts.pending + counts.in_flight
        age = counts.oldest_pending_age_s
        if backlog >= outbox.max_pending * full_fraction:
            return CheckResult.unhealthy(f"outbox nearly full: {backlog} of {outbox.max_pending} queued", **details)
        problems = []
        if counts.dead:
            problems.append(f"{counts.dead} dead delivery(ies)")
        if age is not None and age > max_oldest_age_s:
            problems.append(f"oldest queued delivery waited {age:.0f}s (> {max_oldest_age_s:g}s)")
        if problems:
            return CheckResult.degraded("outbox: " + "; ".join(problems), **details)
        return CheckResult.healthy(f"outbox: {backlog} queued", **details)

    return check


def dispatcher_check(dispatcher: Dispatcher, max_silence_s: float | None = None) -> CheckFn:
    """Running and its loop heartbeat recent; paused, degraded mode or a 429 pause → degraded.

    The heartbeat moves once per loop turn (every ``idle_poll_s`` when idle, after each batch
    when busy), so the default silence bound is three idle polls plus one batch's bound."""
    bound = (
        max_silence_s if max_silence_s is not None else (3 * dispatcher.idle_poll_s + dispatcher.send_timeout_s + 5.0)
    )

    async def check() -> CheckResult:
        beat = dispatcher.heartbeat
        age = None if beat is None else max(0.0, dispatcher.clock.monotonic() - beat)
        details = {
            "running": dispatcher.running,
            "heartbeat_age_s": age,
            "paused": dispatcher.paused,
            "min_priority": dispatcher.min_priority,
            "delivered": dispatcher.delivered,
            "requeued": dispatcher.requeued,
            "dead": dispatcher.dead,
        }
        if not dispatcher.running:
            return CheckResult.unhealthy("dispatcher is not running: queued events are not delivered", **details)
        if age is None or age > bound:
            seen = "never" if age is None else f"{age:.1f}s ago"
            return CheckResult.unhealthy(f"dispatcher loop stalled: last heartbeat {seen} (> {bound:g}s)", **details)
        if dispatcher.paused:
            return CheckResult.degraded("dispatcher is paused: rows stay queued", **details)
        if dispatcher.min_priority != "low":
            return CheckResult.degraded(
                f"degraded mode: only {dispatcher.min_priority}-priority rows or above are sent", **details
            )
        paused_for = dispatcher.pacer.paused_for()
        if paused_for > 0:
            return CheckResult.degraded(
                f"Telegram asked to slow down: sending resumes in {paused_for:.1f}s", pause_s=paused_for, **details
            )
        return CheckResult.healthy("dispatcher running", **details)

    return check


def disk_check(path: Path | str, min_free_mb: float = 100.0) -> CheckFn:
    """Free space where ``path`` lives: below ``min_free_mb`` unhealthy, below twice that degraded."""
    target = Path(path)

    def usage() -> tuple[Path, Any]:
        probe = target
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return probe, shutil.disk_usage(probe)

    async def check() -> CheckResult:
        where, du = await anyio.to_thread.run_sync(usage)
        free_mb = du.free / 1_048_576
        details = {
            "path": str(where),
            "free_mb": round(free_mb, 1),
            "total_mb": round(du.total / 1_048_576, 1),
            "used_fraction": round(du.used / du.total, 4) if du.total else None,
            "min_free_mb": min_free_mb,
        }
        if free_mb < min_free_mb:
            return CheckResult.unhealthy(f"disk almost full: {free_mb:.0f} MB free (< {min_free_mb:g} MB)", **details)
        if free_mb < 2 * min_free_mb:
            return CheckResult.degraded(f"disk space low: {free_mb:.0f} MB free", **details)
        return CheckResult.healthy(f"{free_mb:.0f} MB free", **details)

    return check


def bridge_files_check(events_dir: Path, clock: Clock, max_wait_s: float = BRIDGE_FILE_WAIT_S) -> CheckFn:
    """Event files waiting for the bridge: none or all fresh → healthy; one older than
    ``max_wait_s`` → degraded (the bridge is not consuming them). The message says how many
    and the oldest one's age."""

    async def check() -> CheckResult:
        count, oldest, _ = await anyio.to_thread.run_sync(waiting_event_files, events_dir)
        age = None if oldest is None else max(0.0, clock.time() - oldest)
        details = {"waiting": count, "oldest_age_s": None if age is None else round(age, 1), "dir": str(events_dir)}
        if not count or age is None:
            return CheckResult.healthy("no event file waiting for the bridge", **details)
        words = f"{count} event file(s) waiting for the bridge in {events_dir}, oldest {age:.0f}s"
        if age > max_wait_s:
            return CheckResult.degraded(words + f" (> {max_wait_s:g}s: the bridge is not picking them up)", **details)
        return CheckResult.healthy(words, **details)

    return check


def telegram_check(transport: BotApi) -> CheckFn:
    """``getMe`` through the transport (not the breaker): 429 → degraded, our errors → unhealthy."""

    async def check() -> CheckResult:
        try:
            me = await transport.get_me()
        except TelegramRateLimited as exc:
            return CheckResult.degraded(
                f"getMe rate limited: {exc}", error_code=exc.code, retry_after_s=exc.retry_after
            )
        except BaseResilienceError as exc:
            return CheckResult.unhealthy(f"{exc.code}: {exc}", error_code=exc.code)
        except Exception as exc:
            error = classify(exc)
            return CheckResult.unhealthy(f"{error.code}: {error}", error_code=error.code)
        username = me.get("username")
        return CheckResult.healthy(f"getMe ok (@{username})" if username else "getMe ok", bot=username)

    return check


def bridge_health_check(url: str, timeout: float = 3.0, *, http_transport: Any = None) -> CheckFn:
    """The bridge's ``/health``, read as ``get_bridge_status``, recovery and ``cctg-mcp check``
    read it (``probe_bridge_health``): any 2xx, then the body's ``status`` (so 200
    ``{"status": "unhealthy"}`` is unhealthy), 429 degraded, else unhealthy."""

    async def check() -> CheckResult:
        seen = await probe_bridge_health(url, timeout_s=timeout, http_transport=http_transport)
        details: dict[str, Any] = {
            "status_code": seen.http_status,
            **({"metrics": seen.metrics} if seen.metrics else {}),
        }
        return CheckResult(HealthStatus(seen.status), seen.detail, details=details)

    return check


def http_endpoint_check(
    name: str,
    url: str,
    method: str = "GET",
    timeout: float = 3.0,
    expected_status: Iterable[int] = (200,),
    *,
    headers: Mapping[str, str] | None = None,
    retries: int = 0,
    http_transport: Any = None,
) -> CheckFn:
    """A configured HTTP endpoint (``health.endpoints``): expected status healthy, 429 degraded, else
    unhealthy. The bridge's own ``/health`` is ``bridge_health_check`` (it reads the body too)."""
    return HttpEndpointProbe(
        name,
        url,
        method=method,
        timeout=timeout,
        expected_status=expected_status,
        headers=headers,
        retries=retries,
        http_transport=http_transport,
    )


def install_default_checks(monitor: HealthMonitor, service: NotificationService) -> list[str]:
    """Register the defaults for the delivery mode; returns the component names added."""
    settings = service.settings
    added: list[str] = []

    def add(name: str, fn: CheckFn, *, critical: bool, kind: Any = "component", timeout: float | None = None) -> None:
        if name not in monitor.components:
            monitor.add_check(name, fn, critical=critical, kind=kind, timeout=timeout)
            added.append(name)

    active = "telegram" if settings.delivery == "telegram" else "bridge"
    if active == "telegram":
        if service.transport is not None:
            add(TELEGRAM, telegram_check(service.transport), critical=True, kind="http")
    else:
        add(BRIDGE_HEALTH, bridge_health_check(settings.bridge_health_url), critical=True, kind="http")
        add(BRIDGE_FILES, bridge_files_check(settings.events_dir, service.clock), critical=False)
    # health.endpoints are probed in every delivery mode; only the seed's own bridge endpoints
    # (bridge-health, bridge-metrics at their default URLs) describe the bridge, so direct mode
    # leaves those out.
    endpoints = service.resilience.health.endpoints if service.resilience is not None else []
    for ep in endpoints:
        if active == "bridge" and (ep.name == BRIDGE_HEALTH or ep.url == settings.bridge_health_url):
            continue  # CC_TELEGRAM_BRIDGE_HEALTH_URL is the more specific setting
        if active == "telegram" and (ep.name, ep.url) in SEED_BRIDGE_ENDPOINTS:
            continue
        probe = http_endpoint_check(
            ep.name,
            ep.url,
            ep.method,
            ep.seconds("timeout"),
            ep.expected_status,
            headers=ep.headers,
            retries=ep.retries,
        )
        add(ep.name, probe, critical=ep.critical, kind="http")
    if service.pipelines is not None:
        pipe = service.pipelines.for_component(active)
        add(
            breaker_name(active),
            breaker_check(pipe.breaker, pipe.breakers, bypassed=lambda: not pipe.enabled),
            critical=True,
        )
    if service.outbox is not None:
        add(OUTBOX, outbox_check(service.outbox), critical=False)
    if service.dispatcher is not None:
        add(DISPATCHER, dispatcher_check(service.dispatcher), critical=True)
    add(DISK, disk_check(settings.data_dir), critical=False)
    if settings.redis_url is not None and service.coordinator is not None:
        from cctg_mcp.delivery.redis_coordination import RedisCoordinator

        if isinstance(service.coordinator, RedisCoordinator):
            add(COORDINATION, redis_check(service.coordinator), critical=False)
    return added


_HEALTH_JSON = {"healthy": "pass", "degraded": "warn", "unknown": "warn", "unhealthy": "fail"}


def readiness(monitor: HealthMonitor | None) -> tuple[bool, dict[str, Any]]:
    """(ready, body) for HTTP readiness in ``application/health+json`` (draft-inadarei): top
    ``status`` fail when a critical component is unhealthy (not ready), pass when everything
    is healthy, else warn; one ``checks`` entry per component. No secrets: names, statuses
    and redacted messages only."""
    if monitor is None:
        return False, {"status": "fail", "output": "cctg-mcp is not configured (see `cctg-mcp check`)"}
    report = monitor.report()
    status = "fail" if not report.ready else "pass" if report.overall.value == "healthy" else "warn"
    checks: dict[str, list[dict[str, Any]]] = {}
    for c in report.components:
        entry: dict[str, Any] = {
            "componentId": c.name,
            "componentType": c.kind,
            "status": _HEALTH_JSON[c.status.value],
            "critical": c.critical,
        }
        if c.last_check_at is not None:
            entry["time"] = iso_z(c.last_check_at, "auto")
        if entry["status"] != "pass" and c.message:
            entry["output"] = redact(c.message)
        checks[f"{c.name}:status"] = [entry]
    return report.ready, {"status": status, "serviceId": "cctg-mcp", "checks": checks}
