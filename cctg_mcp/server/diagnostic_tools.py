"""Diagnostic tools: what the pipeline sees, for the agent to read and act on."""

from __future__ import annotations

import time
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel, Field

from cctg_mcp import __version__
from cctg_mcp.ops.status import ResilienceStatus, resilience_status
from cctg_mcp.server.common import READ, call, service_of


class Ping(BaseModel):
    ok: bool
    version: str
    uptime_s: float


def register(mcp: MCPServer[Any]) -> None:
    started = time.monotonic()

    @mcp.tool(annotations=READ)
    async def ping() -> Ping:
        """Liveness check: answers at once without touching Telegram or the outbox."""
        return Ping(ok=True, version=__version__, uptime_s=round(time.monotonic() - started, 3))

    @mcp.tool(annotations=READ)
    async def get_resilience_status(
        ctx: Context,
        refresh: Annotated[
            bool, Field(description="Run the health checks now (bounded by the check timeout) before answering.")
        ] = False,
    ) -> ResilienceStatus:
        """Is the notification channel healthy? Breakers, retries, the outbox backlog and issues in words.

        `overall` is the same verdict as get_health_report (`unknown` until the first health checks ran).
        Use it when a send came back `queued` or failed, before deciding what to tell the person."""
        return await call(resilience_status(service_of(ctx), refresh=refresh))
