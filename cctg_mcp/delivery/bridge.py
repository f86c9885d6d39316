"""Bridge delivery (``CCTG_DELIVERY=bridge``): the outbox drains into CCTelegram event files.

``BridgeDispatcher`` is the dispatcher with one step replaced: ``send_parts`` writes the
event's file (``transports.bridge.files.EventFileWriter``) instead of calling the Bot API.
Leases, settling rows, classifying failures and the background loop stay the shared ones,
so everything accepted is committed first and nothing is lost: a full disk (ENOSPC) leaves
the row queued and retried, an unwritable directory (EACCES, EROFS...) makes it dead with a
message naming the directory. Each event has one delivery row, with ``chat_id`` 0 (the
bridge fans out to its own allowed users).

Which pipeline: the writes go through the **"bridge"** component. In bridge mode the bridge
*is* the delivery path, and the status tool and the health monitor already watch the
"bridge" breaker as the active one; filesystem failures keep their own classification and
codes (EMFILE/EAGAIN retried, EACCES/ENOENT not), which is what the "filesystem" retry policy
encodes too. The bridge's health is reported (``get_bridge_status``, the ``bridge-health``
check), never a gate: files are written whether or not the bridge runs; it picks them up
when it starts.

The service holds the ``BridgeProcessManager`` as ``service.bridge`` (in any delivery
mode, built by ``transports.bridge.process.bridge_manager``), for the bridge tools and the
recovery ``restart`` strategy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, Field

from cctg_mcp.config import Settings
from cctg_mcp.delivery.coordination import Coordinator
from cctg_mcp.delivery.dispatcher import (
    CallPipeline,
    Dispatcher,
    Outcome,
    background_send_timeout,
    operation_for,
)
from cctg_mcp.delivery.outbox import Delivery, Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock, iso_z
from cctg_mcp.resilience.errors import ConfigurationError
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.transports.bridge.files import EventFileWriter, event_file_waiting, waiting_event_files
from cctg_mcp.transports.bridge.process import BridgeHealth, BridgeProcessManager, probe_bridge_health

if TYPE_CHECKING:  # the service module imports the dispatcher this module extends
    from cctg_mcp.delivery.service import NotificationService

#: The pipeline component event-file writes go through (see the module docstring).
BRIDGE_COMPONENT = "bridge"
#: How long a send that found its file still waiting asks the bridge's /health why (seconds).
BRIDGE_CHECK_S = 1.0
#: Bridge recipients: one delivery row per event.
BRIDGE_CHAT_ID = 0


class _NoBotApi:
    """Bridge mode has no Telegram client: the base class's sender is never used."""

    async def send_message(
        self, chat_id: int, text: str, *, reply_markup: dict[str, Any] | None = None, parse_mode: str | None = "HTML"
    ) -> int:
        raise ConfigurationError("bridge delivery does not call the Telegram Bot API", code="BRIDGE_MODE")


BridgeCheck = Callable[[], Awaitable[str]]
#: How often a send tool looks whether the bridge consumed its file (seconds, on the clock).
CONSUME_POLL_S = 0.05


class BridgeDispatcher(Dispatcher):
    """The dispatcher whose delivery step writes a CCTelegram event file.

    The row is settled once the file is written (the bridge owns it from then on), but a send
    tool says ``delivered`` only when the bridge consumed (deleted) the file before the tool's
    deadline (``confirm``); otherwise ``queued``, with what the bridge's health check says."""

    def __init__(
        self,
        outbox: Outbox,
        writer: EventFileWriter,
        pipeline: CallPipeline,
        pacer: Pacer,
        *,
        bridge_check: BridgeCheck | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(outbox, _NoBotApi(), pipeline, pacer, **kwargs)
        self.writer = writer
        self.files_written = 0
        self.bridge_check = bridge_check
        #: delivery id -> the file its attempt in progress wrote; ``deliver`` moves it onto the
        #: outcome, so nothing stays here once the attempt ends (background ones included).
        self._files: dict[int, Path] = {}

    async def send_parts(self, delivery: Delivery, message_ids: list[int], deadline: float | None) -> None:
        if delivery.parts_sent > 0:  # written before a crash and recorded: nothing left to do
            return

        async def write() -> Path:
            return await self.writer.write(delivery.event)

        path = await self.pipeline.call(
            operation_for(delivery.event), write, deadline=deadline, event_type=delivery.event.type
        )
        self._files[delivery.id] = path
        self.files_written += 1

    async def deliver(self, delivery: Delivery, *, deadline: float | None = None) -> Outcome:
        try:
            outcome = await super().deliver(delivery, deadline=deadline)
        finally:
            path = self._files.pop(delivery.id, None)
        return outcome if path is None else replace(outcome, event_file=path)

    async def as_settled(self, event: Event, status: str, reason: str | None) -> tuple[str, str | None]:
        """A row marked delivered here means its file was written: sent again, the event reads
        ``queued`` while that file still waits in the events dir (the bridge has not taken it)."""
        if status != "delivered":
            return status, reason
        path = await anyio.to_thread.run_sync(event_file_waiting, self.writer.events_dir, event.task_id, event.event_id)
        if path is None:
            return status, reason
        return "queued", await self._not_consumed(path)

    async def _not_consumed(self, path: Path) -> str:
        seen = "no bridge check configured"
        if self.bridge_check is not None:
            # Bounded well inside the send's safety margin (2 s past its deadline): a slow
            # /health must not cut the send short, which would lose these words for a bare
            # "the delivery deadline was reached".
            seen = f"its health check did not answer within {BRIDGE_CHECK_S:g} s"
            with self.clock.timeout_scope(BRIDGE_CHECK_S):
                seen = await self.bridge_check()
        return (
            f"The event file {path.name} was written to {path.parent} but the CCTelegram bridge has "
            f"not picked it up yet (bridge: {seen}). It is sent when the bridge runs; do not send it again."
        )

    async def confirm(self, outcome: Outcome, deadline: float) -> Outcome:
        path = outcome.event_file
        if outcome.status != "delivered" or path is None:
            return outcome
        while await anyio.to_thread.run_sync(path.exists):
            if self.clock.monotonic() >= deadline:
                return replace(
                    outcome,
                    status="queued",
                    reason=await self._not_consumed(path),
                    error_code="BRIDGE_NOT_CONSUMED",
                    next_attempt_at=None,
                )
            await self.clock.sleep(min(CONSUME_POLL_S, max(0.0, deadline - self.clock.monotonic())))
        return outcome


def bridge_check_of(settings: Settings) -> BridgeCheck:
    """What the bridge's health check says, in words: its /health, and whether it is installed."""

    async def check() -> str:
        health = await probe_bridge_health(settings.bridge_health_url, timeout_s=2.0)
        words = f"health check {health.status}: {health.detail}"
        manager = BridgeProcessManager(
            data_dir=settings.data_dir, health_url=settings.bridge_health_url, executable=settings.bridge_path
        )
        if health.status != "healthy" and manager.executable_or_none() is None:
            words += (
                "; no bridge executable is installed (set CC_TELEGRAM_BRIDGE_PATH or put cctelegram-bridge on PATH)"
            )
        return words

    return check


def bridge_dispatcher(
    settings: Settings,
    outbox: Outbox,
    pipelines: PipelineSet,
    pacer: Pacer,
    *,
    clock: Clock = SYSTEM_CLOCK,
    coordinator: Coordinator | None = None,
    lease_s: float | None = None,
) -> BridgeDispatcher:
    """The composition root's bridge-mode dispatcher."""
    lease = settings.lease_seconds if lease_s is None else lease_s
    return BridgeDispatcher(
        outbox,
        EventFileWriter(settings.events_dir, clock=clock),
        pipelines.for_component(BRIDGE_COMPONENT),
        pacer,
        bridge_check=bridge_check_of(settings),
        clock=clock,
        lease_s=lease,
        send_timeout_s=background_send_timeout(settings.lease_seconds),
        coordinator=coordinator,
    )


class BridgeMetrics(BaseModel):
    """The figures the CCTelegram bridge reports on its health endpoint."""

    uptime_seconds: float = 0
    events_processed: float = 0
    telegram_messages_sent: float = 0
    error_count: float = 0
    memory_usage_mb: float = 0
    cpu_usage_percent: float = 0


class BridgeStatus(BaseModel):
    """The bridge's process, health and event files, as one status."""

    running: bool = Field(description="The bridge process is running (pid file or started by this server).")
    health: Literal["healthy", "degraded", "unhealthy"] = Field(description="From the bridge's /health URL.")
    health_detail: str
    pid: int | None = None
    delivery: str = Field(description="This server's delivery mode (bridge: events are written as files).")
    events_dir: str
    pending_events: int = Field(description="Event files written and not yet picked up by the bridge.")
    last_event_time: str | None = Field(default=None, description="When the newest event file was written (UTC).")
    executable: str | None = Field(default=None, description="The bridge executable found, if any.")
    log_file: str
    metrics: BridgeMetrics = Field(default_factory=BridgeMetrics)
    message: str


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return iso_z(epoch)


async def bridge_status(service: NotificationService) -> BridgeStatus:
    """Process, health and the events directory; on any error ``running: false, unhealthy``."""
    manager = service.bridge
    settings = service.settings
    base: dict[str, Any] = {
        "delivery": settings.delivery,
        "events_dir": str(settings.events_dir),
        "log_file": str(manager.log_file),
    }
    try:
        process = manager.check_process()
        health: BridgeHealth = await manager.health()
        pending, _, newest = await anyio.to_thread.run_sync(waiting_event_files, settings.events_dir)
        dispatcher = service.dispatcher
        written = dispatcher.writer.last_written_at if isinstance(dispatcher, BridgeDispatcher) else None
        last = max((t for t in (written, newest) if t is not None), default=None)
        exe = manager.executable_or_none()
    except Exception as exc:  # the seed's contract: a status, never an exception
        return BridgeStatus(
            running=False,
            health="unhealthy",
            health_detail=f"{type(exc).__name__}: {exc}",
            pending_events=0,
            message="Bridge status could not be read.",
            **base,
        )
    words = [process.message + (f" (pid {process.pid})" if process.pid else ""), f"health {health.status}"]
    if pending:
        words.append(f"{pending} event file(s) waiting in {settings.events_dir}")
    if exe is None and not process.running:
        words.append("no bridge executable found (set CC_TELEGRAM_BRIDGE_PATH)")
    return BridgeStatus(
        running=process.running,
        health=health.status,
        health_detail=health.detail,
        pid=process.pid,
        pending_events=pending,
        last_event_time=_iso(last),
        executable=str(exe) if exe else None,
        metrics=BridgeMetrics(**health.metrics),
        message="; ".join(words) + ".",
        **base,
    )
