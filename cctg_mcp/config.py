"""Settings: the one place that reads the environment.

``load_settings(environ)`` turns environment variables (names in DESIGN.md §4) into a
validated ``Settings``. A malformed value raises ``ConfigurationError`` naming the variable
and what is allowed; nothing falls back silently. A missing token is *not* an error here:
the server still starts, lists its tools and reports "not configured" from them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from cctg_mcp.resilience.errors import ConfigurationError

Delivery = Literal["telegram", "bridge"]
Environment = Literal["development", "staging", "production"]

DEFAULT_API_BASE_URL = "https://api.telegram.org"
DEFAULT_BRIDGE_HEALTH_URL = "http://localhost:8080/health"


class PacingSettings(BaseModel):
    """Telegram's flood limits (Bot FAQ; not contractual, so configurable)."""

    model_config = ConfigDict(frozen=True)

    per_chat_per_second: float = 1.0
    per_chat_burst: int = 3
    global_per_second: float = 30.0
    group_per_minute: float = 20.0


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    telegram_bot_token: SecretStr | None = None
    allowed_users: tuple[int, ...] = ()
    api_base_url: str = DEFAULT_API_BASE_URL
    data_dir: Path
    delivery: Delivery = "telegram"
    environment: Environment = "production"
    config_path: Path | None = None
    events_dir: Path
    responses_dir: Path
    bridge_health_url: str = DEFAULT_BRIDGE_HEALTH_URL
    #: The CCTelegram bridge executable (CC_TELEGRAM_BRIDGE_PATH); None: ``cctelegram-bridge`` on PATH.
    bridge_path: Path | None = None
    pacing: PacingSettings = PacingSettings()
    #: Seconds a claimed delivery stays leased (CCTG_LEASE_SECONDS, >= 5): after a crash
    #: (SIGKILL) its rows go back to the queue once this runs out. Default 120.
    lease_seconds: float = 120.0
    #: Streamable HTTP transport (``serve --transport http``): bind address, port, and the
    #: bearer token clients must send (required to bind anything but loopback).
    http_host: str = "127.0.0.1"
    http_port: int = 8765
    http_token: SecretStr | None = None
    #: Tool calls per minute per client session (CCTG_TOOL_RATE_LIMIT; 0 turns the limit off).
    tool_rate_limit: float = 120.0
    #: Most deliveries waiting in the outbox (CCTG_OUTBOX_MAX_PENDING); past it sends are refused.
    outbox_max_pending: int = 100_000
    #: Most bytes of event payload waiting (CCTG_OUTBOX_MAX_BYTES); past it sends are refused.
    outbox_max_bytes: int = 256 * 1024 * 1024
    #: Variables that were read, for ``cctg-mcp check`` and the status tool (no secrets).
    sources: tuple[str, ...] = ()

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def token(self) -> str:
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else ""

    def problems(self) -> list[str]:
        """What stops delivery, in words a person can act on (empty when ready)."""
        out: list[str] = []
        if self.delivery == "telegram":
            if not self.telegram_bot_token:
                out.append(
                    "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and put its token "
                    "in the server's environment."
                )
            if not self.allowed_users:
                out.append(
                    "TELEGRAM_ALLOWED_USERS is empty: set it to your numeric Telegram user id "
                    "(comma-separated for several people)."
                )
        else:  # bridge: writing event files is the delivery, so the events dir must exist
            try:
                self.events_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                out.append(
                    f"CC_TELEGRAM_EVENTS_DIR ({self.events_dir}) cannot be created: {exc.strerror or exc}. "
                    "Point it to a directory this user can write."
                )
        return out


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean: use true or false.")


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number: use a positive number.") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigurationError(f"{name}={raw!r} must be a positive, finite number.")
    return value


def _users(raw: str) -> tuple[int, ...]:
    users: list[int] = []
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        try:
            users.append(int(item))
        except ValueError:
            raise ConfigurationError(
                f"TELEGRAM_ALLOWED_USERS contains {item!r}, which is not a numeric Telegram user id: "
                "use comma-separated integers such as 123456789,987654321."
            ) from None
    return tuple(dict.fromkeys(users))


def _url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ConfigurationError(f"{name}={raw!r} is not an http(s) URL.")
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in allowed:
        raise ConfigurationError(f"{name}={raw!r} is not allowed: use one of {', '.join(allowed)}.")
    return value


def _path(raw: str) -> Path:
    return Path(os.path.expanduser(raw.strip()))


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number: use {low}..{high}.") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name}={raw!r} is out of range: use {low}..{high}.")
    return value


def _http_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """CCTG_HTTP_*, CCTG_TOOL_RATE_LIMIT and CCTG_OUTBOX_MAX_PENDING/_BYTES (hardening settings)."""
    host = env.get("CCTG_HTTP_HOST", "127.0.0.1").strip()
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ConfigurationError(f"CCTG_HTTP_HOST={host!r} is not a host name or IP address.")
    token = env.get("CCTG_HTTP_TOKEN", "").strip()
    if token and (len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token)):
        # Never echo the value.
        raise ConfigurationError(
            "CCTG_HTTP_TOKEN is too weak or malformed: use at least 16 printable characters without "
            "spaces (for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )
    raw_rate = env.get("CCTG_TOOL_RATE_LIMIT", "120").strip()
    rate = 0.0 if raw_rate in ("0", "0.0", "off") else _positive_float("CCTG_TOOL_RATE_LIMIT", raw_rate)
    return {
        "http_host": host,
        "http_port": _int("CCTG_HTTP_PORT", env.get("CCTG_HTTP_PORT", "8765"), 0, 65535),
        "http_token": SecretStr(token) if token else None,
        "tool_rate_limit": rate,
        "outbox_max_pending": _int(
            "CCTG_OUTBOX_MAX_PENDING", env.get("CCTG_OUTBOX_MAX_PENDING", "100000"), 1, 1_000_000_000
        ),
        "outbox_max_bytes": _int(
            "CCTG_OUTBOX_MAX_BYTES", env.get("CCTG_OUTBOX_MAX_BYTES", str(256 * 1024 * 1024)), 1024, 2**40
        ),
    }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment (``os.environ`` when not given)."""
    env = dict(os.environ if environ is None else environ)
    sources = tuple(sorted(k for k in env if k.startswith(("TELEGRAM_", "CCTG_", "CC_TELEGRAM_"))))

    token = env.get("TELEGRAM_BOT_TOKEN", "").strip() or None
    if token is not None and (":" not in token or any(c.isspace() for c in token)):
        # Never echo the value: it may be a real token with a typo.
        raise ConfigurationError(
            "TELEGRAM_BOT_TOKEN does not look like a bot token (expected '<digits>:<secret>' as given by @BotFather)."
        )
    users = _users(env.get("TELEGRAM_ALLOWED_USERS", ""))
    base_url = _url("TELEGRAM_API_BASE_URL", env.get("TELEGRAM_API_BASE_URL", DEFAULT_API_BASE_URL))
    data_dir = _path(env.get("CCTG_DATA_DIR", "~/.cc_telegram"))
    default_delivery = "telegram" if token else "bridge"
    delivery = _choice("CCTG_DELIVERY", env.get("CCTG_DELIVERY", default_delivery), ("telegram", "bridge"))
    environment = _choice(
        "CCTG_ENVIRONMENT", env.get("CCTG_ENVIRONMENT", "production"), ("development", "staging", "production")
    )
    config_path = _path(env["CCTG_CONFIG"]) if env.get("CCTG_CONFIG", "").strip() else None
    events_dir = _path(env.get("CC_TELEGRAM_EVENTS_DIR", str(data_dir / "events")))
    responses_dir = _path(env.get("CC_TELEGRAM_RESPONSES_DIR", str(data_dir / "responses")))
    health_url = _url(
        "CC_TELEGRAM_BRIDGE_HEALTH_URL", env.get("CC_TELEGRAM_BRIDGE_HEALTH_URL", DEFAULT_BRIDGE_HEALTH_URL)
    )
    bridge_path = _path(env["CC_TELEGRAM_BRIDGE_PATH"]) if env.get("CC_TELEGRAM_BRIDGE_PATH", "").strip() else None
    pacing = PacingSettings(
        per_chat_per_second=_positive_float("CCTG_RATE_PER_CHAT", env.get("CCTG_RATE_PER_CHAT", "1")),
        per_chat_burst=int(_positive_float("CCTG_RATE_PER_CHAT_BURST", env.get("CCTG_RATE_PER_CHAT_BURST", "3"))),
        global_per_second=_positive_float("CCTG_RATE_GLOBAL", env.get("CCTG_RATE_GLOBAL", "30")),
        group_per_minute=_positive_float("CCTG_RATE_GROUP_PER_MINUTE", env.get("CCTG_RATE_GROUP_PER_MINUTE", "20")),
    )
    lease_seconds = _positive_float("CCTG_LEASE_SECONDS", env.get("CCTG_LEASE_SECONDS", "120"))
    if lease_seconds < 5:
        raise ConfigurationError(f"CCTG_LEASE_SECONDS={lease_seconds:g} is too short: use at least 5 seconds.")
    http = _http_settings(env)
    return Settings(
        **http,
        telegram_bot_token=SecretStr(token) if token else None,
        allowed_users=users,
        api_base_url=base_url,
        data_dir=data_dir,
        delivery=delivery,  # type: ignore[arg-type]
        environment=environment,  # type: ignore[arg-type]
        config_path=config_path,
        events_dir=events_dir,
        responses_dir=responses_dir,
        bridge_health_url=health_url,
        bridge_path=bridge_path,
        pacing=pacing,
        lease_seconds=lease_seconds,
        sources=sources,
    )
