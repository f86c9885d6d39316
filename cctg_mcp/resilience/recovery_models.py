"""The recovery manager's values: what a strategy is asked and answers, settings, and the
session/attempt/statistics models the tools return.

``RecoverySettings.from_config`` turns ``ResilienceConfig.recovery`` (milliseconds) into
seconds and the seed's backup strategy names into ``BackupPlan``s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from cctg_mcp.resilience.config import BackupStrategy, RecoveryConfig
from cctg_mcp.resilience.errors import BaseResilienceError, RecoveryStrategy

log = logging.getLogger("cctg_mcp.resilience.recovery")  # the manager's logger, as before the split

#: succeeded: a check of the effect passed. unverified: the act was done, nothing could check it.
#: mitigated: fallback or degradation limits the damage; the session stays open until the
#: component is healthy again (then it ends succeeded) or a later attempt verifies a fix.
SessionStatus = Literal["in_progress", "succeeded", "unverified", "mitigated", "failed", "escalated"]
AttemptOutcome = Literal["succeeded", "unverified", "mitigated", "failed", "needs_person"]


@dataclass(frozen=True)
class RecoveryRequest:
    """What a strategy function is asked to do."""

    component: str
    error: BaseResilienceError | None
    attempt: int  # 1-based, counted over the whole session
    escalation_level: int
    session_id: str
    strategy: RecoveryStrategy = RecoveryStrategy.RETRY
    backup: str | None = None  # the backup strategy's name when running as a backup
    error_code: str | None = None  # the error's code, or what the health check reported
    #: who asked: "tool" (trigger_recovery), "api" (a library call) or "health" (the monitor)
    trigger: str = "api"

    @property
    def asked_by_person(self) -> bool:
        """A person, a tool call or a library caller asked (not the health monitor)."""
        return self.trigger != "health"


@dataclass
class StrategyOutcome:
    """What an action did. ``succeeded`` alone means "acted without error"; it counts as a
    recovery only with ``verified`` (a check of the effect passed). ``mitigated``: the act
    limits the damage (pause, degrade) without fixing the cause."""

    succeeded: bool
    detail: str
    needs_person: bool = False
    steps: list[str] = field(default_factory=list)
    verified: bool = False
    mitigated: bool = False

    @property
    def kind(self) -> AttemptOutcome:
        if self.needs_person:
            return "needs_person"
        if not self.succeeded:
            return "failed"
        if self.mitigated:
            return "mitigated"
        return "succeeded" if self.verified else "unverified"


StrategyFn = Callable[[RecoveryRequest], Awaitable[StrategyOutcome]]


@dataclass(frozen=True)
class BackupPlan:
    """A configured fallback strategy, in priority order."""

    name: str
    priority: int
    strategy: RecoveryStrategy
    timeout: float  # seconds
    max_attempts: int
    conditions: frozenset[str]


def backup_strategy_of(name: str) -> RecoveryStrategy | None:
    """Which strategy a seed backup name stands for (``bridge-restart`` → restart, ...)."""
    lowered = name.lower().replace("-", "_")
    for strategy in RecoveryStrategy:
        if lowered == strategy.value:
            return strategy
    for needle, strategy in (
        ("restart", RecoveryStrategy.RESTART),
        ("fallback", RecoveryStrategy.FALLBACK),
        ("degrad", RecoveryStrategy.GRACEFUL_DEGRADATION),
        ("escalat", RecoveryStrategy.ESCALATE),
    ):
        if needle in lowered:
            return strategy
    return None


@dataclass(frozen=True)
class RecoverySettings:
    """``ResilienceConfig.recovery`` in seconds (the config is in milliseconds)."""

    enabled: bool = True
    auto_recovery_enabled: bool = True
    max_recovery_attempts: int = 5
    recovery_delay: float = 5.0
    escalation_threshold: int = 3
    graceful_shutdown_timeout: float = 30.0
    restart_delay: float = 2.0
    backup_strategies: tuple[BackupPlan, ...] = ()
    attempt_timeout: float = 30.0  # bounds one primary attempt (backups use their own timeout)
    history_size: int = 100

    @classmethod
    def from_config(cls, config: RecoveryConfig, **overrides: Any) -> RecoverySettings:
        plans = []
        for backup in sorted(config.backup_strategies, key=lambda b: b.priority):
            plan = _plan(backup)
            if plan is not None:
                plans.append(plan)
        values: dict[str, Any] = {
            "enabled": config.enabled,
            "auto_recovery_enabled": config.auto_recovery_enabled,
            "max_recovery_attempts": config.max_recovery_attempts,
            "recovery_delay": config.seconds("recovery_delay"),
            "escalation_threshold": config.escalation_threshold,
            "graceful_shutdown_timeout": config.seconds("graceful_shutdown_timeout"),
            "restart_delay": config.seconds("restart_delay"),
            "backup_strategies": tuple(plans),
        }
        return cls(**{**values, **overrides})


def _plan(backup: BackupStrategy) -> BackupPlan | None:
    strategy = backup_strategy_of(backup.name)
    if not backup.enabled or strategy is None:
        if strategy is None:
            log.warning("backup strategy %r names no known recovery strategy; ignored", backup.name)
        return None
    return BackupPlan(
        backup.name,
        backup.priority,
        strategy,
        backup.seconds("timeout"),
        backup.max_attempts,
        frozenset(backup.conditions),
    )


class RecoveryAttempt(BaseModel):
    """One strategy tried during a recovery session."""

    strategy: RecoveryStrategy
    outcome: AttemptOutcome
    detail: str
    started_at: str
    duration_s: float
    escalation_level: int
    backup: str | None = Field(default=None, description="The backup strategy this attempt ran as, if any.")


class RecoverySession(BaseModel):
    """One recovery of one component: its trigger, attempts and result."""

    id: str
    component: str
    trigger: str = Field(description="What started it: health, tool, or api.")
    error_code: str | None
    category: str | None
    severity: str | None
    status: SessionStatus
    strategy: RecoveryStrategy = Field(description="The strategy the session started with.")
    escalation_level: int = 0
    attempts: list[RecoveryAttempt] = Field(default_factory=list)
    needs_person: bool = False
    steps: list[str] = Field(default_factory=list, description="What a person should do (manual recovery).")
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = None
    summary: str = ""


class RecoveryStatistics(BaseModel):
    """Counts of recovery sessions by result."""

    sessions: int
    in_progress: int = Field(description="Sessions open now (running, or mitigated and waiting for health).")
    succeeded: int = Field(description="Sessions that ended with a check of the effect passing.")
    unverified: int = Field(description="Sessions that ended with an act nothing could check.")
    mitigated: int = Field(description="Sessions open now with fallback or degradation in place.")
    failed: int
    escalated: int
    success_rate: float | None = Field(
        description="Verified successes / finished sessions (unverified ones count as not succeeded; "
        "None before any finished)."
    )
    mean_time_to_recover_s: float | None = Field(
        description="Mean time from a session's start to its verified end (succeeded sessions only)."
    )
    active_components: list[str]
