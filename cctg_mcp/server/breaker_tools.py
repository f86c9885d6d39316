"""Breaker tools: force a component's circuit breakers (the seed's forceCircuitBreakerState).

An opt-in toolset (``CCTG_TOOLSETS=default,breakers``): an operator's lever, not something an
agent needs on every session; ``trigger_recovery`` closes an open breaker in the default set.
"""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from cctg_mcp.ops.breakers import ForcedState, force_breaker
from cctg_mcp.server.common import checked, service_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "breakers"  # server/toolsets.py: which selection lists these tools

#: Forcing a breaker's state changes only our own breakers; forcing the same state twice is the same.
FORCE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


class ForcedBreaker(BaseModel):
    """One breaker's state after a forced change, and who forced it."""

    name: str
    state: str
    forced_by: str | None


class ForceResult(BaseModel):
    """What forcing a component's breakers did."""

    message: str
    breakers: list[ForcedBreaker] = Field(description="Every breaker of the component, after the change.")


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Force a circuit breaker", annotations=FORCE)
    async def force_circuit_breaker(
        ctx: Context,
        component: Annotated[
            Literal["telegram", "bridge", "filesystem", "network"],
            Field(description="Whose breakers: the component's own and its per-operation ones."),
        ],
        state: Annotated[
            ForcedState,
            Field(
                description="open: isolate (every call rejected, sends queue) until closed or reset; "
                "closed: close with fresh window counts; disabled: admit everything, record nothing; "
                "reset: a fresh closed breaker, totals zeroed."
            ),
        ],
    ) -> ForceResult:
        """Force a component's circuit breakers (the seed's forceCircuitBreakerState); the status names who."""
        stats = checked(force_breaker, service_of(ctx), component, state, by="tool force_circuit_breaker")
        breakers = [ForcedBreaker(name=s.name, state=s.state.value, forced_by=s.forced_by) for s in stats]
        summary = ", ".join(f"{b.name}: {b.state}" for b in breakers)
        return ForceResult(message=f"{component} breakers forced {state}: {summary}.", breakers=breakers)
