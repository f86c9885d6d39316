"""Composition root: settings in, a running service out.

``open_service(settings)`` opens the outbox, builds the Telegram transport, the resilience
pipeline, the pacer and the dispatcher, starts the background tasks in one task group and
yields the ``NotificationService``. On exit the task group is cancelled, in-flight rows go
back to pending, and everything is closed. Without a token it still yields a service,
whose tools answer "not configured".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx

from cctg_mcp.config import Settings
from cctg_mcp.dispatcher import Dispatcher
from cctg_mcp.outbox import Outbox
from cctg_mcp.pacing import Pacer
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.config import ResilienceConfig, load_resilience_config
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.service import NotificationService
from cctg_mcp.transports.telegram import TelegramTransport

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    resilience: ResilienceConfig | None = None,
    clock: Clock = SYSTEM_CLOCK,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[NotificationService]:
    config = resilience if resilience is not None else load_resilience_config({}, settings.config_path)
    metrics = MetricsRegistry(clock=clock)
    pipelines = PipelineSet(config, clock=clock, metrics=metrics)
    if settings.problems():
        for problem in settings.problems():
            log.warning("not configured: %s", problem)
        service = NotificationService(settings, None, None, clock=clock, pipelines=pipelines, metrics=metrics,
                                      resilience=config)  # fmt: skip
        yield service
        return

    async with AsyncExitStack() as stack:
        outbox = await Outbox.open(settings.outbox_path)
        stack.push_async_callback(outbox.close)
        transport = TelegramTransport(settings.token, settings.api_base_url, http_transport=http_transport)
        stack.push_async_callback(transport.aclose)
        pacer = Pacer(settings.pacing, clock=clock)
        dispatcher = Dispatcher(
            outbox,
            transport,
            pipelines.for_component("telegram"),
            pacer,
            clock=clock,
        )
        service = NotificationService(
            settings, outbox, dispatcher, clock=clock, pipelines=pipelines, metrics=metrics, resilience=config,
            transport=transport,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            try:
                yield service
            finally:
                tg.cancel_scope.cancel()
