"""Recovery manager: sessions that run real recovery actions, escalating when they fail.

Generic: it knows nothing of Telegram, httpx or MCP. What each strategy *does* is a
``StrategyFn`` given by the composition root (``cctg_mcp.ops.recovery``); an outcome is
whatever that function returned after it checked its own effect, never a random draw.

A session for one component:

* starts at the requested strategy, else the error's ``recovery.strategy``, else the
  component's default (``default_strategy(component)``);
* runs one attempt at a time, at most ``max_recovery_attempts``, waiting ``recovery_delay``
  between attempts (on the injected clock);
* after ``escalation_threshold`` failed attempts at one strategy moves to the next one in
  ``errors.ESCALATION_ORDER`` (retry → circuit_breaker → restart → fallback →
  graceful_degradation → escalate → manual), raising the escalation level;
* stops at the first attempt that acted: ``succeeded`` only when the action's own check of
  the effect passed, ``unverified`` when it acted and nothing could check it, ``mitigated``
  when it only limits the damage (fallback, degradation); ``escalated`` when it ends on
  ``escalate`` or ``manual`` (or a strategy said a person is needed), else ``failed`` — but
  before failing, the backup strategies run by priority (the seed's ``bridge-restart``,
  ``process-restart``, ``fallback-mode``), those whose conditions name the session's error
  code or ``ALL_RECOVERY_FAILED``; a backup's outcome is classified the same way.
* a ``mitigated`` session stays open: it ends ``succeeded`` when the health monitor reports
  the component healthy again (that is the check), or when a later request drives it again
  and an attempt verifies a fix. While it is open, health transitions start no new session.

One session per component at a time: a second request joins the running one. Finished
sessions go to a bounded history; ``statistics()`` counts over the process lifetime, and
its success rate and time to recover count verified recoveries only.
``run()`` owns the task group background sessions run in (health-triggered ones arrive
through a memory stream), so nothing starts outside structured concurrency.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock, iso_z
from cctg_mcp.resilience.errors import ESCALATION_ORDER, BaseResilienceError, RecoveryStrategy
from cctg_mcp.resilience.recovery_models import AttemptOutcome as AttemptOutcome
from cctg_mcp.resilience.recovery_models import BackupPlan as BackupPlan
from cctg_mcp.resilience.recovery_models import RecoveryAttempt as RecoveryAttempt
from cctg_mcp.resilience.recovery_models import RecoveryRequest as RecoveryRequest
from cctg_mcp.resilience.recovery_models import RecoverySession as RecoverySession
from cctg_mcp.resilience.recovery_models import RecoverySettings as RecoverySettings
from cctg_mcp.resilience.recovery_models import RecoveryStatistics as RecoveryStatistics
from cctg_mcp.resilience.recovery_models import SessionStatus as SessionStatus
from cctg_mcp.resilience.recovery_models import StrategyFn as StrategyFn
from cctg_mcp.resilience.recovery_models import StrategyOutcome as StrategyOutcome
from cctg_mcp.resilience.recovery_models import backup_strategy_of as backup_strategy_of

log = logging.getLogger(__name__)

_HANDED_OFF = (RecoveryStrategy.ESCALATE, RecoveryStrategy.MANUAL)


def _iso(epoch: float) -> str:
    return iso_z(epoch, "milliseconds")


def next_strategy(current: RecoveryStrategy) -> RecoveryStrategy:
    """The next step in ``ESCALATION_ORDER`` (strategies outside it escalate to manual)."""
    if current not in ESCALATION_ORDER:
        return RecoveryStrategy.MANUAL
    index = ESCALATION_ORDER.index(current)
    return ESCALATION_ORDER[min(index + 1, len(ESCALATION_ORDER) - 1)]


@dataclass
class _Job:
    component: str
    error: BaseResilienceError | None
    strategy: RecoveryStrategy | None
    trigger: str
    error_code: str | None = None


DefaultStrategy = Callable[[str, "str | None"], RecoveryStrategy]


class RecoveryManager:
    """Runs recovery sessions for failing components: strategies in order, then escalation."""

    def __init__(
        self,
        settings: RecoverySettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        strategies: Mapping[RecoveryStrategy, StrategyFn],
        default_strategy: DefaultStrategy | None = None,
        on_healthy: Callable[[str], Awaitable[None]] | None = None,
        canonical: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.strategies = dict(strategies)
        #: ``(component, error_code) -> strategy`` when neither the caller nor an error names one.
        self._default: DefaultStrategy = default_strategy or (lambda _c, _code: RecoveryStrategy.RETRY)
        #: Maps a reported name to the component a session is for ("telegram_breaker" -> "telegram"),
        #: so two health checks of one component never start two sessions.
        self.canonical = canonical or (lambda name: name)
        #: Called (in the background) when a component turns healthy again: undo mitigations.
        self.on_healthy = on_healthy
        self._history: deque[RecoverySession] = deque(maxlen=max(1, settings.history_size))
        self._active: dict[str, RecoverySession] = {}
        self._done: dict[str, anyio.Event] = {}
        self._send: MemoryObjectSendStream[_Job | str] | None = None
        self._counts = {"sessions": 0, "succeeded": 0, "unverified": 0, "failed": 0, "escalated": 0}
        self._recover_time = 0.0
        #: When each open session started (clock.monotonic), for its time to recover.
        self._opened: dict[str, float] = {}

    # ---- background ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._send is not None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve background requests (health transitions) until cancelled."""
        send, receive = anyio.create_memory_object_stream[_Job | str](max_buffer_size=64)
        async with anyio.create_task_group() as tg, receive:
            self._send = send
            task_status.started()
            try:
                async for job in receive:
                    if isinstance(job, str):
                        tg.start_soon(self._healthy, job)
                    elif self.canonical(job.component) not in self._active:
                        tg.start_soon(self._background, job)
            finally:
                self._send = None
                send.close()

    async def _background(self, job: _Job) -> None:
        await self.recover(
            job.component, error=job.error, strategy=job.strategy, trigger=job.trigger, error_code=job.error_code
        )

    async def _healthy(self, component: str) -> None:
        if self.on_healthy is not None:
            try:
                await self.on_healthy(component)
            except Exception:
                log.exception("undoing recovery mitigations for %s failed", component)
        self.close_mitigated(component, f"the health monitor reports {component} healthy again")

    def close_mitigated(self, component: str, seen: str) -> RecoverySession | None:
        """A check passed for ``component``: its open mitigated session ends ``succeeded``."""
        session = self._active.get(self.canonical(component))
        if session is None or session.status != "mitigated" or session.id in self._done:
            return None
        session.status = "succeeded"
        session.summary = f"{session.summary}; verified: {seen}"
        self._finish(session, self.clock.monotonic() - self._opened[session.id])
        return session

    def request(
        self,
        component: str,
        *,
        error: BaseResilienceError | None = None,
        strategy: RecoveryStrategy | None = None,
        trigger: str = "api",
        error_code: str | None = None,
    ) -> bool:
        """Start a session in the background (without waiting); False if it could not be queued."""
        if self._send is None:
            log.warning("recovery for %s not started: the recovery manager is not running", component)
            return False
        try:
            self._send.send_nowait(_Job(component, error, strategy, trigger, error_code))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.warning("recovery for %s not started: too many pending requests", component)
            return False
        return True

    def on_health_change(self, component: str, old: Any, new: Any, result: Any = None) -> None:
        """HealthMonitor listener: unhealthy starts a session; healthy again undoes mitigations."""
        new_s, old_s = str(getattr(new, "value", new)), str(getattr(old, "value", old))
        if not self.settings.enabled:
            return
        if new_s == "unhealthy" and self.canonical(component) not in self._active:
            if not self.settings.auto_recovery_enabled:
                return
            error = getattr(result, "error", None)
            details = getattr(result, "details", None)
            code = details.get("error_code") if isinstance(details, dict) else None
            self.request(
                component,
                error=error if isinstance(error, BaseResilienceError) else None,
                trigger="health",
                error_code=code if isinstance(code, str) else None,
            )
        elif new_s == "healthy" and old_s in ("unhealthy", "degraded") and self._send is not None:
            try:
                self._send.send_nowait(self.canonical(component))
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                log.warning("could not schedule the healthy-again hook for %s", component)

    # ---- sessions -----------------------------------------------------------------------

    def active(self) -> list[RecoverySession]:
        return list(self._active.values())

    def history(self, limit: int | None = None) -> list[RecoverySession]:
        """Finished sessions, newest first."""
        items = list(reversed(self._history))
        return items if limit is None else items[: max(0, limit)]

    def get(self, session_id: str) -> RecoverySession | None:
        return next((s for s in [*self._active.values(), *self._history] if s.id == session_id), None)

    def statistics(self) -> RecoveryStatistics:
        c = self._counts
        finished = c["succeeded"] + c["unverified"] + c["failed"] + c["escalated"]
        return RecoveryStatistics(
            sessions=c["sessions"],
            in_progress=len(self._active),
            succeeded=c["succeeded"],
            unverified=c["unverified"],
            mitigated=sum(s.status == "mitigated" for s in self._active.values()),
            failed=c["failed"],
            escalated=c["escalated"],
            success_rate=round(c["succeeded"] / finished, 4) if finished else None,
            mean_time_to_recover_s=round(self._recover_time / c["succeeded"], 3) if c["succeeded"] else None,
            active_components=sorted(self._active),
        )

    async def recover(
        self,
        component: str,
        *,
        error: BaseResilienceError | None = None,
        strategy: RecoveryStrategy | None = None,
        trigger: str = "api",
        error_code: str | None = None,
    ) -> RecoverySession:
        """Run a session for ``component`` until it ends or is mitigated, and return it.

        Joins a session being driven; drives an open mitigated session again."""
        component = self.canonical(component)
        code = error.code if error is not None else error_code
        first = strategy or (error.recovery.strategy if error is not None else None) or self._default(component, code)
        session = self._active.get(component)
        if session is not None:
            done = self._done.get(session.id)
            if done is not None:  # being driven: join it
                await done.wait()
                return session
            session.status, session.strategy = "in_progress", first  # mitigated: try to fix it for real
            log.info("recovery %s for %s (mitigated) driven again with %s", session.id, component, first.value)
            await self._run(session, error, mitigated=session.summary)
            return session
        if code is None and trigger == "health":
            code = f"{component.upper().replace('-', '_')}_UNHEALTHY"  # e.g. BRIDGE_UNHEALTHY (a backup condition)
        session = RecoverySession(
            id=f"rec-{uuid.uuid4().hex[:12]}",
            component=component,
            trigger=trigger,
            error_code=code,
            category=error.category.value if error is not None else None,
            severity=error.severity.value if error is not None else None,
            status="in_progress",
            strategy=first,
            started_at=_iso(self.clock.time()),
        )
        self._active[component] = session
        self._opened[session.id] = self.clock.monotonic()
        self._counts["sessions"] += 1
        log.info("recovery %s for %s started with %s", session.id, component, first.value)
        await self._run(session, error)
        return session

    async def _run(
        self, session: RecoverySession, error: BaseResilienceError | None, *, mitigated: str | None = None
    ) -> None:
        """Drive ``session``; ``mitigated``: its mitigation, still in place if this drive fails."""
        self._done[session.id] = anyio.Event()
        try:
            await self._drive(session, error)
            if mitigated is not None and session.status == "failed":
                session.status, session.summary = "mitigated", f"{mitigated}; a fix was tried: {session.summary}"
        except BaseException:
            session.status, session.summary = "failed", "interrupted (cancelled or crashed) before it finished"
            raise
        finally:
            event = self._done.pop(session.id)
            if session.status == "mitigated":
                log.info(
                    "recovery %s for %s mitigated (open until healthy): %s",
                    session.id,
                    session.component,
                    session.summary,
                )
            else:
                self._finish(session, self.clock.monotonic() - self._opened[session.id])
            event.set()

    async def _drive(self, session: RecoverySession, error: BaseResilienceError | None) -> None:
        s = self.settings
        strategy, failures_here = session.strategy, 0
        for number in range(1, max(1, s.max_recovery_attempts) + 1):
            if number > 1 and s.recovery_delay > 0:
                await self.clock.sleep(s.recovery_delay)
            outcome = await self._attempt(session, error, strategy, number, s.attempt_timeout)
            if outcome.needs_person or outcome.succeeded:  # acted: verified, unverified or mitigated
                self._conclude(session, strategy, outcome)
                return
            failures_here += 1
            if failures_here >= s.escalation_threshold and number < s.max_recovery_attempts:
                nxt = next_strategy(strategy)
                if nxt is not strategy:
                    strategy, failures_here = nxt, 0
                    session.escalation_level += 1
                    log.info("recovery %s escalates to %s (level %d)", session.id, nxt.value, session.escalation_level)
        last = session.attempts[-1] if session.attempts else None
        if last is not None and last.strategy in _HANDED_OFF:
            session.status, session.summary = "escalated", f"handed to a person after {len(session.attempts)} attempts"
            return
        if await self._backups(session, error):
            return
        session.status = "failed"
        session.summary = f"{len(session.attempts)} attempt(s) failed" + (f": {last.detail}" if last else "")

    async def _backups(self, session: RecoverySession, error: BaseResilienceError | None) -> bool:
        codes = {"ALL_RECOVERY_FAILED", *([session.error_code] if session.error_code else [])}
        if error is not None:
            codes.add(error.code)
        for plan in self.settings.backup_strategies:
            if not plan.conditions & codes:
                continue
            for _ in range(plan.max_attempts):
                if self.settings.recovery_delay > 0:
                    await self.clock.sleep(self.settings.recovery_delay)
                number = len(session.attempts) + 1
                outcome = await self._attempt(session, error, plan.strategy, number, plan.timeout, backup=plan.name)
                if outcome.succeeded or outcome.needs_person:
                    self._conclude(session, plan.strategy, outcome, backup=plan.name)
                    return True
        return False

    def _conclude(
        self,
        session: RecoverySession,
        strategy: RecoveryStrategy,
        outcome: StrategyOutcome,
        *,
        backup: str | None = None,
    ) -> None:
        session.needs_person = outcome.needs_person
        session.steps = list(outcome.steps)
        handed_off = outcome.needs_person or strategy in _HANDED_OFF
        kind = outcome.kind
        status: SessionStatus = "failed"
        if handed_off:
            status = "escalated"
        elif kind in ("succeeded", "unverified", "mitigated"):
            status = kind
        session.status = status
        via = f" (backup {backup})" if backup else ""
        session.summary = f"{strategy.value}{via}: {outcome.detail}"

    async def _attempt(
        self,
        session: RecoverySession,
        error: BaseResilienceError | None,
        strategy: RecoveryStrategy,
        number: int,
        limit_s: float,
        *,
        backup: str | None = None,
    ) -> StrategyOutcome:
        request = RecoveryRequest(
            session.component,
            error,
            number,
            session.escalation_level,
            session.id,
            strategy,
            backup,
            session.error_code,
            session.trigger,
        )
        fn = self.strategies.get(strategy)
        started, wall = self.clock.monotonic(), self.clock.time()
        if fn is None:
            outcome = StrategyOutcome(False, f"no action is registered for {strategy.value}")
        else:
            outcome = StrategyOutcome(False, f"{strategy.value} took longer than {limit_s:.1f}s")
            with self.clock.timeout_scope(limit_s if limit_s > 0 else math.inf):
                try:
                    outcome = await fn(request)
                except Exception as exc:  # an action that raises failed; the session goes on
                    log.warning("recovery action %s for %s raised", strategy.value, session.component, exc_info=True)
                    outcome = StrategyOutcome(False, f"{strategy.value} raised {type(exc).__name__}: {exc}")
        kind: AttemptOutcome = outcome.kind
        session.attempts.append(
            RecoveryAttempt(
                strategy=strategy,
                outcome=kind,
                detail=outcome.detail,
                started_at=_iso(wall),
                duration_s=round(self.clock.monotonic() - started, 6),
                escalation_level=session.escalation_level,
                backup=backup,
            )
        )
        log.info(
            "recovery %s attempt %d (%s) for %s: %s — %s",
            session.id,
            number,
            strategy.value,
            session.component,
            kind,
            outcome.detail,
        )
        return outcome

    def _finish(self, session: RecoverySession, duration: float) -> None:
        session.ended_at = _iso(self.clock.time())
        session.duration_s = round(duration, 6)
        if session.status == "in_progress":
            session.status = "failed"
        self._counts[session.status] += 1
        if session.status == "succeeded":
            self._recover_time += duration
        self._active.pop(session.component, None)
        self._opened.pop(session.id, None)
        self._history.append(session)
        log.info("recovery %s for %s ended %s: %s", session.id, session.component, session.status, session.summary)
