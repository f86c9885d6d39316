"""Response use cases, free of MCP: list, clear, summarise and wait for the person's answers.

Two sources, one interface (``responses``, ``clear``, ``pending``, ``wait``, ``status``,
``aclose``, ``poller``):

- ``Answers`` (telegram delivery): the response store fed by the getUpdates poller;
- ``BridgeAnswers`` (bridge delivery, ``answers.bridge``): the CCTelegram bridge's response
  files in ``CC_TELEGRAM_RESPONSES_DIR``.

Both implement the ``AnswerSource`` protocol. The composition root (app.py) opens the one that
fits the delivery mode and builds the service with it (``service.answers``);
``answers_of(service)`` returns it, or raises the same "not configured"
error as the send tools when there is nothing to read.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from cctg_mcp.answers.common import ProgressFn, UnknownEventError, summarise_pending, unknown_event, wait_for_answer
from cctg_mcp.answers.models import ClearResult, PendingResponses, ResponseList, TelegramResponse, WaitResult
from cctg_mcp.answers.poller import DEFAULT_POLL_TIMEOUT, ResponsePoller, updates_pipeline
from cctg_mcp.answers.store import ANSWERS_FILE, ResponseStore
from cctg_mcp.config import Settings
from cctg_mcp.delivery.coordination import Coordinator
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet

__all__ = ["AnswerSource", "Answers", "ProgressFn", "UnknownEventError", "answers_of", "bot_id_of"]


def bot_id_of(token: str) -> int:
    head = token.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def answers_of(service: NotificationService) -> AnswerSource:
    """The service's answers (direct or bridge), or the "not configured" error the send tools give."""
    if service.answers is None:
        raise service.not_configured()
    return service.answers


class Answers:
    """The answers feature: the response store and, in direct mode, its poller."""

    def __init__(
        self,
        store: ResponseStore,
        poller: ResponsePoller | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        progress_interval: float = 5.0,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.store = store
        self.poller = poller
        self.clock = clock
        #: The sessions sharing this bot: other processes' stored answers wake ``wait`` too.
        self.coordinator = coordinator
        #: Seconds between progress notifications of ``wait``.
        self.progress_interval = progress_interval

    @classmethod
    async def open(
        cls,
        settings: Settings,
        transport: Any,
        pipelines: PipelineSet,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: MetricsRegistry | None = None,
        poll_timeout: int = DEFAULT_POLL_TIMEOUT,
        coordinator: Coordinator | None = None,
    ) -> Answers:
        """Open the store next to the outbox and build the poller (start ``poller.run`` yourself)."""
        store = await ResponseStore.open(
            settings.data_dir / ANSWERS_FILE,
            outbox_path=settings.outbox_path,
            bot_id=bot_id_of(settings.token),
            clock=clock,
        )
        poller = ResponsePoller(
            store,
            transport,
            updates_pipeline(pipelines),
            allowed_users=settings.allowed_users,
            clock=clock,
            metrics=metrics,
            poll_timeout=poll_timeout,
        )
        return cls(store, poller, clock=clock, coordinator=coordinator)

    async def aclose(self) -> None:
        await self.store.close()

    def status(self) -> dict[str, Any]:
        return {"poller": self.poller.status() if self.poller is not None else None}

    # ---- use cases ----------------------------------------------------------------------

    async def responses(
        self, limit: int = 10, since_minutes: int | None = None, *, now: float | None = None
    ) -> ResponseList:
        since_s = since_minutes * 60.0 if since_minutes is not None else None
        total, rows = await self.store.recent(limit=limit, since_s=since_s, now=now)
        return ResponseList(count=len(rows), total=total, responses=rows)

    async def clear(self, older_than_hours: int = 24, *, now: float | None = None) -> ClearResult:
        n = await self.store.delete_older_than(older_than_hours * 3600.0, now=now)
        return ClearResult(deleted_count=n, message=f"Cleared {n} old responses (older than {older_than_hours} h)")

    async def pending(self, since_minutes: int = 10, *, now: float | None = None) -> PendingResponses:
        total, rows = await self.store.recent(since_s=since_minutes * 60.0, now=now)
        return summarise_pending(total, rows, since_minutes)

    async def wait(self, event_id: str, timeout_s: float, *, on_progress: ProgressFn | None = None) -> WaitResult:
        """The first answer to ``event_id``, as soon as it is stored, or a timeout result.

        Never polls the answers: each read is preceded by taking the change events (this
        process's store, and the coordinator's for answers another process stored), and the
        wait sleeps on them (a write in between wakes it at once)."""
        if await self.store.event_known(event_id) is False:
            raise unknown_event(event_id)
        changed: list[anyio.Event] = []

        async def check() -> TelegramResponse | None:
            # Taken before the read: a write in between wakes us.
            changed[:] = [self.store.changed()]
            if self.coordinator is not None:
                changed.append(self.coordinator.answers_changed())
            return await self.store.first_for_event(event_id)

        async def pause(seconds: float) -> None:
            with self.clock.timeout_scope(seconds):
                await first_of(changed)

        return await wait_for_answer(
            event_id,
            timeout_s,
            clock=self.clock,
            check=check,
            pause=pause,
            progress_interval=self.progress_interval,
            on_progress=on_progress,
        )


async def first_of(events: list[anyio.Event]) -> None:
    """Return when any of ``events`` is set."""
    if len(events) == 1:
        await events[0].wait()
        return
    async with anyio.create_task_group() as tg:

        async def one(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(one, event)


class AnswerSource(Protocol):
    """Where the person's answers come from: ``Answers`` (the getUpdates poller and its store)
    or ``BridgeAnswers`` (the bridge's response files). The answer tools use only this; what
    differs by source (the poller's status, the store's retention) narrows to the class."""

    @property
    def poller(self) -> ResponsePoller | None:
        """The getUpdates poller (direct delivery); None when the bridge reads Telegram."""
        ...

    async def aclose(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """The source's state, for the status document."""
        ...

    async def responses(
        self, limit: int = 10, since_minutes: int | None = None, *, now: float | None = None
    ) -> ResponseList: ...

    async def clear(self, older_than_hours: int = 24, *, now: float | None = None) -> ClearResult: ...

    async def pending(self, since_minutes: int = 10, *, now: float | None = None) -> PendingResponses: ...

    async def wait(self, event_id: str, timeout_s: float, *, on_progress: ProgressFn | None = None) -> WaitResult:
        """The first answer to ``event_id``, or a timeout result."""
        ...
