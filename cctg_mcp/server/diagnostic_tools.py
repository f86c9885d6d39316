"""Diagnostic tools: what the pipeline sees, for the agent to read and act on."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from cctg_mcp.server.common import READ, call, service_of
from cctg_mcp.status import ResilienceStatus, resilience_status


def register(mcp: MCPServer[Any]) -> None:
    @mcp.tool(annotations=READ)
    async def get_resilience_status(ctx: Context) -> ResilienceStatus:
        """Is the notification channel healthy? Breakers, retries, the outbox backlog and issues in words.

        Use it when a send came back `queued` or failed, before deciding what to tell the person."""
        return await call(resilience_status(service_of(ctx)))
