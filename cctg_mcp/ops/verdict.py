"""The one overall verdict: what ``get_resilience_status`` and ``get_health_report`` both say.

Both tools read ``verdict(runtime)``, so they can never disagree. It is built from what was
observed, in this order:

* not configured (no token, no allowed users, an events dir that cannot be created):
  ``unhealthy``, not ready;
* the outbox's database is gone (deleted or unreadable under a running server): ``unhealthy``;
* no health monitor running (disabled by the config, or not wired): ``unknown`` (nothing checks);
* otherwise the monitor's cached report (``resilience.health.aggregate``): ``unknown`` until the
  first checks of the critical components ran, then healthy / degraded / unhealthy;
* answers that are not being read (getUpdates conflict or repeated failures) make a healthy
  or unknown verdict ``degraded`` (sends still go out, answers do not come back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cctg_mcp.answers.report import AnswersSummary, answers_summary
from cctg_mcp.resilience.health import HealthReport
from cctg_mcp.runtime import Runtime

Overall = Literal["healthy", "degraded", "unhealthy", "unknown"]


@dataclass(frozen=True)
class Verdict:
    """The one overall verdict that status and health both report, with its reason."""

    overall: Overall
    #: Sends can go out now: configured and no critical component unhealthy.
    ready: bool
    configured: bool
    #: Why, in one sentence.
    reason: str


#: ``verdict(answers=...)`` not given: read the answers summary here.
_READ: Any = object()


def verdict(runtime: Runtime, report: HealthReport | None = None, *, answers: AnswersSummary | None = _READ) -> Verdict:
    """The overall verdict from the live runtime (``report``: an already-fetched monitor report;
    ``answers``: an already-built answers summary, so a status document reads each once)."""
    service = runtime.service
    problems = service.settings.problems()
    if problems:
        return Verdict("unhealthy", False, False, "not configured: " + " ".join(problems))
    gone = service.outbox.store_problem() if service.outbox is not None else None
    if gone is not None:
        return Verdict("unhealthy", False, True, f"the outbox is gone ({gone}): sends are refused until a restart")
    monitor = runtime.health
    if monitor is None or not monitor.settings.enabled:
        running = bool(service.dispatcher is not None and service.dispatcher.running)
        return Verdict("unknown", running, True, "health monitoring is not running, so nothing is checked")
    report = report if report is not None else monitor.report()
    overall: Overall = report.overall.value
    reason = {
        "unknown": "the first health checks have not run yet",
        "healthy": "every health check passed",
        "degraded": "a component is impaired: " + ", ".join(_impaired(report, monitor.settings.recovery_threshold)),
        "unhealthy": "a critical component is unhealthy: " + ", ".join(report.unhealthy),
    }[overall]
    if overall in ("healthy", "unknown"):  # an observed fault outranks "not checked yet"
        if answers is _READ:
            answers = answers_summary(service, [])
        if answers is not None and answers.healthy is False:
            overall, reason = "degraded", "answers from Telegram are not being read"
        elif answers is not None and answers.healthy is None and overall == "healthy":
            # A follower's answers are not a check it ran: say so rather than count them as passed.
            reason += "; answers are read by another session (not checked by this one)"
    return Verdict(overall, report.ready, True, reason)


def _impaired(report: HealthReport, needed: int) -> list[str]:
    """The impaired components; one whose last check passed but has not passed ``needed`` in a
    row yet (health.recoveryThreshold) is named as recovering, not as if it still failed."""
    out = []
    for c in report.components:
        if c.status.value not in ("degraded", "unhealthy"):
            continue
        if 0 < c.consecutive_successes < needed:
            out.append(f"{c.name} (recovering: its last check passed, {c.consecutive_successes} of {needed} in a row)")
        else:
            out.append(c.name)
    return out
