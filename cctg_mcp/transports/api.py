"""What the application needs from a Telegram Bot API client, as a protocol.

``TelegramTransport`` implements it over HTTP; ``ops.chaos.ChaosSender`` wraps one with fault
injection. The dispatcher, the answer poller, the health checks and recovery depend on this
protocol, never on the concrete client.
"""

from __future__ import annotations

from typing import Any, Protocol

#: The Bot API's address (``TELEGRAM_API_BASE_URL`` overrides it). Here, not in telegram.py, so
#: reading the settings does not import httpx (the hook's start-up time counts).
DEFAULT_BASE_URL = "https://api.telegram.org"


class BotApi(Protocol):
    """The Bot API calls cctg-mcp makes, and the client's rebuild lever (recovery "restart")."""

    @property
    def generation(self) -> int:
        """How many times ``rebuild()`` replaced the HTTP client."""
        ...

    async def send_message(
        self, chat_id: int, text: str, *, reply_markup: dict[str, Any] | None = None, parse_mode: str | None = "HTML"
    ) -> int: ...

    async def edit_message_text(
        self,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        reply_markup: dict[str, Any] | None = None,
        parse_mode: str | None = "HTML",
    ) -> None: ...

    async def get_me(self) -> dict[str, Any]: ...

    async def get_updates(
        self,
        offset: int | None,
        *,
        timeout: int = 25,  # noqa: ASYNC109 (getUpdates' long-poll parameter, sent to Telegram)
        limit: int = 100,
        allowed_updates: list[str] | None = None,
    ) -> list[dict[str, Any]]: ...

    async def answer_callback_query(self, callback_query_id: str, text: str | None = None) -> None: ...

    async def rebuild(self) -> None: ...

    async def aclose(self) -> None: ...
