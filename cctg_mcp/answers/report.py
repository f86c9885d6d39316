"""The answers' part of ``get_resilience_status``: which source, whether the poller reads,
and what a person must fix when it cannot (a 409 conflict, repeated failures)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cctg_mcp.answers.bridge import BridgeAnswers
from cctg_mcp.answers.service import Answers
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.errors import redact

#: Consecutive failed getUpdates rounds after which the poller "keeps failing".
FAILING_AFTER = 3
CONFLICT_ISSUE = "another program is reading this bot's updates (409): stop it or delete its webhook"


class AnswersSummary(BaseModel):
    """Where answers come from and whether they are being read."""

    mode: Literal["telegram", "bridge"] = Field(
        description="telegram: this server polls getUpdates; bridge: answers are read from the CCTelegram "
        "bridge's response files."
    )
    poller_running: bool | None = Field(description="The getUpdates poller runs (None in bridge mode).")
    following: bool = Field(
        default=False,
        description="Another session on this data dir reads getUpdates for all of them (see coordination); "
        "this one takes over if that one stops.",
    )
    consecutive_failures: int = Field(description="getUpdates rounds failed in a row (0 when reading fine).")
    getupdates_conflicts: int = Field(description="getUpdates answers 409 (another reader or a webhook) so far.")
    in_conflict: bool = Field(description="The last getUpdates round was refused with 409.")
    last_error: str | None = Field(description="The poller's last error (redacted), None after a success.")
    responses_dir: str | None = Field(default=None, description="The bridge's responses directory (bridge mode).")
    unauthorized_ignored: int = Field(
        default=0, description="Answers from users not in TELEGRAM_ALLOWED_USERS, ignored so far."
    )
    reader: str | None = Field(
        default=None,
        description="While following: the session id of the session that reads getUpdates (from coordination).",
    )
    healthy: bool | None = Field(
        description="Answers are being read by this session. None while following: another session reads "
        "them and this one did not check that it does (see reader, and that session's own status)."
    )


def answers_summary(service: NotificationService, issues: list[str]) -> AnswersSummary | None:
    """The summary, appending any problem to ``issues`` in words; None when answers are off."""
    answers = service.answers
    if isinstance(answers, BridgeAnswers):
        if not answers.allowed_users:
            issues.append(
                "Answers from the bridge are not accepted: TELEGRAM_ALLOWED_USERS is empty "
                "(set it to the same user ids as the bridge's)."
            )
        return AnswersSummary(
            mode="bridge",
            poller_running=None,
            consecutive_failures=0,
            getupdates_conflicts=0,
            in_conflict=False,
            last_error=None,
            responses_dir=str(answers.responses_dir),
            unauthorized_ignored=answers.unauthorized,
            healthy=bool(answers.allowed_users),
        )
    if not isinstance(answers, Answers) or answers.poller is None:
        return None
    poller = answers.poller
    last_error = redact(poller.last_error) if poller.last_error else None
    healthy = True
    gone = answers.store.store_problem()
    if gone is not None:
        issues.append(f"Answers are stored in a file that is gone: {gone}. Restart the server.")
        healthy = False
    if poller.in_conflict:
        issues.append(f"Answers from Telegram are not read: {CONFLICT_ISSUE}.")
        healthy = False
    elif poller.consecutive_failures >= FAILING_AFTER:
        issues.append(
            f"Answers from Telegram are not read: getUpdates failed {poller.consecutive_failures} times "
            f"in a row (last error: {last_error})."
        )
        healthy = False
    elif not poller.running and not poller.following:
        issues.append("The getUpdates poller is not running: answers from Telegram are not read.")
        healthy = False
    verdict: bool | None = None if healthy and poller.following else healthy  # a follower did not look
    return AnswersSummary(
        mode="telegram",
        poller_running=poller.running,
        following=poller.following,
        consecutive_failures=poller.consecutive_failures,
        getupdates_conflicts=poller.conflicts,
        in_conflict=poller.in_conflict,
        last_error=last_error,
        unauthorized_ignored=poller.unauthorized,
        healthy=verdict,
    )
