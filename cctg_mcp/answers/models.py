"""What the person answered: parsed Telegram updates in, pydantic results out. No I/O.

``parse_update`` turns one Bot API ``Update`` into a ``ParsedUpdate`` (a button press or a
text reply) or ``None`` for kinds we do not read. The result models are what the response
tools return; their field descriptions are written for the model reading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from cctg_mcp.resilience.clock import iso_z

Kind = Literal["callback", "text"]
Action = Literal["approve", "deny", "option", "acknowledge", "other", "text"]
#: Presses that ask the agent to do something (the seed's "actionable" responses).
ACTIONABLE: frozenset[str] = frozenset({"approve", "deny", "option"})


def iso(epoch: float) -> str:
    return iso_z(epoch)


@dataclass(frozen=True)
class ParsedUpdate:
    """The parts of one update that matter to us."""

    update_id: int
    kind: Kind
    user_id: int
    username: str | None
    first_name: str | None
    chat_id: int | None
    #: The message the button was on, or the message a text replied to (ties it to an event).
    message_id: int | None
    text: str | None = None
    callback_data: str | None = None
    callback_query_id: str | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_update(update: dict[str, Any]) -> ParsedUpdate | None:
    """A button press or a text message, or ``None`` (other update kinds, malformed)."""
    update_id = _int(update.get("update_id"))
    if update_id is None:
        return None
    query = update.get("callback_query")
    message = update.get("message")
    if isinstance(query, dict):
        sender, on = query.get("from"), query.get("message")
        on = _dict(on)
        chat = _dict(on.get("chat"))
        kind: Kind = "callback"
        fields: dict[str, Any] = {
            "message_id": _int(on.get("message_id")),
            "chat_id": _int(chat.get("id")),
            "callback_data": _str(query.get("data")) or "",
            "callback_query_id": _str(query.get("id")),
        }
    elif isinstance(message, dict):
        sender = message.get("from")
        text = _str(message.get("text")) or _str(message.get("caption"))
        if text is None:
            return None  # a sticker, a photo without caption...: nothing to read
        reply = message.get("reply_to_message")
        chat = _dict(message.get("chat"))
        kind = "text"
        fields = {
            "message_id": _int(reply.get("message_id")) if isinstance(reply, dict) else None,
            "chat_id": _int(chat.get("id")),
            "text": text,
        }
    else:
        return None
    if not isinstance(sender, dict) or _int(sender.get("id")) is None:
        return None
    return ParsedUpdate(
        update_id=update_id,
        kind=kind,
        user_id=int(sender["id"]),
        username=_str(sender.get("username")),
        first_name=_str(sender.get("first_name")),
        **fields,
    )


class TelegramResponse(BaseModel):
    """One answer from the person: a button press or a text message."""

    id: int
    update_id: int
    kind: Kind = Field(description="callback: a button press; text: a typed message.")
    action: Action = Field(
        description="approve / deny: an approval button; option: another choice button; acknowledge: "
        "an Acknowledge button; text: a typed message; other: a button we do not recognise."
    )
    event_id: str | None = Field(description="The event this answers (None if it cannot be tied to one).")
    task_id: str | None = None
    option: str | None = Field(default=None, description="Label of the pressed button.")
    option_index: int | None = None
    text: str | None = Field(default=None, description="What the person typed (text replies).")
    callback_data: str | None = None
    user_id: int
    username: str | None = None
    first_name: str | None = None
    timestamp: str = Field(description="When it was received (UTC, ISO 8601).")
    received_at: float = Field(description="When it was received (Unix seconds).")


class ResponseList(BaseModel):
    """Stored answers from the person, newest first, with how many the window holds."""

    count: int = Field(description="Responses in this answer (≤ limit).")
    total: int = Field(description="Responses stored in the requested window.")
    responses: list[TelegramResponse] = Field(description="Newest first.")


class ClearResult(BaseModel):
    """How many stored answers a clear removed."""

    deleted_count: int
    message: str


class PendingSummary(BaseModel):
    """Counts of recent answers, and of the approvals and denials among them."""

    total_recent_responses: int
    actionable_responses: int
    pending_approvals: int
    pending_denials: int
    time_window_minutes: int


class ActionableResponse(BaseModel):
    """One answer that asks for action: an approval, a denial or a chosen option."""

    action: Literal["approve", "deny", "option"]
    event_id: str | None
    task_id: str | None
    option: str | None
    user_id: int
    username: str | None
    timestamp: str
    callback_data: str | None = None


class PendingResponses(BaseModel):
    """Answers that ask for action, with a summary and what to do next."""

    summary: PendingSummary
    actionable_responses: list[ActionableResponse] = Field(description="Newest first.")
    recommendations: list[str]


class WaitResult(BaseModel):
    """The person's answer to one question, or that none came before the wait ended."""

    status: Literal["answered", "timeout"] = Field(
        description="answered: the person answered (see action/option/response); timeout: no answer yet "
        "(the question is still open; call again to keep waiting)."
    )
    event_id: str
    waited_seconds: float
    action: Action | None = None
    option: str | None = None
    response: TelegramResponse | None = None
    message: str | None = Field(default=None, description="On timeout: what to do next (call again).")
