"""Bridge tools: the CCTelegram bridge's status and process, as in the seed (REFERENCE §A 2.3)."""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations

from cctg_mcp.delivery.bridge import BridgeStatus, bridge_status
from cctg_mcp.server.common import READ, call, service_of
from cctg_mcp.server.toolsets import Registrar
from cctg_mcp.transports.bridge.process import BridgeActionResult, ProcessCheck

TOOLSET = "bridge"  # server/toolsets.py: which selection lists these tools

#: Starting a local process: changes state, not destructive, idempotent (already running is fine).
START = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
#: Checking the pid file: removes a stale one, so not read-only; idempotent.
CHECK = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
#: Stopping or restarting one: ends a running process.
STOP = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Bridge status", annotations=READ)
    async def get_bridge_status(ctx: Context) -> BridgeStatus:
        """Is the CCTelegram bridge running and healthy: pid, its /health, event files waiting for it.

        Events are written as files whether or not the bridge runs; it delivers them when it starts."""
        return await call(bridge_status(service_of(ctx)))

    @mcp.tool(title="Start the bridge", annotations=START)
    async def start_bridge(ctx: Context) -> BridgeActionResult:
        """Start the CCTelegram bridge unless it runs (action: already_running | started | failed, or
        started_unverified: the process runs but /health did not answer healthy in time).

        Also serves as the seed's ensure_bridge_running, which did the same."""
        return await call(service_of(ctx).bridge.start())

    @mcp.tool(title="Stop the bridge", annotations=STOP)
    async def stop_bridge(ctx: Context) -> BridgeActionResult:
        """Stop the CCTelegram bridge: SIGTERM, then SIGKILL after a grace period."""
        return await call(service_of(ctx).bridge.stop())

    @mcp.tool(title="Restart the bridge", annotations=STOP)
    async def restart_bridge(ctx: Context) -> BridgeActionResult:
        """Restart the CCTelegram bridge: stop, wait the configured restart delay, start (action:
        restarted | failed | started_unverified)."""
        return await call(service_of(ctx).bridge.restart())

    @mcp.tool(title="Check the bridge process", annotations=CHECK)
    async def check_bridge_process(ctx: Context) -> ProcessCheck:
        """Is the bridge process alive? Local pid check only, no HTTP (get_bridge_status also asks its
        /health); removes a stale pid file."""
        return service_of(ctx).bridge.check_process()
