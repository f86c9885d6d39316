"""The MCP surface: thin tools over the service. Only this package imports ``mcp``.

``build_server(open_service)`` takes an async context manager factory that yields the
``Runtime`` (runtime.py), so tests can wire fakes; the lifespan opens it (starting the dispatcher and the
other background tasks) and closes it on exit. Each tool family lives in its own module
and registers itself here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType
from typing import Any

from mcp.server.mcpserver import MCPServer

from cctg_mcp import __version__
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import (
    answer_tools,
    breaker_tools,
    bridge_tools,
    chaos_tools,
    diagnostic_tools,
    health_tools,
    mode_tools,
    permission_tools,
    recovery_tools,
    resources,
    send_tools,
    task_tools,
)
from cctg_mcp.server.edge import CctgServer
from cctg_mcp.server.ratelimit import ToolRateLimiter
from cctg_mcp.server.strict_args import strict_scalars
from cctg_mcp.server.toolsets import EVERYTHING, Catalogue, Registrar, ToolSelection

#: Every module that registers tools; each declares ``TOOLSET`` (tests/test_toolsets.py checks
#: that every ``*_tools.py`` module in this package is listed here).
TOOL_MODULES: tuple[ModuleType, ...] = (
    send_tools,
    answer_tools,
    diagnostic_tools,
    health_tools,
    recovery_tools,
    breaker_tools,
    bridge_tools,
    chaos_tools,
    mode_tools,
    task_tools,
    permission_tools,
)

INSTRUCTIONS = """\
Notify the person on Telegram and read their answers.
- Use send_telegram_message for a short free-form note, send_task_completion when a task ends,
  send_performance_alert for a threshold breach, send_approval_request to ask a question with
  buttons, and send_telegram_event for anything else (pick `type` from list_event_types).
- A send answers `delivered`, or `queued`: the event is stored durably and will be delivered
  automatically; do NOT send it again. `duplicate` means the same event was already accepted.
- A tool error says what is wrong and what to fix; do not retry the same call unchanged.
- get_resilience_status tells whether the channel is healthy and why not.
- After send_approval_request, wait_for_response(event_id) returns the person's answer as soon as they
  press a button; get_telegram_responses / process_pending_responses list recent answers and decisions.
- permission_prompt is for Claude Code's --permission-prompt-tool (it asks the person Allow / Deny).
"""


def build_server(
    open_service: Callable[[], AbstractAsyncContextManager[Runtime]],
    *,
    name: str = "cctg-mcp",
    selection: ToolSelection = EVERYTHING,
    catalogue: Catalogue | None = None,
) -> MCPServer[Any]:
    """The MCP server; ``selection`` decides which tools are listed (every tool by default),
    ``catalogue`` (optional) receives every tool registered, listed or not."""
    live: list[Runtime] = []

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[Runtime]:
        async with open_service() as runtime:
            live.append(runtime)
            try:
                yield runtime
            finally:
                live.remove(runtime)

    def current() -> Runtime:
        if not live:
            raise RuntimeError("the server is not running")
        return live[-1]

    limiter = ToolRateLimiter()  # CCTG_TOOL_RATE_LIMIT calls per minute per client
    mcp: MCPServer[Any] = CctgServer(
        name, version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan, middleware=[limiter]
    )
    catalogue = catalogue if catalogue is not None else Catalogue()
    for module in TOOL_MODULES:
        toolset = getattr(module, "TOOLSET", None)
        if not isinstance(toolset, str):
            raise RuntimeError(f"{module.__name__} declares no TOOLSET (see server/toolsets.py)")
        module.register(Registrar(mcp, toolset, selection, catalogue))
    resources.register(Registrar(mcp, None, selection, catalogue), current)
    strict_scalars(mcp)  # no "5" for 5, no true for 1 (server/strict_args.py)
    return mcp
