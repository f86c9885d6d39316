"""Answers from Telegram: in direct mode the response store, the getUpdates poller and the
response use cases (``store``, ``poller``, ``service``); in bridge mode the CCTelegram
bridge's response files (``bridge``). ``common`` holds what both share, ``report`` their
part of the resilience status."""

from cctg_mcp.answers.bridge import BridgeAnswers, EventIndex
from cctg_mcp.answers.common import UnknownEventError
from cctg_mcp.answers.models import (
    ClearResult,
    ParsedUpdate,
    PendingResponses,
    ResponseList,
    TelegramResponse,
    WaitResult,
    parse_update,
)
from cctg_mcp.answers.poller import DEFAULT_POLL_TIMEOUT, ResponsePoller, updates_pipeline
from cctg_mcp.answers.report import AnswersSummary, answers_summary
from cctg_mcp.answers.service import Answers, AnswerSource, answers_of
from cctg_mcp.answers.store import ANSWERS_FILE, ResponseStore

__all__ = [
    "ANSWERS_FILE",
    "DEFAULT_POLL_TIMEOUT",
    "AnswerSource",
    "Answers",
    "AnswersSummary",
    "BridgeAnswers",
    "ClearResult",
    "EventIndex",
    "ParsedUpdate",
    "PendingResponses",
    "ResponseList",
    "ResponsePoller",
    "ResponseStore",
    "TelegramResponse",
    "UnknownEventError",
    "WaitResult",
    "answers_of",
    "answers_summary",
    "parse_update",
    "updates_pipeline",
]
