"""What each recovery strategy does to the running service, and how it checks the effect.

``build_strategies(service)`` gives the ``RecoveryManager`` one function per strategy; each
acts on real objects and reports what it saw afterwards (never a guess):

=====================  ==========================================================================
retry                  delivery component: make every pending outbox row due now and wake the
                       dispatcher; succeeds (verified) when the component's check passes (Telegram
                       ``getMe``, the bridge's /health, the dispatcher loop running); with no
                       check the outcome is ``unverified`` — detail says how many rows were made due.
                       Component ``outbox``: requeue the
                       dead letters (``outbox.requeue_dead()``) and make everything due: this is how
                       ``trigger_recovery(component="outbox", strategy="retry")`` re-drives dead rows
                       after the cause (token, blocked bot) was fixed; verified only when dead rows
                       were requeued (nothing dead: ``unverified``). A 429 pause ends early only
                       when someone asked (trigger ``tool``/``api``), never on the monitor's own.
circuit_breaker        open breaker: ``probe_now()`` and run the component's check through the
                       breaker as the probe; on success ``close()``. Half-open/isolated/closed: the
                       check runs directly and a pass closes it (and the component's other open /
                       half-open breakers; isolated ones too when the chosen one was isolated).
                       Verified only if every breaker of the component ended closed.
restart                After ``recovery.restartDelay``: Telegram: ``transport.rebuild()`` (a new
                       httpx client; ``generation`` must rise by one), then ``getMe``; an open
                       breaker is set to probe at once. Dispatcher: the loop is stopped, and started
                       again after the delay. Bridge: ``BridgeProcessManager.restart()`` (stop,
                       restartDelay, start), then its ``/health`` must answer healthy. This is what
                       the seed's backups ``bridge-restart`` and ``process-restart`` run.
fallback               ``dispatcher.paused = True``: events are still accepted and committed, but
                       neither the send tools nor the dispatcher attempt delivery. ``mitigated``,
                       never a success. Bridge delivery has no fallback: the attempt fails.
graceful_degradation   ``dispatcher.min_priority = "high"``: only high/critical events go out;
                       the rest wait in the outbox. ``mitigated``, never a success.
escalate               if Telegram answers ``getMe``: a critical ``alert_notification`` to the
                       allowed users through the normal send path (bypassing the two levers
                       above); otherwise the attempt fails with "could not alert: …".
ignore                 logs; ``unverified`` (nothing was checked).
manual                 needs a person: concrete steps for the error code.
=====================  ==========================================================================

The way back from fallback and degradation: a successful ``retry``, ``circuit_breaker`` or
``restart`` of the delivery component, or the health monitor reporting it healthy again
(``restore``, the manager's ``on_healthy`` hook), sets ``paused = False`` and
``min_priority = "low"`` and wakes the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.ops.health import worst_breaker
from cctg_mcp.resilience.breaker import BreakerState, CircuitBreaker
from cctg_mcp.resilience.errors import (
    BaseResilienceError,
    BridgeError,
    CircuitBreakerError,
    RecoveryStrategy,
    SystemFailure,
)
from cctg_mcp.resilience.recovery import (
    RecoveryManager,
    RecoveryRequest,
    RecoverySettings,
    StrategyFn,
    StrategyOutcome,
)

log = logging.getLogger(__name__)

#: Recovery components; health check names map onto them (``telegram_breaker`` → ``telegram``).
FAMILIES = ("telegram", "bridge", "outbox", "dispatcher", "filesystem", "network", "disk")
#: Error codes no automatic action can fix: the default strategy for them is ``manual``.
NEEDS_PERSON = frozenset(
    {
        "TELEGRAM_INVALID_TOKEN",
        "TELEGRAM_FORBIDDEN",
        "TELEGRAM_BAD_REQUEST",
        "TELEGRAM_CONFLICT",
        "MISSING_TOKEN",
        "NOT_CONFIGURED",
        "INVALID_CONFIG",
        "CIRCUIT_ISOLATED",
        "ENOSPC",
        "EACCES",
        "EROFS",
    }
)
_REQUEUE = "then requeue the dead deliveries: trigger_recovery(component='outbox', strategy='retry')"
_STEPS: dict[str, list[str]] = {
    "TELEGRAM_INVALID_TOKEN": [
        "Get a valid token from @BotFather and set TELEGRAM_BOT_TOKEN in the server's environment.",
        "Restart the MCP server.",
        f"Once it answers, {_REQUEUE}.",
    ],
    "MISSING_TOKEN": ["Set TELEGRAM_BOT_TOKEN (from @BotFather) and restart the MCP server."],
    "NOT_CONFIGURED": ["Set TELEGRAM_BOT_TOKEN and TELEGRAM_ALLOWED_USERS, then restart the MCP server."],
    "TELEGRAM_FORBIDDEN": [
        "Each recipient must open the bot in Telegram and press Start (or unblock it).",
        f"Afterwards {_REQUEUE}.",
    ],
    "TELEGRAM_BAD_REQUEST": [
        "Check TELEGRAM_ALLOWED_USERS: each id must be a user who started the bot (400 'chat not found' otherwise).",
        f"Fix it, restart the server, {_REQUEUE}.",
    ],
    "TELEGRAM_CONFLICT": [
        "Another process polls this bot or a webhook is set: stop the other poller or call "
        "deleteWebhook, then restart the server."
    ],
    "CIRCUIT_ISOLATED": [
        "A breaker was isolated by hand: run trigger_recovery(strategy='circuit_breaker') once the dependency is fixed."
    ],
    "ENOSPC": ["Free disk space where CCTG_DATA_DIR lives (the outbox needs room to commit events)."],
    "EACCES": ["Make CCTG_DATA_DIR writable by the server's user, then restart it."],
}


def family(component: str) -> str:
    """The recovery component a name belongs to (``telegram_breaker`` → ``telegram``)."""
    name = component.strip().lower()
    return next((f for f in FAMILIES if name.startswith(f)), name)


class RecoveryActions:
    """The strategy functions over one ``NotificationService``."""

    def __init__(self, service: NotificationService) -> None:
        self.service = service

    @property
    def delivery(self) -> str:
        return "telegram" if self.service.settings.delivery == "telegram" else "bridge"

    def strategies(self) -> dict[RecoveryStrategy, StrategyFn]:
        S = RecoveryStrategy
        return {
            S.RETRY: self.retry,
            S.CIRCUIT_BREAKER: self.circuit_breaker,
            S.RESTART: self.restart,
            S.FALLBACK: self.fallback,
            S.GRACEFUL_DEGRADATION: self.graceful_degradation,
            S.ESCALATE: self.escalate,
            S.IGNORE: self.ignore,
            S.MANUAL: self.manual,
        }

    def components(self) -> list[str]:
        """Components ``trigger_recovery`` accepts."""
        names = {"telegram", "bridge", "outbox", "dispatcher", "disk"}
        if self.service.pipelines is not None:
            names |= set(self.service.pipelines.in_use)
        return sorted(names)

    def default_strategy(self, component: str, error_code: str | None = None) -> RecoveryStrategy:
        fam = family(component)
        if error_code in NEEDS_PERSON or fam == "disk":
            return RecoveryStrategy.MANUAL
        dispatcher = self.service.dispatcher
        if fam == "dispatcher" and dispatcher is not None and not dispatcher.running:
            return RecoveryStrategy.RESTART
        breaker = self._breaker(fam)
        if breaker is not None and breaker.state in (BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.ISOLATED):
            return RecoveryStrategy.CIRCUIT_BREAKER
        return RecoveryStrategy.RETRY

    # ---- helpers ------------------------------------------------------------------------

    def _breakers(self, fam: str) -> list[CircuitBreaker]:
        """The component's breakers: its own first, then its per-operation ones."""
        pipelines = self.service.pipelines
        pipe = pipelines.pipelines.get(fam) if pipelines is not None else None
        return list(pipe.breakers.values()) if pipe is not None else []

    def _breaker(self, fam: str) -> CircuitBreaker | None:
        """The component's breaker in the worst state (its own, or a per-operation one)."""
        found = self._breakers(fam)
        return worst_breaker(found) if found else None

    def _close_siblings(self, fam: str, *, isolated_too: bool) -> str:
        """The component passed its check: close its other open or half-open breakers too (and
        isolated ones when the breaker chosen was itself isolated: the person released it)."""
        closing = {BreakerState.OPEN, BreakerState.HALF_OPEN}
        if isolated_too:
            closing.add(BreakerState.ISOLATED)
        closed = []
        for breaker in self._breakers(fam):
            if breaker.state in closing:
                breaker.close(by="recovery")
                closed.append(breaker.name)
        return f"; also closed {', '.join(closed)}" if closed else ""

    def _not_closed(self, fam: str) -> list[CircuitBreaker]:
        """The component's breakers that are not closed (disabled ones admit every call)."""
        return [b for b in self._breakers(fam) if b.state not in (BreakerState.CLOSED, BreakerState.DISABLED)]

    def _probe(self, fam: str) -> Callable[[], Awaitable[str]] | None:
        """The component's own check (raises our errors on failure), or None if it has none."""
        transport = self.service.transport
        if fam == "telegram" and transport is not None:

            async def get_me() -> str:
                me = await transport.get_me()
                return f"getMe ok (@{me.get('username')})"

            return get_me
        if fam == "bridge" and self.service.settings.delivery == "bridge":
            return self._bridge_health
        dispatcher = self.service.dispatcher
        if fam == "dispatcher" and dispatcher is not None:

            async def loop_running() -> str:
                if not dispatcher.running:
                    raise SystemFailure("the dispatcher loop is not running")
                return "the dispatcher loop is running"

            return loop_running
        return None

    async def _bridge_health(self) -> str:
        """The bridge's own check: its /health must answer healthy (raises BridgeError otherwise)."""
        health = await self.service.bridge.health()
        if health.status != "healthy":
            raise BridgeError(f"the bridge's /health is {health.status}: {health.detail}", code="BRIDGE_UNHEALTHY")
        return f"bridge /health {health.status}"

    @property
    def restart_delay(self) -> float:
        config = self.service.resilience
        return config.recovery.seconds("restart_delay") if config is not None else 0.0

    async def _check(self, fam: str) -> tuple[bool | None, str]:
        """(passed, what was seen); passed is None when the component has no check."""
        probe = self._probe(fam)
        if probe is None:
            if fam == "telegram":
                if self.delivery == "bridge":
                    return False, "bridge delivery: no direct Telegram transport"
                return False, "no Telegram transport (not configured)"
            return None, f"no check available for {fam}"
        try:
            return True, await probe()
        except BaseResilienceError as exc:
            return False, f"{'getMe' if fam == 'telegram' else fam + ' check'} failed: {exc.code}: {exc}"

    async def _resume(self, fam: str) -> str:
        """The delivery component proved healthy: undo fallback/degradation and make the rows
        that waited (e.g. for an open breaker's retry_after) due now."""
        dispatcher, outbox = self.service.dispatcher, self.service.outbox
        if dispatcher is None or outbox is None or fam != self.delivery:
            return ""
        undone = []
        if dispatcher.paused:
            dispatcher.paused = False
            undone.append("direct delivery resumed")
        if dispatcher.min_priority != "low":
            undone.append(f"degraded mode ended (was {dispatcher.min_priority}+ only)")
            dispatcher.min_priority = "low"
        made_due = await outbox.retry_now()
        if made_due:
            undone.append(f"{made_due} waiting delivery(ies) made due")
        dispatcher.wake()
        return "; " + ", ".join(undone) if undone else ""

    async def restore(self, component: str) -> None:
        """The manager's ``on_healthy`` hook: the component is healthy again."""
        note = await self._resume(family(component))
        if note:
            log.info("%s is healthy again%s", component, note)

    # ---- strategies ---------------------------------------------------------------------

    async def retry(self, req: RecoveryRequest) -> StrategyOutcome:
        fam, outbox, dispatcher = family(req.component), self.service.outbox, self.service.dispatcher
        if outbox is None or dispatcher is None:
            return StrategyOutcome(False, "no outbox or dispatcher (not configured)")
        if fam == "outbox":
            before = await outbox.counts()
            requeued = await outbox.requeue_dead()
            made_due = await outbox.retry_now()
            dispatcher.wake()
            after = await outbox.counts()
            detail = (
                f"requeued {requeued} dead delivery(ies) and made {made_due} more due now "
                f"(dead {before.dead} → {after.dead}, pending {after.pending})"
            )
            # the check: the dead rows went back to the queue (none left over from before)
            if after.dead < before.dead:
                return StrategyOutcome(True, detail, verified=True)
            if before.dead == 0:  # nothing was dead: acted (made rows due), but nothing shows it helped
                return StrategyOutcome(True, f"{detail}; nothing was dead, so the effect is unverified")
            return StrategyOutcome(False, detail)
        counts = await outbox.counts()
        made_due = await outbox.retry_now()
        # a server-dictated pause (429) ends, everywhere, only when someone asked (trigger_recovery,
        # a library call), never on the health monitor's own sessions or their backups
        if req.asked_by_person:
            cleared, left = await dispatcher.pacer.end_pause(), 0.0
        else:
            cleared, left = 0.0, dispatcher.pacer.paused_for()
        dispatcher.wake()
        rows = (
            f"made {made_due} pending delivery(ies) due now"
            if made_due
            else f"nothing was waiting for a later retry ({counts.pending} pending)"
        )
        if cleared > 0:
            rows += f", ended a 429 pause that had {cleared:.0f}s left"
        if left > 0:
            rows += f"; Telegram's 429 pause still has {left:.0f}s left (only trigger_recovery ends it early)"
        passed, seen = await self._check(fam)
        if passed is False:
            return StrategyOutcome(False, f"{rows}, but {seen}")
        if passed is None:  # acted, but nothing can tell whether it helped: not a recovery
            return StrategyOutcome(True, f"{rows}; {seen}, so the effect is unverified")
        return StrategyOutcome(True, f"{rows}; {seen}{await self._resume(fam)}", verified=True)

    async def circuit_breaker(self, req: RecoveryRequest) -> StrategyOutcome:
        fam = family(req.component)
        breaker = self._breaker(fam)
        if breaker is None:
            return StrategyOutcome(False, f"{req.component} has no circuit breaker")
        before = breaker.state
        if before is BreakerState.DISABLED:
            return StrategyOutcome(True, "breaker is disabled (admits every call); nothing to reset, nothing checked")
        probe = self._probe(fam)
        if probe is None:
            breaker.probe_now()
            ok = breaker.state is not BreakerState.ISOLATED
            moved = f"{before.value} → {breaker.state.value}"
            if before is BreakerState.OPEN:
                return StrategyOutcome(ok, f"{moved}: the next call is a probe (no check for {fam} to close it now)")
            return StrategyOutcome(ok, f"{moved}: no check for {fam}, nothing to verify")
        if before is BreakerState.OPEN:
            breaker.probe_now()
        passed: bool
        try:
            try:
                if breaker.state is not BreakerState.OPEN:
                    raise CircuitBreakerError("not open: check directly")
                seen = await breaker.call(probe)  # admitted as the probe: its outcome counts
            except CircuitBreakerError:  # not open, or another probe holds the half-open permit
                seen = await probe()
            passed = True
        except BaseResilienceError as exc:
            passed, seen = False, f"check failed: {exc.code}: {exc}"
        if passed and breaker.state is not BreakerState.CLOSED:
            breaker.close(by="recovery")
        if passed:
            seen += self._close_siblings(fam, isolated_too=before is BreakerState.ISOLATED)
        after = breaker.state
        moved = f"breaker {breaker.name} {before.value} → {after.value}"
        if not passed:
            return StrategyOutcome(False, f"{moved}; {seen}")
        left = self._not_closed(fam)  # verified only when every breaker of the component is closed
        if left:
            still = ", ".join(f"{b.name} {b.state.value}" for b in left)
            return StrategyOutcome(False, f"{moved}; {seen}; but still not closed: {still}")
        return StrategyOutcome(True, f"{moved}; {seen}{await self._resume(fam)}", verified=True)

    async def restart(self, req: RecoveryRequest) -> StrategyOutcome:
        fam, transport = family(req.component), self.service.transport
        if fam == "bridge":  # restart the CCTelegram bridge process (stop, restart_delay, start, health)
            result = await self.service.bridge.restart()
            done = f"bridge {result.action}: {result.message}"
            if not result.success:  # incl. started_unverified: running, /health never said healthy
                return StrategyOutcome(False, done)
            passed, seen = await self._check(fam)  # "started" is not enough: its health must say so
            if passed is False:
                return StrategyOutcome(False, f"{done}, but {seen}")
            if passed is None:
                return StrategyOutcome(True, f"{done}; {seen}, so the effect is unverified")
            return StrategyOutcome(True, f"{done}; {seen}{await self._resume(fam)}", verified=True)
        delay = self.restart_delay
        waited = f" after restartDelay {delay:g}s" if delay > 0 else ""
        if fam == "dispatcher":  # the delivery loop itself: stop it and start it again
            supervisor = self.service.supervisor
            if supervisor is None:
                return StrategyOutcome(False, "no supervised dispatcher (not configured)")
            up = await supervisor.restart(delay_s=delay)
            return StrategyOutcome(
                up,
                f"dispatcher loop restarted{waited} and running" if up else "dispatcher loop did not come back",
                verified=up,
            )
        if fam != "telegram":
            return StrategyOutcome(False, f"restarting {req.component} is not supported")
        if transport is None:
            return StrategyOutcome(False, "no Telegram transport to restart (not configured)")
        generation = transport.generation
        if delay > 0:
            await self.service.clock.sleep(delay)
        await transport.rebuild()
        if transport.generation != generation + 1:
            return StrategyOutcome(False, f"rebuild did not replace the client (generation {transport.generation})")
        rebuilt = f"HTTP client rebuilt{waited} (generation {generation} → {transport.generation})"
        passed, seen = await self._check(fam)
        if not passed:
            return StrategyOutcome(False, f"{rebuilt}, but {seen}")
        opened = [b for b in self._breakers(fam) if b.state is BreakerState.OPEN]
        for breaker in opened:
            breaker.probe_now()
        if opened:
            rebuilt += f"; {', '.join(b.name for b in opened)} will probe on the next send"
        return StrategyOutcome(True, f"{rebuilt}; {seen}{await self._resume(fam)}", verified=True)

    async def _peers_note(self) -> str:
        """The levers (fallback, degradation) hold this session's dispatcher only: say so when
        other live sessions share the bot, since they keep claiming the shared queue."""
        coordinator = self.service.coordinator
        if coordinator is None:
            return ""
        try:
            others = len(await coordinator.sessions()) - 1
        except BaseResilienceError:
            return "; this session only (the other sessions sharing the bot could not be listed)"
        if others <= 0:
            return ""
        return f"; this session only: {others} other live session(s) sharing the bot keep delivering"

    async def fallback(self, req: RecoveryRequest) -> StrategyOutcome:
        dispatcher, outbox = self.service.dispatcher, self.service.outbox
        if dispatcher is None or outbox is None:
            return StrategyOutcome(False, "no dispatcher (not configured)")
        if self.delivery == "bridge":
            # Event files *are* the fallback path: they are written whether or not the bridge
            # runs and it delivers them when it is back. Pausing would only stop writing them,
            # so there is nothing to do, and doing nothing is not a mitigation.
            return StrategyOutcome(
                False,
                "no fallback in bridge delivery: event files are already written whether or not the bridge runs",
            )
        dispatcher.paused = True
        dispatcher.wake()
        counts = await outbox.counts()
        return StrategyOutcome(
            dispatcher.paused,
            mitigated=True,
            detail=(
                f"fallback mode: delivery attempts paused; events are still accepted and queued durably "
                f"({counts.pending + counts.in_flight} waiting). Delivery resumes after a successful retry, "
                f"circuit_breaker or restart recovery, or when {self.delivery} is healthy again"
                f"{await self._peers_note()}."
            ),
        )

    async def graceful_degradation(self, req: RecoveryRequest) -> StrategyOutcome:
        dispatcher = self.service.dispatcher
        if dispatcher is None:
            return StrategyOutcome(False, "no dispatcher (not configured)")
        dispatcher.min_priority = "high"
        dispatcher.wake()
        return StrategyOutcome(
            dispatcher.min_priority == "high",
            mitigated=True,
            detail=(
                "degraded mode: only high and critical events are sent; lower priorities wait in the outbox "
                f"until a successful recovery or the component is healthy again{await self._peers_note()}"
            ),
        )

    async def escalate(self, req: RecoveryRequest) -> StrategyOutcome:
        service = self.service
        passed, seen = await self._check("telegram")
        if not passed:
            return StrategyOutcome(False, f"could not alert: {seen}")
        code = req.error.code if req.error is not None else req.error_code
        try:
            event = service.build_event(
                type="alert_notification",
                priority="critical",
                source="cctg-mcp-recovery",
                task_id=req.session_id,
                title=f"cctg-mcp: recovery of {req.component} needs attention",
                description=(
                    f"Automatic recovery of {req.component} did not succeed (attempt {req.attempt}, "
                    f"escalation level {req.escalation_level}, error {code or 'unknown'}). "
                    "Check get_resilience_status / get_recovery_history."
                ),
                data={"session_id": req.session_id, "component": req.component, "error_code": code},
            )
            result = await service.submit(event, operation="sendPerformanceAlert", bypass_holds=True)
        except BaseResilienceError as exc:
            return StrategyOutcome(False, f"could not alert: {exc}")
        if result.status == "duplicate":  # the first alert's rows say whether it went out
            delivered = [r for r in result.recipients if r.status == "delivered"]
            if result.recipients and len(delivered) == len(result.recipients):
                return StrategyOutcome(
                    True, f"the alert for this session was already sent to {len(delivered)} recipient(s)"
                )
            states = ", ".join(sorted({r.status for r in result.recipients})) or "no recipient rows"
            return StrategyOutcome(
                False, f"the alert for this session was raised before but not delivered to every recipient ({states})"
            )
        if result.status == "delivered":
            return StrategyOutcome(
                True, f"alert sent to {len(result.recipients)} recipient(s) on Telegram", verified=True
            )
        return StrategyOutcome(
            False, f"could not alert now (queued: {result.reason}); it goes out when Telegram recovers"
        )

    async def ignore(self, req: RecoveryRequest) -> StrategyOutcome:
        log.info("recovery %s: ignoring %s on %s", req.session_id, req.error_code or "the report", req.component)
        return StrategyOutcome(True, "ignored (logged only; nothing was checked)")

    async def manual(self, req: RecoveryRequest) -> StrategyOutcome:
        code = req.error.code if req.error is not None else req.error_code
        steps = list(_STEPS.get(code or "", []))
        fam = family(req.component)
        if self.service.outbox is not None:
            dead = (await self.service.outbox.counts()).dead
            if dead and not any("requeue" in s for s in steps):
                steps.append(f"{dead} delivery(ies) are dead: fix their cause (see get_resilience_status), {_REQUEUE}.")
        if fam == "disk" and not steps:
            steps = list(_STEPS["ENOSPC"])
        if not steps:
            steps = [
                f"Look at get_resilience_status and the server log (stderr) for {req.component}.",
                f"Fix the cause, then run trigger_recovery(component='{fam}').",
            ]
        return StrategyOutcome(
            False, f"needs a person ({code or req.component}): {steps[0]}", needs_person=True, steps=steps
        )


def build_strategies(service: NotificationService) -> dict[RecoveryStrategy, StrategyFn]:
    return RecoveryActions(service).strategies()


def build_manager(service: NotificationService, settings: RecoverySettings | None = None) -> RecoveryManager:
    """A manager wired to ``service`` (settings from ``service.resilience.recovery``)."""
    actions = RecoveryActions(service)
    if settings is None:
        config = service.resilience.recovery if service.resilience is not None else None
        settings = RecoverySettings.from_config(config) if config is not None else RecoverySettings()
    return RecoveryManager(
        settings,
        clock=service.clock,
        strategies=actions.strategies(),
        default_strategy=actions.default_strategy,
        on_healthy=actions.restore,
        canonical=family,
    )
