"""A loopback Telegram Bot API stand-in with fault injection, shipped in the package.

A real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer`` in a daemon thread), so it
works from asyncio, trio and other processes alike. It validates ``sendMessage`` the way
Telegram does (HTML entity parsing, 4096-character limit, ``callback_data`` ≤ 64 bytes), so
escaping bugs fail in tests. The bot token is never logged or recorded.

Run it stand-alone with ``python -m cctg_mcp.testing --port 0``: it prints one JSON line
``{"base_url": ..., "token": ...}`` and serves until stdin closes or SIGTERM.

Modules: ``standin`` (Bot API semantics, faults, flood limits), ``server`` (HTTP),
``html`` (Telegram's input validation), ``person`` (scripted updates: texts, /start, button
presses), ``model`` (records), ``__main__`` (the CLI).
"""

from __future__ import annotations

from cctg_mcp.testing.html import SUPPORTED_TAGS, TEXT_LIMIT, BadRequest, parse_telegram_html, utf16_len
from cctg_mcp.testing.model import FaultMode, RecordedRequest, SentMessage
from cctg_mcp.testing.standin import DEFAULT_TOKEN, TelegramStandIn

__all__ = [
    "DEFAULT_TOKEN",
    "SUPPORTED_TAGS",
    "TEXT_LIMIT",
    "BadRequest",
    "FaultMode",
    "RecordedRequest",
    "SentMessage",
    "TelegramStandIn",
    "parse_telegram_html",
    "utf16_len",
]
