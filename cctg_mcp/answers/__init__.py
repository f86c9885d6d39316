"""Answers from Telegram in direct mode: the response store, the getUpdates poller and the
response use cases. See ``store``, ``poller`` and ``service``."""

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
from cctg_mcp.answers.service import Answers, UnknownEventError, answers_of
from cctg_mcp.answers.store import ANSWERS_FILE, ResponseStore

__all__ = [
    "ANSWERS_FILE",
    "DEFAULT_POLL_TIMEOUT",
    "Answers",
    "ClearResult",
    "ParsedUpdate",
    "PendingResponses",
    "ResponseList",
    "ResponsePoller",
    "ResponseStore",
    "TelegramResponse",
    "UnknownEventError",
    "WaitResult",
    "answers_of",
    "parse_update",
    "updates_pipeline",
]
