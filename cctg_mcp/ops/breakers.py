"""Manual breaker control (the seed's ``forceCircuitBreakerState``), for the tool and the client.

A component's force applies to every breaker of that component: its own and its
per-operation breakers (``telegram.sendPerformanceAlert`` ...). ``by`` is recorded on each
breaker and shown by the status until the breaker changes state by itself.
"""

from __future__ import annotations

from typing import Literal

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.breaker import BreakerStatistics, CircuitBreaker
from cctg_mcp.resilience.errors import ValidationError

ForcedState = Literal["closed", "open", "disabled", "reset"]
FORCED_STATES: tuple[ForcedState, ...] = ("closed", "open", "disabled", "reset")


def force_breaker(
    service: NotificationService, component: str, state: ForcedState, *, by: str
) -> list[BreakerStatistics]:
    """Force every breaker of ``component``: ``open`` isolates (rejects every call until
    closed or reset), ``closed`` closes with fresh window counts, ``disabled`` admits
    everything and records nothing, ``reset`` is a fresh closed breaker (totals zeroed)."""
    pipelines = service.pipelines
    # only components calls really go through: forcing an idle breaker would change nothing
    components = sorted(c for c in pipelines.in_use if c in pipelines.pipelines) if pipelines is not None else []
    if pipelines is None or component not in components:
        raise ValidationError(f"unknown component {component!r}; valid: {', '.join(components) or 'none'}.")
    if state not in FORCED_STATES:
        raise ValidationError(f"state {state!r} is not one of: {', '.join(FORCED_STATES)}.")
    breakers = list(pipelines.pipelines[component].breakers.values())
    for breaker in breakers:
        _apply(breaker, state, by)
    return [b.statistics() for b in breakers]


def _apply(breaker: CircuitBreaker, state: ForcedState, by: str) -> None:
    if state == "open":
        breaker.isolate(by=by)
    elif state == "closed":
        breaker.close(by=by)
    elif state == "disabled":
        breaker.disable(by=by)
    else:
        breaker.reset(by=by)
