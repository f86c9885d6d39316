"""Health and metrics tools and resources: the cached health report and the metrics snapshot.

Resources: ``cctg://health`` and ``cctg://metrics`` are registered as URI templates with an
optional query variable (``cctg://health{?component}``, ``cctg://metrics{?component,operation}``)
because the SDK injects the Context (and so the lifespan's service) only into template
resources; reading the plain URI works. They are listed by ``resources/templates/list``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.ops.logfile import current as current_log_file
from cctg_mcp.ops.verdict import verdict
from cctg_mcp.resilience.clock import iso_z
from cctg_mcp.resilience.errors import ValidationError, redact
from cctg_mcp.resilience.health import ComponentReport, HealthReport
from cctg_mcp.runtime import Runtime
from cctg_mcp.server.common import READ, READ_REMOTE, call, checked, resource_errors, runtime_of, service_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "diagnostics"  # server/toolsets.py: which selection lists these tools

REFRESH_DOC = "Run the checks now instead of reading the cached results."
Status = Literal["healthy", "degraded", "unhealthy", "unknown"]
ComponentArg = Annotated[str | None, Field(default=None, max_length=100, description="Only this component.")]


class ComponentHealth(BaseModel):
    """One component's health, its last check and its counters."""

    name: str
    kind: Literal["http", "component"]
    critical: bool = Field(description="An unhealthy critical component makes the whole channel unhealthy.")
    status: Status
    message: str | None = Field(description="What the last check saw (redacted).")
    last_check_at: str | None = Field(description="When it was last checked (UTC, ISO 8601); null if never.")
    last_check_age_s: float | None
    consecutive_failures: int
    consecutive_successes: int
    last_error: str | None = Field(description="The last failure or degradation seen (redacted).")
    trend: Literal["improving", "stable", "degrading"]
    latency_ms: float | None
    checks: int
    failures: int


class HealthReportResult(BaseModel):
    """Every component's health and the overall verdict."""

    overall: Status = Field(
        description="The same verdict as get_resilience_status. unhealthy: not configured, or a critical "
        "component is down; degraded: something is impaired; unknown: the first checks have not run yet."
    )
    ready: bool = Field(description="Configured and no critical component unhealthy (sends can go out now).")
    configured: bool = Field(description="Token and allowed users are set (telegram), or the events dir is usable.")
    verdict_reason: str = Field(description="Why the overall verdict is what it is, in words.")
    live: bool = Field(description="The health monitor's background loop is running.")
    generated_at: str
    unhealthy_components: list[str]
    components: list[ComponentHealth]
    note: str | None = None
    log_file: str | None = Field(default=None, description="This server's log file, if it writes one.")


class MetricsResult(BaseModel):
    """Call counts, error rate and latency over the selected operations, with the full snapshot."""

    calls: int
    successes: int
    errors: int
    retries: int
    error_rate: float | None = Field(description="(calls - successes) / calls over the selection; null if no calls.")
    throughput_per_s: float | None
    p50_ms: float | None = Field(description="Worst (highest) p50 latency among the selected operations.")
    p95_ms: float | None = Field(description="Worst (highest) p95 latency among the selected operations.")
    p99_ms: float | None = Field(description="Worst (highest) p99 latency among the selected operations.")
    active_alerts: list[str]
    metrics: dict[str, Any] = Field(description="The full snapshot: operations, breakers, gauges, process, alerts.")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return iso_z(epoch, "milliseconds")


def _component(c: ComponentReport) -> ComponentHealth:
    return ComponentHealth(
        name=c.name,
        kind=c.kind,
        critical=c.critical,
        status=c.status.value,
        message=c.message,
        last_check_at=_iso(c.last_check_at),
        last_check_age_s=None if c.last_check_age_s is None else round(c.last_check_age_s, 3),
        consecutive_failures=c.consecutive_failures,
        consecutive_successes=c.consecutive_successes,
        last_error=c.last_error,
        trend=c.trend,
        latency_ms=None if c.latency_s is None else round(c.latency_s * 1000.0, 3),
        checks=c.checks,
        failures=c.failures,
    )


def health_result(runtime: Runtime, report: HealthReport) -> HealthReportResult:
    overall = verdict(runtime, report)
    return HealthReportResult(
        overall=overall.overall,
        ready=overall.ready,
        configured=overall.configured,
        verdict_reason=overall.reason,
        live=report.live,
        generated_at=_iso(report.generated_at) or "",
        unhealthy_components=report.unhealthy,
        components=[_component(c) for c in report.components],
    )


async def health_report(runtime: Runtime, component: str | None = None, refresh: bool = False) -> HealthReportResult:
    monitor, service = runtime.health, runtime.service
    if monitor is None:
        problems = " ".join(service.settings.problems())
        overall = verdict(runtime)
        return HealthReportResult(
            overall=overall.overall,
            ready=overall.ready,
            configured=overall.configured,
            verdict_reason=overall.reason,
            live=False,
            generated_at=_iso(service.clock.time()) or "",
            unhealthy_components=[],
            components=[],
            note="Health monitoring is not running"
            + (f": {problems}" if problems else " (disabled by HEALTH_CHECK_ENABLED or the config)."),
        )
    if component is not None and component not in monitor.components:
        known = ", ".join(sorted(monitor.components)) or "none"
        raise ValidationError(f"Unknown component {component!r}. Known components: {known}.")
    report = await monitor.check_now(component) if refresh else monitor.report(component)
    result = health_result(runtime, report)
    log_file = current_log_file()
    result.log_file = str(log_file) if log_file else None
    return result


def _check_names(service: NotificationService, component: str | None, operation: str | None) -> None:
    """An unknown name is an error listing the valid ones, never a silently empty answer.

    Valid: the components with a resilience pipeline and the operations of the configuration,
    plus every component/operation that has recorded a call (a known name with no calls yet
    answers zeros, which is true)."""
    assert service.metrics is not None
    recorded = [(m.component, m.operation) for m in service.metrics.series()]
    components = {c for c, _ in recorded}
    if service.pipelines is not None:
        components |= set(service.pipelines.in_use)
    operations = {o for _, o in recorded}
    if service.resilience is not None:
        operations |= set(service.resilience.operations)
    if component is not None and component not in components:
        raise ValidationError(f"Unknown component {component!r}. Valid components: {', '.join(sorted(components))}.")
    if operation is not None and operation not in operations:
        raise ValidationError(f"Unknown operation {operation!r}. Valid operations: {', '.join(sorted(operations))}.")


def metrics_result(
    service: NotificationService, component: str | None = None, operation: str | None = None
) -> MetricsResult:
    if service.metrics is None:
        raise ValidationError("Metrics are not collected in this server.")
    _check_names(service, component, operation)
    snap = service.metrics.snapshot(component, operation)
    totals = snap["totals"]
    ops = [op for by_op in snap["operations"].values() for op in by_op.values()]

    def worst(key: str) -> float | None:
        values = [op["latency"][key] for op in ops if op["latency"].get(key) is not None]
        return max(values) if values else None

    calls = int(totals["calls"])
    return MetricsResult(
        calls=calls,
        successes=int(totals["successes"]),
        errors=int(totals["errors"]),
        retries=int(totals["retries"]),
        error_rate=round(totals["errors"] / calls, 6) if calls else None,
        throughput_per_s=totals["throughput_per_s"],
        p50_ms=worst("p50_ms"),
        p95_ms=worst("p95_ms"),
        p99_ms=worst("p99_ms"),
        active_alerts=[redact(a["message"]) for a in snap["alerts"]],
        metrics=json.loads(json.dumps(snap, default=str)),
    )


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Health report", annotations=READ_REMOTE)
    async def get_health_report(
        ctx: Context,
        component: ComponentArg = None,
        refresh: Annotated[bool, Field(description=REFRESH_DOC)] = False,
    ) -> HealthReportResult:
        """Health of each part of the channel (status, last check, failures, last error, trend), from the
        last checks."""
        return await call(health_report(runtime_of(ctx), component, refresh))

    @mcp.tool(title="Metrics", annotations=READ)
    async def get_metrics(
        ctx: Context,
        component: ComponentArg = None,
        operation: Annotated[
            str | None, Field(default=None, max_length=100, description="Only this operation, e.g. sendMessage.")
        ] = None,
    ) -> MetricsResult:
        """Calls, error rate, latency percentiles, retries, breaker transitions and process figures.

        An unknown component or operation is an error listing the valid names."""
        return checked(metrics_result, service_of(ctx), component, operation)

    @mcp.resource(
        "cctg://health{?component}",
        name="health",
        title="Health report",
        mime_type="application/json",
        description="The cached health report (optionally ?component=NAME).",
    )
    async def health_resource(ctx: Context, component: str | None = None) -> str:
        with resource_errors():  # an unknown name: say which ones exist
            return (await health_report(runtime_of(ctx), component)).model_dump_json(indent=2)

    @mcp.resource(
        "cctg://metrics{?component,operation}",
        name="metrics",
        title="Metrics",
        mime_type="application/json",
        description="The metrics snapshot (optionally ?component=NAME&operation=NAME).",
    )
    async def metrics_resource(ctx: Context, component: str | None = None, operation: str | None = None) -> str:
        with resource_errors():
            return metrics_result(service_of(ctx), component, operation).model_dump_json(indent=2)
