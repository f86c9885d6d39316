"""The library API, for scripts that notify without an MCP client (the seed's usage shape).

::

    async with ResilientBridgeClient({"retry": {"telegram": {"maxAttempts": 3}}}) as client:
        result = await client.send_event("build_completed", "Nightly build", "All tests passed")

It runs the same service as the MCP tools (durable outbox, pipeline, dispatcher) for as
long as the ``async with`` block lasts. Errors are ``BaseResilienceError`` subclasses with
``.category``, ``.recovery.strategy`` and ``.can_recover()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from cctg_mcp.app import open_service
from cctg_mcp.config import Settings, load_settings
from cctg_mcp.delivery.service import NotificationService, SendResult
from cctg_mcp.ops.breakers import ForcedState, force_breaker
from cctg_mcp.ops.status import ResilienceStatus, resilience_status
from cctg_mcp.ops.verdict import verdict
from cctg_mcp.resilience.breaker import BreakerStatistics
from cctg_mcp.resilience.config import ResilienceConfig, load_resilience_config, parse_resilience_config
from cctg_mcp.runtime import Runtime

__all__ = ["ResilienceConfig", "ResilienceStatus", "ResilientBridgeClient", "SendResult", "Settings"]


class ResilientBridgeClient:
    """Notify a person on Telegram from a script, through the same service as the MCP tools."""

    def __init__(
        self,
        config: ResilienceConfig | Mapping[str, Any] | None = None,
        *,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings(environ)
        if config is None:
            self.config = load_resilience_config(os.environ if environ is None else environ, self.settings.config_path)
        elif isinstance(config, ResilienceConfig):
            self.config = config
        else:
            self.config = parse_resilience_config(config, "ResilientBridgeClient(config)")
        self._stack: AsyncExitStack | None = None
        self._runtime: Runtime | None = None

    async def __aenter__(self) -> ResilientBridgeClient:
        stack = AsyncExitStack()
        self._runtime = await stack.enter_async_context(open_service(self.settings, resilience=self.config))
        self._stack = stack
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack, self._runtime = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def runtime(self) -> Runtime:
        """The running service and its operations (health, recovery, chaos), as the MCP server has them."""
        if self._runtime is None:
            raise RuntimeError("use ResilientBridgeClient inside 'async with'")
        return self._runtime

    @property
    def service(self) -> NotificationService:
        """The use cases (send, accept, deliver)."""
        return self.runtime.service

    async def send_event(
        self,
        type: str,
        title: str,
        description: str,
        *,
        task_id: str | None = None,
        source: str = "claude-code",
        data: dict[str, Any] | None = None,
    ) -> SendResult:
        event = self.service.build_event(
            type=type, title=title, description=description, task_id=task_id, source=source, data=data
        )
        return await self.service.submit(event, operation="sendEvent")

    async def send_message(self, message: str, *, source: str = "claude-code") -> SendResult:
        event = self.service.message_event(message, source=source)
        return await self.service.submit(event, operation="sendMessage")

    async def force_circuit_breaker_state(self, component: str, state: ForcedState) -> list[BreakerStatistics]:
        """The seed's ``forceCircuitBreakerState``: ``open`` (isolate), ``closed``, ``disabled``
        or ``reset`` every breaker of ``component``; recorded as forced by the library client."""
        return force_breaker(self.service, component, state, by="library client")

    async def get_resilience_status(self, *, refresh: bool = False) -> ResilienceStatus:
        """The status; ``overall`` is ``unknown`` until the first health checks ran (``refresh`` runs them now)."""
        return await resilience_status(self.runtime, refresh=refresh)

    async def get_resilience_health_report(self) -> dict[str, Any]:
        health = self.runtime.health
        if health is None:
            overall = verdict(self.runtime)  # the same verdict as the status and the MCP tools
            return {"overall": overall.overall, "ready": overall.ready, "components": [], "note": overall.reason}
        report = health.report()
        overall = verdict(self.runtime, report)  # computed from this report, not a second one
        data = dict(report.to_dict())
        data.update(overall=overall.overall, ready=overall.ready, verdict_reason=overall.reason)
        return data

    async def get_resilience_metrics(self) -> dict[str, Any]:
        metrics = self.service.metrics
        return dict(metrics.snapshot()) if metrics is not None else {}
