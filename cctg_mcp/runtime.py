"""``Runtime``: everything a running server holds, built whole by ``app.open_service``.

The layers, in the order app.py builds them (each from the ones before, nothing attached
later): the parts (outbox, transport, coordinator, pacer, dispatcher, supervisor, answers,
mode, bridge), the use cases over them (``NotificationService``), the operations that watch
and act on those (health monitor and its checks, recovery manager, chaos controller), and the
bound Prometheus port. A feature that is off is ``None`` here, typed; the MCP server, the
HTTP health routes and the library client all read this one frozen object.
"""

from __future__ import annotations

from dataclasses import dataclass

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.chaos import ChaosController
from cctg_mcp.resilience.health import HealthMonitor
from cctg_mcp.resilience.recovery import RecoveryManager


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """A running server: the use cases and the operations over them, built once and frozen."""

    #: The use cases (send, accept, deliver, answers) and the parts they run on.
    service: NotificationService
    #: The health monitor with the default checks; None while not configured.
    health: HealthMonitor | None = None
    #: Automatic and ``trigger_recovery`` recovery; None while not configured.
    recovery: RecoveryManager | None = None
    #: Chaos experiments; None in production and while not configured.
    chaos: ChaosController | None = None
    #: The bound port of the Prometheus exposition when it is enabled.
    prometheus_port: int | None = None
