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
from typing import Literal

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
    pacing: PacingSettings = PacingSettings()
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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment (``os.environ`` when not given)."""
    env = dict(os.environ if environ is None else environ)
    sources = tuple(sorted(k for k in env if k.startswith(("TELEGRAM_", "CCTG_", "CC_TELEGRAM_"))))

    token = env.get("TELEGRAM_BOT_TOKEN", "").strip() or None
    if token is not None and (":" not in token or any(c.isspace() for c in token)):
        # Never echo the value: it may be a real token with a typo.
        raise ConfigurationError(
            "TELEGRAM_BOT_TOKEN does not look like a bot token (expected '<digits>:<secret>' "
            "as given by @BotFather)."
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
    pacing = PacingSettings(
        per_chat_per_second=_positive_float("CCTG_RATE_PER_CHAT", env.get("CCTG_RATE_PER_CHAT", "1")),
        per_chat_burst=int(_positive_float("CCTG_RATE_PER_CHAT_BURST", env.get("CCTG_RATE_PER_CHAT_BURST", "3"))),
        global_per_second=_positive_float("CCTG_RATE_GLOBAL", env.get("CCTG_RATE_GLOBAL", "30")),
        group_per_minute=_positive_float("CCTG_RATE_GROUP_PER_MINUTE", env.get("CCTG_RATE_GROUP_PER_MINUTE", "20")),
    )
    return Settings(
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
        pacing=pacing,
        sources=sources,
    )
