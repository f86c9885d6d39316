"""The stand-in's records and internal values: fault modes, sent messages, replies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FaultMode(StrEnum):
    """The failures the stand-in can simulate."""

    NONE = "none"
    SERVER_ERROR = "server_error"
    RATE_LIMIT = "rate_limit"
    HANG = "hang"
    RESET = "reset"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "bad_request"
    #: A slow peer: a valid answer written one byte every ``drip_interval`` seconds.
    DRIP = "drip"
    #: A huge peer: an answer of ``huge_body_bytes`` bytes, without a Content-Length.
    HUGE_BODY = "huge_body"


@dataclass
class SentMessage:
    """A message the stand-in accepted."""

    chat_id: int
    text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    message_id: int
    at: float
    plain_text: str = ""


@dataclass
class RecordedRequest:
    """A request the stand-in received (token redacted) and the status it answered."""

    method: str
    path: str  # the token is replaced by [REDACTED]
    params: dict[str, Any]
    status: int  # 0 when the connection was dropped without a response


@dataclass
class Fault:
    """A simulated failure and the requests it applies to."""

    mode: FaultMode
    methods: set[str] | None
    chats: set[int] | None
    retry_after: int
    status: int
    count: int | None
    epoch: int


@dataclass
class Bucket:
    """A token bucket for the stand-in's flood limits."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass
class Reply:
    """The stand-in's answer to one request."""

    status: int
    payload: dict[str, Any] | None = None  # None: drop the connection (RST)
    close: bool = False  # answer, then close the connection (its framing is lost)
    drip_s: float = 0.0  # > 0: write the body one byte at a time, this many seconds apart
    pad_to: int = 0  # > 0: pad the body with spaces to this many bytes, sent without Content-Length


def err(code: int, description: str, retry_after: int | None = None) -> dict[str, Any]:
    """A Bot API error envelope."""
    env: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        env["parameters"] = {"retry_after": retry_after}
    return env
