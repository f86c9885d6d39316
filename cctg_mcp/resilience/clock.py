"""Time, injected: every wait and every reading of time goes through a ``Clock``.

Two kinds of time, both here and nowhere else: ``monotonic()`` for durations and deadlines
(never goes back, immune to time zones and clock steps) and ``time()`` for wall-clock
timestamps that are stored or shown (outbox due times, report timestamps).

``SystemClock`` is the real thing (the system clocks, anyio sleeps and cancel scopes).
``FakeClock`` is virtual time for tests on asyncio and trio alike: ``sleep`` and
``timeout_scope`` register timers that fire only when the test calls ``advance()``, or
automatically when every task is blocked (``autojump()``), so a 30-second break
duration takes no wall time and the order of events is exact.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Literal, Protocol

import anyio
import anyio.to_thread
import sniffio


def iso_z(epoch: float, timespec: Literal["auto", "seconds", "milliseconds"] = "seconds") -> str:
    """Epoch seconds as ISO 8601 in UTC with a ``Z``: the one format for times we store or show."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


async def wait_all_tasks_blocked() -> None:
    """``anyio.wait_all_tasks_blocked()`` without its asyncio polling delay.

    On asyncio anyio looks at every task and, if one is not blocked, sleeps 0.1 s of *real*
    time before looking again; a virtual-time test that jumps thousands of times then spends
    minutes sleeping (a whole-server test took 43 s on asyncio and 1 s on trio). Here the look
    is repeated after a bare checkpoint instead, and only once the loop has no callback queued
    (a finished task's done-callback, which wakes its parent, is no task: between the two every
    task looks blocked). Trio has this natively, as has a loop without a visible ready queue."""
    loop = asyncio.get_running_loop() if sniffio.current_async_library() == "asyncio" else None
    ready = getattr(loop, "_ready", None)  # asyncio's own loops: the callbacks due to run now
    if loop is None or ready is None:
        await anyio.wait_all_tasks_blocked()
        return
    this = asyncio.current_task()
    while True:
        await asyncio.sleep(0)
        if not ready and all(task is this or _blocked(task) for task in asyncio.all_tasks()):
            return


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)  # what anyio's own check reads (asyncio's private slot)
    return waiter is not None and not waiter.done()


class Clock(Protocol):
    """Monotonic time, sleeping and timeouts, injectable (the fake clock runs tests in virtual time)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock (never goes back, immune to time zones)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (UTC), for timestamps stored or shown."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout_scope(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        """``with clock.timeout_scope(s) as scope:`` cancels the body after ``s`` seconds;
        ``scope.cancelled_caught`` tells whether it did."""
        ...


class SystemClock:
    """Real time: ``time.monotonic``, ``time.time`` and anyio's own sleeps and deadlines."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def timeout_scope(self, seconds: float) -> AbstractContextManager[anyio.CancelScope]:
        if math.isinf(seconds):
            return anyio.CancelScope()
        return anyio.CancelScope(deadline=anyio.current_time() + max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """Virtual time. Timers fire in deadline order, ties in registration order.

    ``time()`` is the wall clock seen by the code under test: it starts at ``wall_start``
    (a fixed instant, so stored timestamps are reproducible) and advances with ``monotonic()``.
    """

    def __init__(self, start: float = 1000.0, wall_start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._timers: list[tuple[float, int, anyio.Event | anyio.CancelScope]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._changed: anyio.Event | None = None
        #: Every sleep requested, in order (what a retry schedule is checked against).
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    @property
    def pending_timers(self) -> int:
        return len(self._live)

    def _push(self, deadline: float, timer: anyio.Event | anyio.CancelScope) -> int:
        seq = next(self._seq)
        heapq.heappush(self._timers, (deadline, seq, timer))
        self._live.add(seq)
        if self._changed is not None:
            self._changed.set()
        return seq

    def _prune(self) -> None:
        while self._timers and self._timers[0][1] not in self._live:
            heapq.heappop(self._timers)

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        event = anyio.Event()
        seq = self._push(self._now + seconds, event)
        try:
            await event.wait()
        finally:
            self._live.discard(seq)

    @contextmanager
    def timeout_scope(self, seconds: float) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            seq = None if math.isinf(seconds) else self._push(self._now + max(0.0, seconds), scope)
            try:
                yield scope
            finally:
                if seq is not None:
                    self._live.discard(seq)

    def next_deadline(self) -> float | None:
        self._prune()
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer due on the way, in order."""
        target = self._now + seconds
        while True:
            self._prune()
            if not self._timers or self._timers[0][0] > target:
                break
            deadline, seq, timer = heapq.heappop(self._timers)
            self._live.discard(seq)
            self._now = max(self._now, deadline)
            if isinstance(timer, anyio.Event):
                timer.set()
            else:
                timer.cancel()
            # Let woken tasks run (and possibly register new timers) before going on.
            await wait_all_tasks_blocked()
        self._now = max(self._now, target)

    async def run_until_blocked(self) -> None:
        """Fire timers one by one while every task is blocked on virtual time."""
        while True:
            await wait_all_tasks_blocked()
            deadline = self.next_deadline()
            if deadline is None:
                return
            await self.advance(deadline - self._now)

    @asynccontextmanager
    async def autojump(self) -> AsyncIterator[None]:
        """Inside this block, whenever every task waits, time jumps to the next timer.

        Time never jumps while a worker thread is busy (the outbox and the answers store commit
        in threads): a task waiting for a thread is not waiting for time, and jumping then would
        fire timers the real code could never reach."""
        limiter = anyio.to_thread.current_default_thread_limiter()
        async with anyio.create_task_group() as tg:

            async def jumper() -> None:
                while True:
                    await wait_all_tasks_blocked()
                    if limiter.borrowed_tokens:
                        await anyio.sleep(0.0005)  # a thread is working: let it finish first
                        continue
                    deadline = self.next_deadline()
                    if deadline is None:
                        self._changed = anyio.Event()
                        await self._changed.wait()
                        self._changed = None
                        continue
                    await self.advance(deadline - self._now)

            tg.start_soon(jumper)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()


@contextmanager
def elapsed(clock: Clock) -> Iterator[list[float]]:
    """``with elapsed(clock) as e: ...`` then ``e[0]`` holds the seconds spent."""
    box = [0.0]
    start = clock.monotonic()
    try:
        yield box
    finally:
        box[0] = clock.monotonic() - start
