"""Chaos tools: run, stop and review fault-injection experiments (development and staging only)."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from cctg_mcp.resilience.chaos import ChaosController, ChaosRun, ExperimentInfo
from cctg_mcp.runtime import Runtime
from cctg_mcp.server.common import ACT, READ, call, checked, runtime_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "chaos"  # server/toolsets.py: which selection lists these tools

#: Injecting a fault makes real calls fail for its duration: destructive.
FAULT = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

ExperimentName = Literal[
    "network_partition",
    "high_latency",
    "message_loss",
    "error_responses",
    "bridge_crash",
    "event_write_faults",
    "memory_pressure",
    "cpu_spike",
]
DISABLED = (
    "Chaos experiments are disabled: CCTG_ENVIRONMENT is {env!r} (production is the default, and chaos is "
    "refused there). To enable them, restart the server with CCTG_ENVIRONMENT=development or "
    "CCTG_ENVIRONMENT=staging in its environment."
)


class ExperimentList(BaseModel):
    """The chaos experiments, whether chaos is enabled here, and the run in progress."""

    environment: str
    enabled: bool
    experiments: list[ExperimentInfo]
    active: ChaosRun | None = None


class StopResult(BaseModel):
    """Whether a chaos experiment was stopped, and its run."""

    stopped: bool
    message: str
    run: ChaosRun | None = None


class ChaosHistory(BaseModel):
    """The chaos run in progress and the finished runs."""

    active: ChaosRun | None = Field(description="The experiment running (or measuring recovery) now, if any.")
    runs: list[ChaosRun] = Field(description="Newest first.")


def _controller(runtime: Runtime) -> ChaosController:
    return checked(_configured_controller, runtime)


def _configured_controller(runtime: Runtime) -> ChaosController:
    if runtime.chaos is None:
        settings = runtime.service.settings
        if settings.environment == "production":
            raise ToolError(DISABLED.format(env=settings.environment))
        raise runtime.service.not_configured()
    return runtime.chaos


def register(mcp: Registrar) -> None:
    @mcp.tool(title="List chaos experiments", annotations=READ)
    async def list_chaos_experiments(ctx: Context) -> ExperimentList:
        """List the fault-injection experiments and whether they can run here (development/staging only)."""
        runtime = runtime_of(ctx)
        chaos, environment = runtime.chaos, runtime.service.settings.environment
        if chaos is None:
            return ExperimentList(environment=environment, enabled=False, experiments=[])
        return ExperimentList(environment=environment, enabled=True, experiments=chaos.catalogue(), active=chaos.active)

    @mcp.tool(title="Run a chaos experiment", annotations=FAULT)
    async def run_chaos_experiment(
        ctx: Context,
        experiment: Annotated[ExperimentName, Field(description="See list_chaos_experiments.")],
        duration_ms: Annotated[
            int,
            Field(
                ge=100,
                le=600_000,
                description="How long the fault lasts; it rolls "
                "back by itself after this, even if this client goes away.",
            ),
        ],
        intensity: Annotated[
            float,
            Field(
                ge=0.0, le=1.0, description="0..1: share of calls hit, or strength (latency, memory, CPU duty cycle)."
            ),
        ] = 0.5,
        target: Annotated[
            str | None,
            Field(
                max_length=64,
                pattern=r"^(telegram|chat:-?\d+|dispatcher|bridge)$",
                description="telegram (default) or chat:<id> for network faults.",
            ),
        ] = None,
        seed: Annotated[
            int | None, Field(ge=0, le=2**31 - 1, description="RNG seed; the same seed reproduces the same faults.")
        ] = None,
    ) -> ChaosRun:
        """Start a chaos experiment (one at a time; refused in production). Returns the active run.

        Safety checks abort it early (dead rows, backlog, error-rate bound); stop_chaos_experiment ends it now."""
        chaos = _controller(runtime_of(ctx))
        return await call(
            chaos.start(experiment, duration_s=duration_ms / 1000.0, intensity=intensity, target=target, seed=seed)
        )

    @mcp.tool(title="Stop the chaos experiment", annotations=ACT)
    async def stop_chaos_experiment(ctx: Context) -> StopResult:
        """Stop the active chaos experiment now: roll it back and report whether the system recovered."""
        chaos = _controller(runtime_of(ctx))
        run = await call(chaos.stop())
        if run is None:
            return StopResult(stopped=False, message="No chaos experiment is running.")
        verdict = {
            True: "the system recovered",
            False: "the system did not recover",
            None: "recovery is still being measured (see get_chaos_history)",
        }[run.recovered]
        return StopResult(stopped=True, message=f"{run.experiment} ({run.id}) rolled back; {verdict}.", run=run)

    @mcp.tool(title="Chaos history", annotations=READ)
    async def get_chaos_history(
        ctx: Context, limit: Annotated[int, Field(ge=1, le=100, description="How many runs, newest first.")] = 20
    ) -> ChaosHistory:
        """Past and current chaos runs: parameters, observations, aborted?, recovered?, time to recover."""
        chaos = _controller(runtime_of(ctx))
        return ChaosHistory(active=chaos.active, runs=chaos.history(limit))
