"""Recovery tools: run a recovery now, and read what recovery has done."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from cctg_mcp.ops.logfile import current as current_log_file
from cctg_mcp.ops.recovery import RecoveryActions, family
from cctg_mcp.resilience.errors import RecoveryStrategy
from cctg_mcp.resilience.recovery import RecoveryManager, RecoverySession, RecoveryStatistics
from cctg_mcp.runtime import Runtime
from cctg_mcp.server.common import READ, checked, runtime_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "recovery"  # server/toolsets.py: which selection lists these tools

#: Recovery talks to Telegram or the bridge (open world); restart and requeue strategies end a
#: process or resend dead deliveries, so it is destructive (annotations are per tool, not per strategy).
RECOVER = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)

StrategyName = Literal[
    "retry", "circuit_breaker", "restart", "fallback", "graceful_degradation", "escalate", "ignore", "manual"
]


class RecoveryRun(BaseModel):
    """The recovery sessions a trigger ran, one per component."""

    message: str
    sessions: list[RecoverySession] = Field(description="One session per component (finished, or mitigated and open).")
    statistics: RecoveryStatistics


class RecoveryHistory(BaseModel):
    """Recovery sessions running now and finished, with counts."""

    active: list[RecoverySession] = Field(description="Sessions running now.")
    sessions: list[RecoverySession] = Field(description="Finished sessions, newest first.")
    statistics: RecoveryStatistics
    log_file: str | None = Field(
        default=None, description="This server's log file (what each recovery did, in detail), if it writes one."
    )


def _manager(runtime: Runtime) -> RecoveryManager:
    return checked(_configured_manager, runtime)


def _configured_manager(runtime: Runtime) -> RecoveryManager:
    if runtime.recovery is None:
        raise runtime.service.not_configured()
    return runtime.recovery


def _health_names(runtime: Runtime) -> list[str]:
    health = runtime.health
    return health.components if health is not None else []


def _targets(runtime: Runtime, component: str | None) -> list[str]:
    actions = RecoveryActions(runtime.service)
    if component is not None:
        valid = sorted(set(actions.components()) | set(_health_names(runtime)))
        if component not in valid and family(component) not in valid:
            raise ToolError(f"Unknown component {component!r}. Valid components: {', '.join(valid)}.")
        return [component]
    health = runtime.health
    unhealthy: list[str] = []
    if health is not None:
        unhealthy = list(health.report().unhealthy)
    targets = list(dict.fromkeys(family(name) for name in unhealthy))
    return targets or [actions.delivery]


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Trigger recovery", annotations=RECOVER)
    async def trigger_recovery(
        ctx: Context,
        component: Annotated[
            str | None,
            Field(
                description="telegram, bridge, outbox, dispatcher, disk or a health check; default: the unhealthy ones."
            ),
        ] = None,
        strategy: Annotated[
            StrategyName | None,
            Field(
                description="Where to start; default: the component's own. retry on outbox requeues dead deliveries."
            ),
        ] = None,
    ) -> RecoveryRun:
        """Run a recovery now, after fixing a cause (e.g. close an open breaker); escalates on failure.
        restart ends a process, outbox retry resends dead deliveries. `succeeded` only when a check
        of the effect passed, else `unverified` or `mitigated`."""
        runtime = runtime_of(ctx)
        manager = _manager(runtime)
        chosen = RecoveryStrategy(strategy) if strategy is not None else None
        sessions: dict[str, RecoverySession] = {}

        async def one(name: str) -> None:
            sessions[name] = await manager.recover(name, strategy=chosen, trigger="tool")

        targets = _targets(runtime, component)
        async with anyio.create_task_group() as tg:
            for name in targets:
                tg.start_soon(one, name)
        ordered = [sessions[name] for name in targets]
        if runtime.health is not None:
            # Run the health checks again now that a recovery ran: the cached report (and the
            # status's verdict built from it) would show the state before until the next interval.
            await runtime.health.check_now()
        summary = "; ".join(f"{s.component}: {s.status} ({s.summary})" for s in ordered)
        return RecoveryRun(message=summary, sessions=ordered, statistics=manager.statistics())

    @mcp.tool(title="Recovery history", annotations=READ)
    async def get_recovery_history(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=100, description="How many finished sessions to return.")] = 20,
    ) -> RecoveryHistory:
        """Recovery sessions (running, and finished newest first) with success rate and mean time to recover."""
        manager = _manager(runtime_of(ctx))
        log_file = current_log_file()
        return RecoveryHistory(
            active=manager.active(),
            sessions=manager.history(limit),
            statistics=manager.statistics(),
            log_file=str(log_file) if log_file else None,
        )
