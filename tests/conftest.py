"""Shared fixtures. Every async test runs on both anyio backends (asyncio and trio)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cctg_mcp.testing import TelegramStandIn


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def standin() -> Iterator[TelegramStandIn]:
    """The Telegram Bot API stand-in on 127.0.0.1 (real HTTP), stopped after the test."""
    with TelegramStandIn() as server:
        yield server
