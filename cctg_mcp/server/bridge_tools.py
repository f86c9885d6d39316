"""Bridge tools: the CCTelegram bridge's status and process, as in the seed (REFERENCE §A 2.3)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations

from cctg_mcp.delivery.bridge import BridgeStatus, bridge_of, bridge_status
from cctg_mcp.server.common import READ, call, service_of
from cctg_mcp.transports.bridge.process import BridgeActionResult, ProcessCheck

#: Starting a local process: changes state, not destructive, idempotent (already running is fine).
START = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
#: Stopping or restarting one: ends a running process.
STOP = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)


def register(mcp: MCPServer[Any]) -> None:
    @mcp.tool(annotations=READ)
    async def get_bridge_status(ctx: Context) -> BridgeStatus:
        """Is the CCTelegram bridge running and healthy? Its pid, /health, and event files waiting for it.

        In bridge delivery mode events are written as files whether or not the bridge runs; a
        stopped bridge delivers them when it starts (see start_bridge)."""
        return await call(bridge_status(service_of(ctx)))

    @mcp.tool(annotations=START)
    async def start_bridge(ctx: Context) -> BridgeActionResult:
        """Start the CCTelegram bridge (CC_TELEGRAM_BRIDGE_PATH or cctelegram-bridge on PATH) if not running."""
        return await call(bridge_of(service_of(ctx)).start())

    @mcp.tool(annotations=STOP)
    async def stop_bridge(ctx: Context) -> BridgeActionResult:
        """Stop the CCTelegram bridge: SIGTERM, then SIGKILL after a grace period."""
        return await call(bridge_of(service_of(ctx)).stop())

    @mcp.tool(annotations=STOP)
    async def restart_bridge(ctx: Context) -> BridgeActionResult:
        """Restart the CCTelegram bridge: stop, wait the configured restart delay, start."""
        return await call(bridge_of(service_of(ctx)).restart())

    @mcp.tool(annotations=START)
    async def ensure_bridge_running(ctx: Context) -> BridgeActionResult:
        """Start the CCTelegram bridge only if it is not running (action: already_running | started | failed)."""
        return await call(bridge_of(service_of(ctx)).ensure_running())

    @mcp.tool(annotations=READ)
    async def check_bridge_process(ctx: Context) -> ProcessCheck:
        """Is the bridge process running? (pid file checked; a stale one is removed)."""
        return bridge_of(service_of(ctx)).check_process()
