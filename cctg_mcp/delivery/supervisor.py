"""Keeps the dispatcher's background loop alive: restart after a crash, kill and restart on demand.

The composition root starts ``DispatcherSupervisor.run`` in the server's task group instead
of ``Dispatcher.run``. The loop runs in its own cancel scope, so it can be

- killed (``kill()``; the chaos ``bridge_crash`` experiment in direct mode): the loop stops
  as a crashed task would, its leased rows go back to the queue, and it stays down while
  ``hold`` is set, until ``restart()`` (the recovery manager, or the chaos rollback);
- restarted (``restart()``; the recovery ``restart`` strategy): stopped if running, then
  started again at once;
- crashed (an exception escapes ``Dispatcher.run``): logged and restarted automatically
  after ``restart_delay``, doubling up to ``max_restart_delay`` while it keeps crashing.
"""

from __future__ import annotations

import logging

import anyio
import anyio.abc

from cctg_mcp.delivery.dispatcher import Dispatcher
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import redact

log = logging.getLogger(__name__)


class _Started:
    """Passes ``started()`` on and remembers that it happened."""

    def __init__(self, inner: anyio.abc.TaskStatus[None], event: anyio.Event) -> None:
        self.inner, self.event, self.done = inner, event, False

    def started(self, value: None = None) -> None:
        self.done = True
        self.event.set()
        self.inner.started()


class DispatcherSupervisor:
    """Runs the dispatcher's background loop and restarts it when it dies or is killed."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        clock: Clock = SYSTEM_CLOCK,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.clock = clock
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.held = False
        self.kills = 0
        self.crashes = 0
        self.restarts = 0
        self.last_error: str | None = None
        self._crashed = False
        self._scope: anyio.CancelScope | None = None
        self._exited = anyio.Event()
        self._wanted = anyio.Event()
        self._up = anyio.Event()

    @property
    def running(self) -> bool:
        return self.dispatcher.running

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the dispatcher until cancelled; errors while starting the first time propagate."""
        async with anyio.create_task_group() as tg:
            await tg.start(self._host, True)
            task_status.started()
            delay = self.restart_delay
            while True:
                await self._exited.wait()
                crashed = self._crashed
                if self.held:
                    await self._wanted.wait()
                elif crashed:
                    with self.clock.timeout_scope(delay):
                        await self._wanted.wait()
                    delay = min(self.max_restart_delay, delay * 2)
                else:
                    delay = self.restart_delay
                self.held = False
                self.restarts += 1
                await tg.start(self._host, False)

    async def _host(self, first: bool, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._exited, self._wanted, self._crashed = anyio.Event(), anyio.Event(), False
        status = _Started(task_status, self._up)
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                try:
                    await self.dispatcher.run(task_status=status)
                except Exception as exc:
                    if first and not status.done:
                        raise
                    self.crashes += 1
                    self._crashed = True
                    self.last_error = redact(f"{type(exc).__name__}: {exc}")
                    log.error("the dispatcher crashed (%s); restarting it", self.last_error)
        finally:
            self._scope = None
            self._up = anyio.Event()
            self._exited.set()
        if not status.done:  # crashed (or was killed) before it started: the supervisor goes on
            task_status.started()

    def kill(self, *, hold: bool = True) -> bool:
        """Stop the loop now (as if its task died). With ``hold`` it stays down until ``restart()``."""
        if self._scope is None:
            return False
        self.held = hold
        self.kills += 1
        self._scope.cancel()
        return True

    async def wait_stopped(self) -> None:
        """Return once the loop is not running (after ``kill()``, when its cleanup is done)."""
        if self._scope is not None or self.dispatcher.running:
            await self._exited.wait()

    async def restart(self, *, wait_s: float = 10.0, delay_s: float = 0.0) -> bool:
        """Start the loop again (stopping it first if it runs, then waiting ``delay_s``, the
        recovery's restartDelay); True once it runs again."""
        if self._scope is not None:
            self.held = True
            self._scope.cancel()
            await self._exited.wait()
        if delay_s > 0:
            await self.clock.sleep(delay_s)
        up = self._up
        self._wanted.set()
        with self.clock.timeout_scope(wait_s):
            await up.wait()
        return self.dispatcher.running
