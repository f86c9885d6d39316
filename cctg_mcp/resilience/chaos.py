"""Chaos experiments: inject a fault for a bounded time, watch safety bounds, roll back, measure recovery.

Generic machinery only (no HTTP, no MCP): what a fault *does* lives in the experiments the
composition root registers (``cctg_mcp.ops.chaos``). The controller guarantees:

- **refused in production**: ``start`` raises ``ChaosRefusedError`` unless the environment is
  ``development`` or ``staging``;
- **one experiment at a time**, including the recovery measurement after it;
- **bounded**: every run has a duration (0.1 s .. 10 min) after which it rolls back by itself.
  The timer runs in the task that ``run()`` hosts (the server's task group) on the injected
  clock, so it fires even if the client that started it has gone away; on shutdown the
  fault is rolled back too;
- **safety checks** every ``check_interval_s``: the run is aborted (rolled back early) when
  the error rate since the start, the dead rows added or the backlog pass their bounds;
- **recorded**: start, end, parameters (with the RNG seed, so a run reproduces),
  observations, whether it was aborted, and whether the system recovered (``probe.recovered``:
  breaker closed and backlog drained) with the time it took, measured after the rollback
  and bounded by ``recovery_timeout_s``.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import anyio.abc
from pydantic import BaseModel, Field

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock, iso_z
from cctg_mcp.resilience.errors import BaseResilienceError, ConfigurationError, ValidationError

log = logging.getLogger(__name__)

MIN_DURATION_S = 0.1
MAX_DURATION_S = 600.0
ALLOWED_ENVIRONMENTS = ("development", "staging")
EndedBy = Literal["duration", "stop", "safety", "shutdown", "error"]


class ChaosRefusedError(ConfigurationError):
    """Raised when a chaos experiment is asked for where chaos is disabled (production)."""

    code = "CHAOS_DISABLED"


class ChaosBusyError(BaseResilienceError):
    """Raised when a chaos experiment is asked for while another one is running."""

    code = "CHAOS_BUSY"
    counts_as_failure = False


@dataclass
class RunContext:
    """What an experiment gets: its parameters, a seeded RNG, and a place for observations."""

    run_id: str
    intensity: float
    target: str | None
    seed: int
    duration_s: float
    clock: Clock
    rng: random.Random
    observations: dict[str, Any] = field(default_factory=dict)


class Experiment(Protocol):
    """A chaos experiment: starts a fault, stops it, and says when it cannot run."""

    name: str
    description: str

    def unavailable(self) -> str | None:
        """Why it cannot run here (None when it can)."""
        ...

    async def inject(self, ctx: RunContext) -> None:
        """Apply the fault (quickly; long-running work goes to a thread or the fault's own state)."""
        ...

    async def rollback(self, ctx: RunContext) -> None:
        """Undo the fault; idempotent, and must finish quickly."""
        ...


@dataclass(frozen=True)
class SafetyReading:
    """Cumulative counters of the system under test (deltas are taken from the run's start)."""

    calls: int
    errors: int
    dead: int
    backlog: int


class SystemProbe(Protocol):
    """What the chaos controller reads to judge safety and recovery."""

    async def reading(self) -> SafetyReading: ...

    async def recovered(self, since_epoch: float) -> tuple[bool, str]:
        """Whether the system is back to normal (may act, e.g. send a health probe); and why not."""
        ...


@dataclass
class SafetyLimits:
    """The limits that stop a chaos experiment early."""

    max_error_rate: float | None = None  # errors/calls since the start; None = not checked
    min_calls: int = 20  # calls needed before the error rate is judged
    max_new_dead: int | None = 0  # dead rows added since the start (faults must never kill rows)
    max_backlog: int | None = 10_000  # pending + in-flight rows
    check_interval_s: float = 0.5
    rollback_timeout_s: float = 10.0
    recovery_timeout_s: float = 120.0
    recovery_poll_s: float = 0.25


class ExperimentInfo(BaseModel):
    """One chaos experiment and whether it can run here."""

    name: str
    description: str
    available: bool
    reason: str | None = None


class ChaosRun(BaseModel):
    """One chaos experiment run: parameters, what it did, and how the system recovered."""

    id: str
    experiment: str
    state: Literal["active", "recovering", "done"]
    parameters: dict[str, Any] = Field(description="duration_ms, intensity, target and the RNG seed.")
    started_at: str
    ended_at: str | None = None
    ends_in_s: float | None = Field(default=None, description="Seconds until it rolls back by itself (active).")
    active_s: float | None = Field(default=None, description="How long the fault was in place.")
    ended_by: EndedBy | None = None
    aborted: bool = False
    abort_reason: str | None = None
    observations: dict[str, Any] = Field(default_factory=dict)
    recovered: bool | None = Field(default=None, description="Breaker closed and backlog drained after rollback.")
    time_to_recover_s: float | None = None
    recovery_detail: str | None = None


def _iso(epoch: float) -> str:
    return iso_z(epoch, "milliseconds")


@dataclass
class _Active:
    run: ChaosRun
    experiment: Experiment
    ctx: RunContext
    baseline: SafetyReading
    t0: float
    deadline: float
    stop_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    rolled_back: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)


class ChaosController:
    """Runs one chaos experiment at a time within safety limits, and records each run."""

    def __init__(
        self,
        environment: str,
        experiments: Sequence[Experiment],
        probe: SystemProbe,
        *,
        clock: Clock = SYSTEM_CLOCK,
        limits: SafetyLimits | None = None,
        history_size: int = 50,
        seed: int | None = None,
    ) -> None:
        self.environment = environment
        self.experiments = {e.name: e for e in experiments}
        self.probe = probe
        self.clock = clock
        self.limits = limits or SafetyLimits()
        self._history: deque[ChaosRun] = deque(maxlen=max(1, history_size))
        self._seeds = random.Random(seed)
        self._count = 0
        self._active: _Active | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    # ---- policy -------------------------------------------------------------------------

    def check_allowed(self) -> None:
        if self.environment not in ALLOWED_ENVIRONMENTS:
            raise ChaosRefusedError(
                f"Chaos experiments are refused in the {self.environment!r} environment. They run only when "
                "CCTG_ENVIRONMENT=development or CCTG_ENVIRONMENT=staging is set in the server's environment "
                "(the default is production); restart the server with it to enable them."
            )

    def catalogue(self) -> list[ExperimentInfo]:
        out = []
        for e in self.experiments.values():
            reason = e.unavailable()
            out.append(ExperimentInfo(name=e.name, description=e.description, available=reason is None, reason=reason))
        return out

    @property
    def active(self) -> ChaosRun | None:
        return self._snapshot(self._active) if self._active is not None else None

    def history(self, limit: int = 20) -> list[ChaosRun]:
        """Newest first; the active run (if any) is included with its live state."""
        runs = list(self._history)[::-1][: max(0, limit)]
        if self._active is not None:
            runs = [
                self._snapshot(self._active) if r.id == self._active.run.id else r.model_copy(deep=True) for r in runs
            ]
        else:
            runs = [r.model_copy(deep=True) for r in runs]
        return runs

    def _snapshot(self, a: _Active) -> ChaosRun:
        run = a.run.model_copy(deep=True)
        run.observations = {**a.ctx.observations, **run.observations}
        if run.state == "active":
            run.ends_in_s = round(max(0.0, a.deadline - self.clock.monotonic()), 3)
        return run

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the experiments' timers until cancelled (start it in the server's task group)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    async def start(
        self,
        name: str,
        *,
        duration_s: float,
        intensity: float = 0.5,
        target: str | None = None,
        seed: int | None = None,
    ) -> ChaosRun:
        self.check_allowed()
        experiment = self.experiments.get(name)
        if experiment is None:
            raise ValidationError(f"experiment {name!r} is unknown; use one of {', '.join(self.experiments)}.")
        if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
            raise ValidationError(
                f"duration is {duration_s * 1000:.0f} ms; allowed: "
                f"{MIN_DURATION_S * 1000:.0f}..{MAX_DURATION_S * 1000:.0f} ms."
            )
        if not 0.0 <= intensity <= 1.0:
            raise ValidationError(f"intensity is {intensity}; allowed: 0..1.")
        reason = experiment.unavailable()
        if reason is not None:
            raise ValidationError(f"experiment {name!r} cannot run here: {reason}")
        if self._active is not None:
            a = self._active
            raise ChaosBusyError(
                f"experiment {a.run.experiment} ({a.run.id}) is {a.run.state}; one experiment runs at a time. "
                "Wait for it to finish or call stop_chaos_experiment."
            )
        if self._tg is None:
            raise ConfigurationError("the chaos controller is not running (the server is starting or stopping).")
        self._count += 1
        seed = self._seeds.randrange(2**31) if seed is None else seed
        run_id = f"chaos-{self._count}"
        ctx = RunContext(run_id, intensity, target, seed, duration_s, self.clock, random.Random(seed))
        run = ChaosRun(
            id=run_id,
            experiment=name,
            state="active",
            started_at=_iso(self.clock.time()),
            parameters={
                "duration_ms": round(duration_s * 1000),
                "intensity": intensity,
                "target": target,
                "seed": seed,
            },
        )
        now = self.clock.monotonic()
        a = _Active(run, experiment, ctx, SafetyReading(0, 0, 0, 0), now, now + duration_s)
        self._active = a  # taken before any await: a concurrent start is refused
        try:
            a.baseline = await self.probe.reading()
            await experiment.inject(ctx)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._rollback(a)
            run.state, run.ended_by = "done", "error"
            run.abort_reason = str(exc) if isinstance(exc, Exception) else "cancelled while starting"
            self._history.append(run)
            self._active = None
            a.done.set()
            raise
        a.t0 = self.clock.monotonic()
        a.deadline = a.t0 + duration_s
        self._history.append(run)
        log.warning("chaos experiment %s (%s) started: %s", name, run_id, run.parameters)
        self._tg.start_soon(self._lifecycle, a)
        return self._snapshot(a)

    async def stop(self, *, wait_s: float = 5.0) -> ChaosRun | None:
        """End the active experiment now (rolled back), waiting up to ``wait_s`` for its recovery
        (which goes on being measured in the background, bounded, if it takes longer)."""
        a = self._active
        if a is None:
            return None
        if a.run.state == "active":
            a.run.ended_by = a.run.ended_by or "stop"
            a.stop_scope.cancel()
        await a.rolled_back.wait()
        with self.clock.timeout_scope(wait_s):
            await a.done.wait()
        return self._snapshot(a) if not a.done.is_set() else a.run.model_copy(deep=True)

    async def _lifecycle(self, a: _Active) -> None:
        try:
            with a.stop_scope, self.clock.timeout_scope(max(0.0, a.deadline - self.clock.monotonic())):
                await self._watch(a)
            a.run.ended_by = a.run.ended_by or "duration"
        except BaseException:
            a.run.ended_by = a.run.ended_by or "shutdown"
            with anyio.CancelScope(shield=True):
                await self._rollback(a)
            a.run.recovery_detail = "not measured: the server stopped"
            self._finish(a)
            raise
        await self._rollback(a)
        await self._measure_recovery(a)
        self._finish(a)

    async def _watch(self, a: _Active) -> None:
        while True:
            await self.clock.sleep(self.limits.check_interval_s)
            try:
                reason = await self._check(a)
            except Exception as exc:  # a broken probe must not end the timer early or leave the fault
                log.warning("chaos safety check failed: %s", exc)
                continue
            if reason is not None:
                a.run.aborted, a.run.abort_reason, a.run.ended_by = True, reason, "safety"
                log.warning("chaos experiment %s aborted: %s", a.run.id, reason)
                return

    async def _check(self, a: _Active) -> str | None:
        r, b, lim = await self.probe.reading(), a.baseline, self.limits
        calls, errors, dead = r.calls - b.calls, r.errors - b.errors, r.dead - b.dead
        obs = a.run.observations
        obs["calls"], obs["errors"], obs["new_dead_rows"] = calls, errors, dead
        obs["error_rate"] = round(errors / calls, 4) if calls else None
        obs["max_backlog"] = max(int(obs.get("max_backlog", 0)), r.backlog)
        if lim.max_error_rate is not None and calls >= lim.min_calls and errors / calls > lim.max_error_rate:
            return f"error rate {errors / calls:.2f} over {calls} calls is above the bound {lim.max_error_rate:.2f}"
        if lim.max_new_dead is not None and dead > lim.max_new_dead:
            return f"{dead} delivery(ies) became dead during the experiment (bound {lim.max_new_dead})"
        if lim.max_backlog is not None and r.backlog > lim.max_backlog:
            return f"backlog of {r.backlog} rows is above the bound {lim.max_backlog}"
        return None

    async def _rollback(self, a: _Active) -> None:
        if a.rolled_back.is_set():
            return
        try:
            with anyio.CancelScope(shield=True), self.clock.timeout_scope(self.limits.rollback_timeout_s) as scope:
                await a.experiment.rollback(a.ctx)
            if scope.cancelled_caught:
                a.run.observations["rollback_error"] = "rollback took too long"
        except Exception as exc:
            log.exception("chaos rollback of %s failed", a.run.id)
            a.run.observations["rollback_error"] = str(exc)
        a.run.state = "recovering"
        a.run.ended_at = _iso(self.clock.time())
        a.run.active_s = round(self.clock.monotonic() - a.t0, 3)
        a.rolled_back.set()
        log.warning("chaos experiment %s rolled back (%s)", a.run.id, a.run.ended_by)

    async def _measure_recovery(self, a: _Active) -> None:
        lim, start, since = self.limits, self.clock.monotonic(), self.clock.time()
        detail = "not checked"
        with self.clock.timeout_scope(lim.recovery_timeout_s):
            while True:
                try:
                    ok, detail = await self.probe.recovered(since)
                except Exception as exc:
                    ok, detail = False, f"probe failed: {exc}"
                if ok:
                    a.run.recovered = True
                    a.run.time_to_recover_s = round(self.clock.monotonic() - start, 3)
                    a.run.recovery_detail = detail
                    return
                await self.clock.sleep(lim.recovery_poll_s)
        a.run.recovered = False
        a.run.recovery_detail = f"not recovered within {lim.recovery_timeout_s:g}s: {detail}"

    def _finish(self, a: _Active) -> None:
        a.run.observations = {**a.ctx.observations, **a.run.observations}
        a.run.state = "done"
        a.run.ends_in_s = None
        if self._active is a:
            self._active = None
        a.rolled_back.set()
        a.done.set()
