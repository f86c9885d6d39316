"""Diagnostic tools: what the pipeline sees, for the agent to read and act on."""

from __future__ import annotations

import time
from typing import Annotated

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from cctg_mcp import __version__
from cctg_mcp.ops.status import ResilienceStatus, resilience_status
from cctg_mcp.server.common import READ, call, runtime_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "diagnostics"  # server/toolsets.py: which selection lists these tools


class Ping(BaseModel):
    """The server is alive: its version and uptime."""

    ok: bool
    version: str
    uptime_s: float


def register(mcp: Registrar) -> None:
    started = time.monotonic()

    @mcp.tool(title="Ping the server", annotations=READ)
    async def ping() -> Ping:
        """Liveness only (channel health: get_resilience_status)."""
        return Ping(ok=True, version=__version__, uptime_s=round(time.monotonic() - started, 3))

    @mcp.tool(title="Channel status", annotations=READ)
    async def get_resilience_status(
        ctx: Context,
        refresh: Annotated[bool, Field(description="Run the health checks now before answering.")] = False,
    ) -> ResilienceStatus:
        """Is the channel healthy? Breakers, retries, outbox backlog, issues in words; `overall` is
        get_health_report's verdict. Use it after a `queued` or failed send."""
        return await call(resilience_status(runtime_of(ctx), refresh=refresh))
