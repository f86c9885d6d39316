"""Shared wiring for end-to-end tests: settings, fast resilience timings, an in-memory client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
