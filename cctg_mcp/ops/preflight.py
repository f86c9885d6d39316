"""``cctg-mcp check``: contact what a send would contact, and say what was seen.

Telegram delivery: ``getMe`` (the token), then ``sendChatAction`` to every allowed user (the
cheapest call that proves the bot may write to that chat: a person who never pressed Start or
blocked the bot answers 403). Bridge delivery: the events directory (a file is really created
and removed there) and the bridge's /health.
``ok`` is true only when a send would really reach every recipient. Network errors name the
host and the cause. Nothing here prints; the CLI renders the ``Preflight`` as text or JSON.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from pydantic import BaseModel, Field

from cctg_mcp.config import Settings
from cctg_mcp.resilience.errors import (
    BaseResilienceError,
    ResilienceTimeoutError,
    TelegramForbidden,
    TelegramUnauthorized,
    redact,
)
from cctg_mcp.transports.bridge.process import probe_bridge_health
from cctg_mcp.transports.telegram import TelegramTransport

TIMEOUT_S = 10.0
#: What resolvers say when a name does not resolve (glibc, macOS, Windows, httpx).
_UNRESOLVED = (
    "name or service not known",
    "nodename nor servname",
    "name resolution",
    "getaddrinfo",
    "no address associated",
    "no such host",
)


class BotInfo(BaseModel):
    """The bot the token belongs to."""

    id: int | None
    username: str | None


class RecipientCheck(BaseModel):
    """Whether the bot may write to one recipient, and how to fix it if not."""

    chat_id: int
    reachable: bool
    error: str | None = None
    fix: str | None = None


class Preflight(BaseModel):
    """What `cctg-mcp check` saw: whether a send would reach every recipient now."""

    ok: bool = Field(description="A send would reach every recipient now.")
    delivery: str
    environment: str
    data_dir: str
    api: str | None = Field(default=None, description="The Bot API host checked (telegram delivery).")
    bot: BotInfo | None = None
    recipients: list[RecipientCheck] = Field(default_factory=list)
    bridge_health: str | None = Field(default=None, description="What the bridge's /health said (bridge delivery).")
    problems: list[str] = Field(default_factory=list)


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port


def _connect(host: str, port: int) -> str | None:
    """Open a plain TCP connection to see why the HTTP client could not (None: it connects)."""
    try:
        with socket.create_connection((host, port), timeout=5.0):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}"
    except TimeoutError:
        return f"no answer from {host}:{port} within 5s (a firewall or proxy?)"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


async def network_cause(exc: BaseResilienceError, url: str) -> str:
    """A network failure in words that name the host and the cause (seen by a direct connect
    when the HTTP client's message does not say, e.g. httpx's "All connection attempts failed")."""
    host, port = _host_port(url)
    text = str(exc)
    lowered = text.lower()
    if exc.code in ("ECONNREFUSED", "ETIMEDOUT", "NETWORK_ERROR") and not any(n in lowered for n in _UNRESOLVED):
        seen = await anyio.to_thread.run_sync(_connect, host, port)
        if seen is not None:
            return f"{seen} ({text})"
    if any(needle in lowered for needle in _UNRESOLVED):
        return f"cannot resolve {host}: {text}"
    if "refused" in lowered or (exc.code == "ECONNREFUSED" and "errno 111" in lowered):
        return f"connection refused by {host}:{port}: {text}"
    if isinstance(exc, ResilienceTimeoutError) or exc.code in ("ETIMEDOUT", "TOTAL_TIMEOUT", "READ_TIMEOUT"):
        return f"no answer from {host}:{port} within {TIMEOUT_S:g}s: {text}"
    if "certificate" in lowered or "ssl" in lowered:
        return f"TLS with {host}:{port} failed (certificate or proxy?): {text}"
    if "unreachable" in lowered:
        return f"network unreachable for {host}:{port}: {text}"
    return f"{host}:{port}: {exc.code}: {text}"


async def preflight(settings: Settings) -> Preflight:
    report = Preflight(
        ok=False,
        delivery=settings.delivery,
        environment=settings.environment,
        data_dir=str(settings.data_dir),
        problems=list(settings.problems()),
    )
    if settings.delivery == "bridge":
        await _bridge(settings, report)
    elif settings.token:
        await _telegram(settings, report)
    report.problems = [redact(p, settings.token) for p in report.problems]
    for r in report.recipients:
        r.error = redact(r.error, settings.token) if r.error else None
    report.ok = not report.problems and (settings.delivery == "bridge" or bool(report.recipients))
    return report


def _unwritable(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory`` (a real create and delete), else None."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".cctg-check-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


async def _bridge(settings: Settings, report: Preflight) -> None:
    if settings.events_dir.is_dir():  # problems() already says when it cannot be created
        why = await anyio.to_thread.run_sync(_unwritable, settings.events_dir)
        if why is not None:
            report.problems.append(
                f"CC_TELEGRAM_EVENTS_DIR ({settings.events_dir}) is not writable: {why}. "
                "Point it to a directory this user can write."
            )
    health = await probe_bridge_health(settings.bridge_health_url, timeout_s=5.0)
    report.bridge_health = f"{health.status}: {health.detail}"
    if health.status != "healthy":
        report.problems.append(
            f"The CCTelegram bridge's health check ({redact(settings.bridge_health_url)}) says {health.status}: "
            f"{health.detail}. Event files would wait in {settings.events_dir} until a bridge runs."
        )


async def _telegram(settings: Settings, report: Preflight) -> None:
    host, _ = _host_port(settings.api_base_url)
    report.api = host
    async with TelegramTransport(settings.token, settings.api_base_url, timeout=TIMEOUT_S) as transport:
        try:
            me = await transport.get_me()
        except TelegramUnauthorized as exc:
            report.problems.append(f"{exc} Get the token from @BotFather and set TELEGRAM_BOT_TOKEN.")
            return
        except BaseResilienceError as exc:
            report.problems.append(f"Telegram getMe failed: {await _cause(exc, settings.api_base_url)}")
            return
        username = me.get("username") if isinstance(me.get("username"), str) else None
        report.bot = BotInfo(id=me.get("id") if isinstance(me.get("id"), int) else None, username=username)
        bot = f"@{username}" if username else "the bot"
        for chat_id in settings.allowed_users:
            try:
                await transport.send_chat_action(chat_id)
                report.recipients.append(RecipientCheck(chat_id=chat_id, reachable=True))
            except TelegramForbidden as exc:
                report.recipients.append(
                    RecipientCheck(
                        chat_id=chat_id,
                        reachable=False,
                        error=str(exc),
                        fix=f"User {chat_id} must open {bot} in Telegram and press Start (or unblock it).",
                    )
                )
            except BaseResilienceError as exc:
                report.recipients.append(
                    RecipientCheck(
                        chat_id=chat_id,
                        reachable=False,
                        error=await _cause(exc, settings.api_base_url),
                        fix="Check that this id is a person's numeric user id (TELEGRAM_ALLOWED_USERS) "
                        "and that they pressed Start.",
                    )
                )
    for r in report.recipients:
        if not r.reachable:
            report.problems.append(f"Recipient {r.chat_id} cannot be reached: {r.error}. {r.fix}")


async def _cause(exc: BaseResilienceError, url: str) -> str:
    from cctg_mcp.resilience.errors import TelegramError

    if isinstance(exc, TelegramError):  # Telegram answered: its own words
        return str(exc)
    return await network_cause(exc, url)
