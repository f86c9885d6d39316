"""Recovery tools: run a recovery now, and read what recovery has done."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.ops.logfile import current as current_log_file
from cctg_mcp.ops.recovery import RecoveryActions, family
from cctg_mcp.resilience.errors import RecoveryStrategy
from cctg_mcp.resilience.recovery import RecoveryManager, RecoverySession, RecoveryStatistics
from cctg_mcp.server.common import ACT, READ, service_of

StrategyName = Literal[
    "retry", "circuit_breaker", "restart", "fallback", "graceful_degradation", "escalate", "ignore", "manual"
]


class RecoveryRun(BaseModel):
    message: str
    sessions: list[RecoverySession] = Field(description="One session per component (finished, or mitigated and open).")
    statistics: RecoveryStatistics


class RecoveryHistory(BaseModel):
    active: list[RecoverySession] = Field(description="Sessions running now.")
    sessions: list[RecoverySession] = Field(description="Finished sessions, newest first.")
    statistics: RecoveryStatistics
    log_file: str | None = Field(
        default=None, description="This server's log file (what each recovery did, in detail), if it writes one."
    )


def _manager(service: NotificationService) -> RecoveryManager:
    manager = service.recovery
    if not isinstance(manager, RecoveryManager):
        problems = " ".join(service.settings.problems()) or "The delivery path is not available."
        raise ToolError(f"Recovery is not available because cctg-mcp is not configured. {problems}")
    return manager


def _health_names(service: NotificationService) -> list[str]:
    health = service.health
    return health.components if health is not None else []


def _targets(service: NotificationService, component: str | None) -> list[str]:
    actions = RecoveryActions(service)
    if component is not None:
        valid = sorted(set(actions.components()) | set(_health_names(service)))
        if component not in valid and family(component) not in valid:
            raise ToolError(f"Unknown component {component!r}. Valid components: {', '.join(valid)}.")
        return [component]
    health = service.health
    unhealthy: list[str] = []
    if health is not None:
        unhealthy = list(health.report().unhealthy)
    targets = list(dict.fromkeys(family(name) for name in unhealthy))
    return targets or [actions.delivery]


def register(mcp: MCPServer[Any]) -> None:
    @mcp.tool(annotations=ACT)
    async def trigger_recovery(
        ctx: Context,
        component: Annotated[
            str | None,
            Field(
                description="What to recover: telegram, bridge, outbox, dispatcher, disk (or a health check "
                "name). Default: every component the health monitor reports unhealthy, else the active "
                "delivery component."
            ),
        ] = None,
        strategy: Annotated[
            StrategyName | None,
            Field(
                description="Where to start. Default: the component's own (circuit_breaker when its breaker "
                "is open, manual for errors only a person can fix, else retry). retry on component "
                "'outbox' requeues dead deliveries."
            ),
        ] = None,
    ) -> RecoveryRun:
        """Run a recovery now and return the session(s): each attempt's strategy, outcome and detail.

        Status: `succeeded` only when a check of the effect passed (getMe, the bridge's /health, ...);
        `unverified`: it acted and nothing could check it; `mitigated`: fallback or degradation limits
        the damage, and the session stays open until the component is healthy again.

        Use it after fixing a cause (e.g. to close an open circuit breaker, or to requeue dead
        deliveries with component='outbox', strategy='retry'). A failing session escalates
        (retry → circuit_breaker → restart → fallback → graceful_degradation → escalate → manual)."""
        service = service_of(ctx)
        manager = _manager(service)
        chosen = RecoveryStrategy(strategy) if strategy is not None else None
        sessions: dict[str, RecoverySession] = {}

        async def one(name: str) -> None:
            sessions[name] = await manager.recover(name, strategy=chosen, trigger="tool")

        targets = _targets(service, component)
        async with anyio.create_task_group() as tg:
            for name in targets:
                tg.start_soon(one, name)
        ordered = [sessions[name] for name in targets]
        summary = "; ".join(f"{s.component}: {s.status} ({s.summary})" for s in ordered)
        return RecoveryRun(message=summary, sessions=ordered, statistics=manager.statistics())

    @mcp.tool(annotations=READ)
    async def get_recovery_history(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=100, description="How many finished sessions to return.")] = 20,
    ) -> RecoveryHistory:
        """Recovery sessions (running, and finished newest first) with success rate and mean time to recover."""
        manager = _manager(service_of(ctx))
        log_file = current_log_file()
        return RecoveryHistory(
            active=manager.active(),
            sessions=manager.history(limit),
            statistics=manager.statistics(),
            log_file=str(log_file) if log_file else None,
        )
