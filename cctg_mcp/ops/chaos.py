"""The faults themselves, at the application level, and their wiring into a ``ChaosController``.

- ``ChaosSender`` wraps the real Telegram transport (the one I/O seam). With no fault set it
  passes every call straight through. Network faults draw from the run's seeded RNG, so the
  same seed and the same call sequence give the same faults:

  * ``network_partition``: every call fails to connect (``ECONNREFUSED``), nothing is sent;
  * ``high_latency``: each call waits first, log-normally distributed around a mean of
    ``50 ms + intensity x 2950 ms`` (capped at 4x the mean), on the injected clock;
  * ``message_loss``: a share ``intensity`` of calls is lost, half of them as a *dropped
    request* (Telegram never saw it) and half as a *lost response* (Telegram accepted the
    message, then the connection reset), which the pipeline retries: a duplicate by
    construction, recorded in ``lost_responses`` so it can be matched;
  * ``error_responses``: a share ``intensity`` of calls answer like Telegram does when it
    fails: 70 % 5xx (500/502/503/504), 30 % 429 with ``retry_after`` 1..(1 + 4 x intensity) s.

  ``target`` narrows a network fault to one chat (``chat:<id>``); ``telegram`` (or none)
  means every call.
- ``bridge_crash`` in direct mode kills the dispatcher loop (``DispatcherSupervisor.kill``)
  and holds it down until recovery restarts it, or the rollback does. In bridge mode it kills
  the real bridge process, and ``event_write_faults`` fails event-file writes
  (``ops/chaos_bridge.py``).
- ``memory_pressure`` holds ``intensity x 256 MiB`` (at most a quarter of the memory the
  process may use) of touched pages; ``cpu_spike`` runs a worker thread busy for
  ``intensity x 90 %`` of every 100 ms. Both are released by the rollback.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.delivery.supervisor import DispatcherSupervisor
from cctg_mcp.ops.chaos_bridge import BridgeProbe, bridge_experiments, safety_reading, unclosed_breakers
from cctg_mcp.resilience.chaos import ChaosController, RunContext, SafetyLimits, SafetyReading
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import NetworkError, ValidationError
from cctg_mcp.resilience.procstats import ProcessSampler
from cctg_mcp.transports.api import BotApi
from cctg_mcp.transports.telegram import error_from_envelope

T = TypeVar("T")
NETWORK_FAULTS = ("network_partition", "high_latency", "message_loss", "error_responses")
MAX_MEMORY_MB = 256
CPU_PERIOD_S = 0.1


@dataclass
class NetworkFault:
    """The fault a network experiment injects into sends, seeded, with counts of what it did."""

    kind: str
    intensity: float
    rng: random.Random
    chat: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)

    def applies(self, chat_id: int | None) -> bool:
        return self.chat is None or chat_id == self.chat

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def delay(self) -> float:
        mean = 0.05 + self.intensity * 2.95
        sigma = 0.5
        value = mean * math.exp(self.rng.gauss(0.0, sigma) - sigma * sigma / 2)
        return min(value, 4 * mean)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calls_faulted": dict(self.counts)}
        if self.delays:
            ordered = sorted(self.delays)
            out["added_latency_ms"] = {
                "count": len(ordered),
                "mean": round(1000 * sum(ordered) / len(ordered), 1),
                "p95": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
                "max": round(1000 * ordered[-1], 1),
            }
        return out


@dataclass(frozen=True)
class LostResponse:
    """A message Telegram accepted whose answer the chaos layer dropped (the caller saw a failure)."""

    chat_id: int
    text: str
    message_id: int


class ChaosSender:
    """The transport wrapper: transparent until a ``NetworkFault`` is set."""

    def __init__(self, inner: BotApi, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.inner = inner
        self.clock = clock
        self.fault: NetworkFault | None = None
        #: Messages Telegram accepted whose response the fault swallowed (so a retry duplicates them).
        self.lost_responses: deque[LostResponse] = deque(maxlen=100_000)

    @property
    def generation(self) -> int:
        return self.inner.generation

    def __repr__(self) -> str:
        return f"ChaosSender({self.inner!r}, fault={self.fault.kind if self.fault else None})"

    async def send_message(
        self, chat_id: int, text: str, *, reply_markup: dict[str, Any] | None = None, parse_mode: str | None = "HTML"
    ) -> int:
        fault = self.fault
        if fault is None or not fault.applies(chat_id):
            return int(await self.inner.send_message(chat_id, text, reply_markup=reply_markup, parse_mode=parse_mode))

        async def call() -> int:
            return int(await self.inner.send_message(chat_id, text, reply_markup=reply_markup, parse_mode=parse_mode))

        def lost(message_id: int) -> None:
            self.lost_responses.append(LostResponse(chat_id, text, message_id))

        return await self._faulted(fault, "sendMessage", call, lost)

    async def get_me(self) -> dict[str, Any]:
        return await self._wrap("getMe", lambda: self.inner.get_me())

    async def get_updates(
        self,
        offset: int | None,
        *,
        timeout: int = 25,  # noqa: ASYNC109 (getUpdates' long-poll parameter, sent to Telegram)
        limit: int = 100,
        allowed_updates: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        return await self._wrap(
            "getUpdates",
            lambda: self.inner.get_updates(offset, timeout=timeout, limit=limit, allowed_updates=allowed_updates),
        )

    async def answer_callback_query(self, callback_query_id: str, text: str | None = None) -> None:
        await self._wrap("answerCallbackQuery", lambda: self.inner.answer_callback_query(callback_query_id, text))

    async def edit_message_text(self, *args: Any, **kwargs: Any) -> Any:
        return await self._wrap("editMessageText", lambda: self.inner.edit_message_text(*args, **kwargs))

    async def rebuild(self) -> None:
        await self.inner.rebuild()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _wrap(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        fault = self.fault
        if fault is None or fault.chat is not None:  # a chat-targeted fault spares chat-less calls
            return await call()
        return await self._faulted(fault, method, call, None)

    async def _faulted(
        self, fault: NetworkFault, method: str, call: Callable[[], Awaitable[T]], lost: Callable[[T], None] | None
    ) -> T:
        kind, rng = fault.kind, fault.rng
        if kind == "network_partition":
            fault.count("refused")
            raise self._error(method, "ECONNREFUSED", "connection refused (network partition)")
        if kind == "high_latency":
            delay = fault.delay()
            fault.delays.append(delay)
            fault.count("delayed")
            await self.clock.sleep(delay)
            return await call()
        if kind == "message_loss" and rng.random() < fault.intensity:
            if rng.random() < 0.5:
                fault.count("request_dropped")
                raise self._error(method, "ECONNRESET", "connection reset before Telegram received the request")
            result = await call()
            fault.count("response_lost")
            if lost is not None:
                lost(result)
            raise self._error(method, "ECONNRESET", "connection reset after Telegram accepted the request")
        if kind == "error_responses" and rng.random() < fault.intensity:
            if rng.random() < 0.3:
                after = rng.randint(1, 1 + round(4 * fault.intensity))
                fault.count("429")
                envelope: dict[str, Any] = {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {after}",
                    "parameters": {"retry_after": after},
                }
            else:
                status = rng.choice((500, 502, 503, 504))
                fault.count(str(status))
                envelope = {"ok": False, "error_code": status, "description": "Bad Gateway (chaos)"}
            error = error_from_envelope(envelope, method=method)
            error.context.component, error.context.operation = "telegram", method
            raise error
        return await call()

    @staticmethod
    def _error(method: str, code: str, what: str) -> NetworkError:
        error = NetworkError(f"Telegram {method}: chaos: {what}", code=code)
        error.context.component, error.context.operation = "telegram", method
        return error


def _chat_target(target: str | None) -> int | None:
    if target in (None, "", "telegram"):
        return None
    assert target is not None
    if target.startswith("chat:"):
        try:
            return int(target[5:])
        except ValueError:
            pass
    raise ValidationError(f"target {target!r} is not valid for a network fault: use telegram or chat:<id>.")


class NetworkExperiment:
    """A chaos experiment that injects a network fault at the Telegram sender."""

    def __init__(self, name: str, description: str, sender: ChaosSender) -> None:
        self.name, self.description, self.sender = name, description, sender
        self._fault: NetworkFault | None = None

    def unavailable(self) -> str | None:
        return None

    async def inject(self, ctx: RunContext) -> None:
        self._fault = NetworkFault(self.name, ctx.intensity, ctx.rng, _chat_target(ctx.target))
        self.sender.fault = self._fault

    async def rollback(self, ctx: RunContext) -> None:
        if self.sender.fault is self._fault:
            self.sender.fault = None
        if self._fault is not None:
            ctx.observations.update(self._fault.summary())
        self._fault = None


class BridgeCrashExperiment:
    """A chaos experiment that kills the dispatcher's background loop until recovery restarts it."""

    name = "bridge_crash"
    description = (
        "Direct mode: kill the dispatcher's background loop (queued events stop going out) and keep it down "
        "until recovery restarts it; the rollback restarts it if nothing else did. Bridge mode: not available."
    )

    def __init__(self, supervisor: DispatcherSupervisor | None, delivery: str) -> None:
        self.supervisor, self.delivery = supervisor, delivery
        self._restarts = 0
        self._killed_at = 0.0

    def unavailable(self) -> str | None:
        if self.delivery == "bridge":
            return "bridge mode: this server does not manage a bridge process to kill"
        if self.supervisor is None:
            return "no supervised dispatcher"
        return None

    async def inject(self, ctx: RunContext) -> None:
        assert self.supervisor is not None
        self._restarts = self.supervisor.restarts
        self._killed_at = ctx.clock.monotonic()
        ctx.observations["killed"] = self.supervisor.kill(hold=True)
        await self.supervisor.wait_stopped()

    async def rollback(self, ctx: RunContext) -> None:
        sup = self.supervisor
        assert sup is not None
        by = "recovery" if sup.restarts > self._restarts else None
        if not sup.running:
            await sup.restart()
            by = "rollback"
        ctx.observations.update(
            restarted_by=by,
            dispatcher_running=sup.running,
            downtime_s=round(ctx.clock.monotonic() - self._killed_at, 3),
        )


class MemoryPressureExperiment:
    """A chaos experiment that holds touched memory in the process for its duration."""

    name = "memory_pressure"
    description = f"Hold intensity x {MAX_MEMORY_MB} MiB of touched memory in the process; released at the end."

    def __init__(self, max_mb: int = MAX_MEMORY_MB) -> None:
        self.max_mb = max_mb
        self._chunks: list[bytes] = []
        self._sampler = ProcessSampler()

    def unavailable(self) -> str | None:
        return None

    def _rss(self) -> float | None:
        return self._sampler.read().rss_mb

    async def inject(self, ctx: RunContext) -> None:
        stats = self._sampler.read()
        mb = round(ctx.intensity * self.max_mb)
        if stats.memory_total_mb is not None:
            mb = min(mb, int(stats.memory_total_mb / 4))
        ctx.observations.update(rss_before_mb=stats.rss_mb, target_mb=mb)

        def fill() -> list[bytes]:
            return [bytes([i % 251 + 1]) * (1 << 20) for i in range(mb)]

        self._chunks = await anyio.to_thread.run_sync(fill)
        ctx.observations["rss_peak_mb"] = self._rss()

    async def rollback(self, ctx: RunContext) -> None:
        ctx.observations["held_mb"] = len(self._chunks)
        self._chunks = []
        ctx.observations["rss_after_mb"] = self._rss()


class CpuSpikeExperiment:
    """A chaos experiment that keeps a worker thread busy for its duration."""

    name = "cpu_spike"
    description = (
        "Keep a worker thread busy for intensity x 90% of every 100 ms (the event loop keeps running); "
        "stopped at the end."
    )

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = [0.0, 0]

    def unavailable(self) -> str | None:
        return None

    async def inject(self, ctx: RunContext) -> None:
        busy_s = ctx.intensity * 0.9 * CPU_PERIOD_S
        self._stop = stop = threading.Event()
        self._busy = box = [0.0, 0]

        def spin() -> None:
            start = time.thread_time()
            while not stop.is_set():
                until = time.perf_counter() + busy_s
                while time.perf_counter() < until:
                    pass
                box[1] += 1
                stop.wait(CPU_PERIOD_S - busy_s)
            box[0] = time.thread_time() - start

        self._thread = threading.Thread(target=spin, name="chaos-cpu-spike", daemon=True)
        self._thread.start()
        ctx.observations["duty_cycle"] = round(busy_s / CPU_PERIOD_S, 3)

    async def rollback(self, ctx: RunContext) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await anyio.to_thread.run_sync(thread.join, 5.0)
        ctx.observations.update(cpu_busy_s=round(self._busy[0], 3), cycles=self._busy[1])


class ServiceProbe:
    """Safety readings and the recovery check, from the live service."""

    def __init__(
        self,
        service: NotificationService,
        sender: ChaosSender,
        supervisor: DispatcherSupervisor | None,
        component: str = "telegram",
    ) -> None:
        self.service, self.sender, self.supervisor, self.component = service, sender, supervisor, component

    async def reading(self) -> SafetyReading:
        return await safety_reading(self.service, self.component)

    async def recovered(self, since_epoch: float) -> tuple[bool, str]:
        svc, problems = self.service, []
        if self.supervisor is not None and not self.supervisor.running:
            problems.append("the dispatcher is not running")
        if svc.pipelines is not None:
            pipe = svc.pipelines.for_component(self.component)
            if pipe.breaker.state.value == "open" and pipe.breaker.retry_after() <= 0:
                try:  # an open breaker only half-opens on a call: probe it, as a health check would
                    await pipe.call("getMe", self.sender.get_me, deadline=svc.clock.monotonic() + 5.0)
                except Exception as exc:
                    problems.append(f"probe failed: {exc}")
        problems += unclosed_breakers(svc, self.component)  # its own and every per-operation one
        if svc.outbox is not None:
            counts = await svc.outbox.counts()
            age = counts.oldest_pending_age_s
            if age is not None and svc.clock.time() - age < since_epoch:
                problems.append(f"{counts.pending + counts.in_flight} queued, oldest from before the rollback")
                if svc.dispatcher is not None:
                    svc.dispatcher.wake()
        return (not problems, "; ".join(problems) or "breakers closed, backlog drained, dispatcher running")


DESCRIPTIONS = {
    "network_partition": "Every call to Telegram fails to connect (ECONNREFUSED); sends queue and the breaker opens.",
    "high_latency": "Each call to Telegram waits first: log-normal around 50 ms + intensity x 2950 ms.",
    "message_loss": "A share (intensity) of calls is lost: half as a dropped request, half as a response lost "
    "after Telegram accepted the message (the retry then duplicates it).",
    "error_responses": "A share (intensity) of calls fail like Telegram does: 5xx, or 429 with retry_after.",
}


def build_chaos(
    service: NotificationService,
    sender: ChaosSender | None,
    supervisor: DispatcherSupervisor | None,
    *,
    limits: SafetyLimits | None = None,
    seed: int | None = None,
) -> ChaosController:
    """The controller with every experiment, for the composition root (development/staging).
    Direct delivery (a ``sender``): network faults and the dispatcher kill; bridge delivery:
    the bridge process kill and event-file write faults (``ops/chaos_bridge.py``)."""
    experiments: list[Any]
    probe: Any
    if sender is not None:
        experiments = [NetworkExperiment(n, DESCRIPTIONS[n], sender) for n in NETWORK_FAULTS]
        experiments.append(BridgeCrashExperiment(supervisor, service.settings.delivery))
        probe = ServiceProbe(service, sender, supervisor)
    else:
        experiments, probe = bridge_experiments(service), BridgeProbe(service)
    experiments += [MemoryPressureExperiment(), CpuSpikeExperiment()]
    return ChaosController(
        service.settings.environment,
        experiments,
        probe,
        clock=service.clock,
        limits=limits,
        seed=seed,
    )
