"""Shared wiring for end-to-end tests: settings, fast resilience timings, an in-memory client."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, AnyStr

import anyio
from mcp import Client
from mcp.types import CallToolResult

from cctg_mcp.app import open_service
from cctg_mcp.config import Settings, load_settings
from cctg_mcp.resilience.config import ResilienceConfig, parse_resilience_config
from cctg_mcp.server import build_server
from cctg_mcp.testing import TelegramStandIn

USERS = (111, 222)

#: Short timings so an outage trips the breaker and heals within a test's bounded wait.
FAST: dict[str, Any] = {
    "environment": "development",
    "circuitBreaker": {
        "telegram": {"failureThreshold": 2, "volumeThreshold": 2, "successThreshold": 1, "timeout": 200}
    },
    "retry": {"telegram": {"maxAttempts": 2, "baseDelay": 10, "maxDelay": 20, "jitterEnabled": False}},
    "operations": {
        # null drops the seed's per-operation breaker overrides (sendEvent 3/15 s ...): every
        # send uses the component's breaker, whatever a test sets it to
        name: {"timeout": 2000, "circuitBreaker": None}
        for name in ("sendEvent", "sendMessage", "sendTaskCompletion", "sendPerformanceAlert", "sendApprovalRequest")
    },
}


def fast_config(**overrides: Any) -> ResilienceConfig:
    return parse_resilience_config({**FAST, **overrides})


def make_settings(standin: TelegramStandIn | None, data_dir: Path, **env: str) -> Settings:
    base = {"CCTG_DATA_DIR": str(data_dir), "CCTG_ENVIRONMENT": "development"}
    if standin is not None:
        base.update(
            standin.server_env(data_dir, USERS),
            CCTG_RATE_PER_CHAT="1000",
            CCTG_RATE_PER_CHAT_BURST="1000",
            CCTG_RATE_GLOBAL="1000",
        )
    base.update(env)
    return load_settings(base)


@asynccontextmanager
async def connected(settings: Settings, config: ResilienceConfig | None = None) -> AsyncIterator[Client]:
    server = build_server(lambda: open_service(settings, resilience=config or fast_config()))
    async with Client(server) as client:
        yield client


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def call_raw(client: Client, tool: str, args: dict[str, Any] | None = None, limit: float = 15) -> CallToolResult:
    """Call ``tool``, bounded by ``limit`` seconds; the result as it is, error or not."""
    with anyio.fail_after(limit):
        return await client.call_tool(tool, args or {})


async def call(client: Client, tool: str, args: dict[str, Any] | None = None, limit: float = 15) -> dict[str, Any]:
    """Call ``tool``, which must succeed, bounded by ``limit`` seconds; its structured content."""
    result = await call_raw(client, tool, args, limit)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None, text_of(result)
    return dict(result.structured_content)


async def wait_for(predicate: Callable[[], object], limit: float = 15) -> None:
    """Poll state another thread or process changes (the stand-in's HTTP threads, a server's
    poller, a subprocess) until ``predicate()`` is true, bounded by ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110  (the state is changed outside this event loop)
            await anyio.sleep(0.02)


def read_line(stream: IO[AnyStr], limit: float = 30) -> AnyStr:
    """One line a subprocess writes (and flushes) to a pipe, waiting at most ``limit`` seconds."""
    ready, _, _ = select.select([stream], [], [], limit)
    if not ready:
        raise TimeoutError(f"no line from the subprocess within {limit} s")
    return stream.readline()
