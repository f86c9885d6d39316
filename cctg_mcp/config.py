"""Settings: the one place that reads the environment.

One ``pydantic-settings`` model, ``Settings``: every variable is ``CCTG_<FIELD>``, and the
seed's names (``TELEGRAM_BOT_TOKEN``, ``CC_TELEGRAM_EVENTS_DIR``, ...) stay accepted as
aliases (the ``CCTG_`` name wins when both are set). ``load_settings(environ)`` reads a given
mapping (``os.environ`` when not given). A malformed value raises ``ConfigurationError`` naming
the variable that was read and what is allowed, in one style; nothing falls back silently.
A missing token is *not* an error here: the server still starts, lists its tools and reports
"not configured" from them. Booleans and durations use ``resilience.units`` (one parser each;
``CCTG_LEASE_SECONDS=2m`` works). The resilience variables of the seed (``CIRCUIT_BREAKER_*``,
``HEALTH_CHECK_*``, ...) are read by ``resilience.config_env`` with the same parsers.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from cctg_mcp.resilience.config_tables import Environment
from cctg_mcp.resilience.errors import ConfigurationError
from cctg_mcp.resilience.units import parse_bool, parse_duration
from cctg_mcp.transports.api import DEFAULT_BASE_URL

Delivery = Literal["telegram", "bridge"]

DEFAULT_BRIDGE_HEALTH_URL = "http://localhost:8080/health"
#: Prefixes of the variables this server reads (``sources`` lists those that were set).
PREFIXES = ("TELEGRAM_", "CCTG_", "CC_TELEGRAM_")

#: Where state lives unless ``CCTG_DATA_DIR`` says otherwise (the CCTelegram bridge's own dir).
DEFAULT_DATA_DIR = Path("~/.cc_telegram")


class PacingSettings(BaseModel):
    """Telegram's flood limits (Bot FAQ; not contractual, so configurable)."""

    model_config = ConfigDict(frozen=True)

    per_chat_per_second: float = 1.0
    per_chat_burst: int = 3
    global_per_second: float = 30.0
    group_per_minute: float = 20.0


# ---- value parsers: each raises ValueError("<what is wrong>: use <what is allowed>").
def _token(raw: Any) -> SecretStr | None:
    value = (raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw or "")).strip()
    if not value:
        return None
    if ":" not in value or any(c.isspace() for c in value):
        raise ValueError("does not look like a bot token (expected '<digits>:<secret>' as given by @BotFather)")
    return SecretStr(value)


def _users(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, list | tuple):
        return tuple(dict.fromkeys(int(x) for x in raw))
    users: list[int] = []
    for part in str(raw).split(","):
        item = part.strip()
        if not item:
            continue
        try:
            users.append(int(item))
        except ValueError:
            raise ValueError(
                f"contains {item!r}, which is not a numeric Telegram user id: "
                "use comma-separated integers such as 123456789,987654321"
            ) from None
    return tuple(dict.fromkeys(users))


def _url(raw: Any) -> str:
    value = str(raw).strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("is not an http(s) URL")
    return value


def _choice(*allowed: str) -> BeforeValidator:
    def check(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in allowed:
            raise ValueError(f"is not allowed: use one of {', '.join(allowed)}")
        return value

    return BeforeValidator(check)


def parse_path(raw: Any) -> Path | None:
    """A path variable: blank is unset, ``~`` expanded (the settings' and ``setup``'s one reading)."""
    value = str(raw).strip() if raw is not None else ""
    return Path(os.path.expanduser(value)) if value else None


def _positive(raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("is not a number: use a positive number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive, finite number")
    return value


def _rate_limit(raw: Any) -> float:
    return 0.0 if str(raw).strip().lower() in ("0", "0.0", "off") else _positive(raw)


def _whole(low: int, high: int) -> BeforeValidator:
    def check(raw: Any) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"is not a whole number: use {low}..{high}") from None
        if not low <= value <= high:
            raise ValueError(f"is out of range: use {low}..{high}")
        return value

    return BeforeValidator(check)


def _lease(raw: Any) -> float:
    seconds = parse_duration(raw, "s")
    if seconds < 5:
        raise ValueError("is too short: use at least 5 seconds")
    return seconds


def _http_seconds(raw: Any) -> float:
    seconds = parse_duration(raw, "s")
    if not 0.1 <= seconds <= 86400:
        raise ValueError("is out of range: use 100ms..24h")
    return seconds


def _server_wait(raw: Any) -> float:
    seconds = parse_duration(raw, "s")
    if not 1 <= seconds <= 7 * 86400:
        raise ValueError("is out of range: use 1s..7d")
    return seconds


def _host(raw: Any) -> str:
    host = str(raw).strip()
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise ValueError("is not a host name or IP address")
    return host


def _http_token(raw: Any) -> SecretStr | None:
    value = (raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw or "")).strip()
    if not value:
        return None
    if len(value) < 16 or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(
            "is too weak or malformed: use at least 16 printable characters without spaces (for example "
            "the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return SecretStr(value)


def _redis_url(raw: Any) -> SecretStr | None:
    value = (raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw or "")).strip()
    if not value:
        return None
    if not value.startswith(("redis://", "rediss://", "unix://")) or len(value) < 10:
        raise ValueError("is not a Redis URL: use redis://host:6379/0 (rediss:// for TLS, unix:// for a socket)")
    return SecretStr(value)


def _names(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(dict.fromkeys(str(x).strip().lower() for x in items if str(x).strip()))


_TOOL_NAME = re.compile(r"[A-Za-z0-9_*?.\-]{1,200}")


def _tool_names(raw: Any) -> tuple[str, ...]:
    """Comma-separated tool names, case kept (``Read,Grep,mcp__github__*``)."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    names = [str(x).strip() for x in items if str(x).strip()]
    for name in names:
        if not _TOOL_NAME.fullmatch(name):
            raise ValueError(
                f"contains {name!r}, which is not a tool name: use comma-separated names such as Read,Grep,Glob "
                "(letters, digits, _ - . and the wildcards * ?)"
            )
    return tuple(dict.fromkeys(names))


def _permission_timeout(raw: Any) -> float:
    seconds = parse_duration(raw, "s")
    if not 0 < seconds <= 86_400:
        raise ValueError("is out of range: use more than 0 and at most 86400 seconds (1d)")
    return seconds


def _env(*names: str) -> Any:
    """An optional field and the variables it reads, in priority order (``CCTG_`` name first)."""
    return Field(None, validation_alias=AliasChoices(*names))


#: Values whose text is never echoed in an error.
_SECRETS = frozenset({"telegram_bot_token", "http_token", "redis_url", "redis_password"})
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("cctg_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading the mapping ``load_settings`` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        return parse_env_vars(
            os.environ if environ is None else environ,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )


class Settings(BaseSettings):
    """The server's settings, validated; build with ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix="CCTG_",
        case_sensitive=True,
        env_ignore_empty=True,
        enable_decoding=False,
        frozen=True,
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    telegram_bot_token: Annotated[SecretStr | None, BeforeValidator(_token)] = _env(
        "CCTG_TELEGRAM_BOT_TOKEN", "TELEGRAM_BOT_TOKEN"
    )
    allowed_users: Annotated[tuple[int, ...], BeforeValidator(_users)] = Field(
        (), validation_alias=AliasChoices("CCTG_ALLOWED_USERS", "TELEGRAM_ALLOWED_USERS")
    )
    api_base_url: Annotated[str, BeforeValidator(_url)] = Field(
        DEFAULT_BASE_URL, validation_alias=AliasChoices("CCTG_API_BASE_URL", "TELEGRAM_API_BASE_URL")
    )
    data_dir: Annotated[Path, BeforeValidator(parse_path)] = Field(
        DEFAULT_DATA_DIR, validation_alias=AliasChoices("CCTG_DATA_DIR")
    )
    #: Default ``telegram``, also without a token (then "not configured"): bridge delivery only
    #: when asked for, never a silent switch to writing files nobody may read.
    delivery: Annotated[Delivery, _choice("telegram", "bridge")] = Field(
        "telegram", validation_alias=AliasChoices("CCTG_DELIVERY")
    )
    environment: Annotated[Environment, _choice("development", "staging", "production")] = Field(
        "production", validation_alias=AliasChoices("CCTG_ENVIRONMENT")
    )
    config_path: Annotated[Path | None, BeforeValidator(parse_path)] = _env("CCTG_CONFIG")
    events_dir: Annotated[Path, BeforeValidator(parse_path)] = Field(
        default_factory=lambda data: data["data_dir"] / "events",
        validation_alias=AliasChoices("CCTG_EVENTS_DIR", "CC_TELEGRAM_EVENTS_DIR"),
    )
    responses_dir: Annotated[Path, BeforeValidator(parse_path)] = Field(
        default_factory=lambda data: data["data_dir"] / "responses",
        validation_alias=AliasChoices("CCTG_RESPONSES_DIR", "CC_TELEGRAM_RESPONSES_DIR"),
    )
    bridge_health_url: Annotated[str, BeforeValidator(_url)] = Field(
        DEFAULT_BRIDGE_HEALTH_URL,
        validation_alias=AliasChoices("CCTG_BRIDGE_HEALTH_URL", "CC_TELEGRAM_BRIDGE_HEALTH_URL"),
    )
    #: The CCTelegram bridge executable; None: ``cctelegram-bridge`` on PATH.
    bridge_path: Annotated[Path | None, BeforeValidator(parse_path)] = _env(
        "CCTG_BRIDGE_PATH", "CC_TELEGRAM_BRIDGE_PATH"
    )
    rate_per_chat: Annotated[float, BeforeValidator(_positive)] = Field(1.0, validation_alias="CCTG_RATE_PER_CHAT")
    #: Messages a chat may take at once before the per-chat rate applies (a whole number >= 1).
    rate_per_chat_burst: Annotated[int, _whole(1, 1000)] = Field(3, validation_alias="CCTG_RATE_PER_CHAT_BURST")
    rate_global: Annotated[float, BeforeValidator(_positive)] = Field(30.0, validation_alias="CCTG_RATE_GLOBAL")
    rate_group_per_minute: Annotated[float, BeforeValidator(_positive)] = Field(
        20.0, validation_alias="CCTG_RATE_GROUP_PER_MINUTE"
    )
    #: Seconds a claimed delivery stays leased (>= 5; units accepted: ``2m``): after a crash
    #: (SIGKILL) its rows go back to the queue once this runs out.
    lease_seconds: Annotated[float, BeforeValidator(_lease)] = Field(120.0, validation_alias="CCTG_LEASE_SECONDS")
    #: Longest wait a server may dictate (a 429's ``retry_after``): longer ones are capped to
    #: this and logged, and no stored due time lies further ahead (units accepted: ``1h``).
    max_server_wait: Annotated[float, BeforeValidator(_server_wait)] = Field(
        3600.0, validation_alias="CCTG_MAX_SERVER_WAIT"
    )
    #: Streamable HTTP transport (``serve --transport http``): bind address, port, and the
    #: bearer token clients must send (required to bind anything but loopback).
    http_host: Annotated[str, BeforeValidator(_host)] = Field("127.0.0.1", validation_alias="CCTG_HTTP_HOST")
    http_port: Annotated[int, _whole(0, 65535)] = Field(8765, validation_alias="CCTG_HTTP_PORT")
    http_token: Annotated[SecretStr | None, BeforeValidator(_http_token)] = _env("CCTG_HTTP_TOKEN")
    #: HTTP abuse bounds: seconds a connection may take to send its request headers; sessions
    #: one client (bearer token and address) may hold open; seconds an idle session lives.
    http_header_timeout: Annotated[float, BeforeValidator(_http_seconds)] = Field(
        10.0, validation_alias="CCTG_HTTP_HEADER_TIMEOUT"
    )
    http_sessions_per_client: Annotated[int, _whole(1, 10_000)] = Field(
        16, validation_alias="CCTG_HTTP_MAX_SESSIONS_PER_CLIENT"
    )
    http_session_idle: Annotated[float, BeforeValidator(_http_seconds)] = Field(
        600.0, validation_alias="CCTG_HTTP_SESSION_IDLE"
    )
    #: Tool calls per minute per client, not per session (0 or ``off`` turns the limit off).
    tool_rate_limit: Annotated[float, BeforeValidator(_rate_limit)] = Field(
        120.0, validation_alias="CCTG_TOOL_RATE_LIMIT"
    )
    #: Most deliveries waiting in the outbox; past it sends are refused.
    outbox_max_pending: Annotated[int, _whole(1, 1_000_000_000)] = Field(
        100_000, validation_alias="CCTG_OUTBOX_MAX_PENDING"
    )
    #: Most bytes of event payload waiting; past it sends are refused.
    outbox_max_bytes: Annotated[int, _whole(1024, 2**40)] = Field(
        256 * 1024 * 1024, validation_alias="CCTG_OUTBOX_MAX_BYTES"
    )
    #: Tool sets to list (``server.toolsets``); empty: the default for the delivery and environment.
    toolsets: Annotated[tuple[str, ...], BeforeValidator(_names)] = Field((), validation_alias="CCTG_TOOLSETS")
    #: List only the tools that change nothing (readOnlyHint).
    read_only: Annotated[bool, BeforeValidator(parse_bool)] = Field(False, validation_alias="CCTG_READ_ONLY")
    #: permission_prompt: how long to wait for Allow / Deny (units accepted: ``2m``), the tools
    #: allowed and denied without asking (names or shell wildcards such as ``mcp__github__*``).
    permission_timeout: Annotated[float, BeforeValidator(_permission_timeout)] = Field(
        120.0, validation_alias="CCTG_PERMISSION_TIMEOUT"
    )
    permission_auto_allow: Annotated[tuple[str, ...], BeforeValidator(_tool_names)] = Field(
        (), validation_alias="CCTG_PERMISSION_AUTO_ALLOW"
    )
    permission_deny: Annotated[tuple[str, ...], BeforeValidator(_tool_names)] = Field(
        (), validation_alias="CCTG_PERMISSION_DENY"
    )
    #: Coordination across machines through Redis (``redis://``, ``rediss://`` for TLS); unset:
    #: the processes of one machine coordinate over the data dir. The password may be in the
    #: URL or in ``CCTG_REDIS_PASSWORD``.
    redis_url: Annotated[SecretStr | None, BeforeValidator(_redis_url)] = _env("CCTG_REDIS_URL")
    redis_password: SecretStr | None = _env("CCTG_REDIS_PASSWORD")
    #: Variables that were read, for ``cctg-mcp check`` and the status tool (no secrets).
    sources: tuple[str, ...] = Field((), exclude=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _MappingEnvSource(settings_cls))

    @property
    def pacing(self) -> PacingSettings:
        return PacingSettings(
            per_chat_per_second=self.rate_per_chat,
            per_chat_burst=self.rate_per_chat_burst,
            global_per_second=self.rate_global,
            group_per_minute=self.rate_group_per_minute,
        )

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def token(self) -> str:
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else ""

    def recipients(self) -> list[int]:
        """Who each event is queued for: one event file in bridge mode (the bridge fans out to
        its allowed users), else one row per allowed user."""
        return [0] if self.delivery == "bridge" else list(self.allowed_users)

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


def _variables(field: str) -> tuple[str, ...]:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (str(alias),) if alias else (f"CCTG_{field.upper()}",)


def _configuration_error(exc: ValidationError, env: Mapping[str, str]) -> ConfigurationError:
    """The first problem, as ``NAME='value' <what is wrong>: use <what is allowed>.``"""
    err = exc.errors(include_url=False)[0]
    loc = str(err["loc"][0]) if err["loc"] else ""
    field = next((name for name in Settings.model_fields if loc == name or loc in _variables(name)), loc)
    names = _variables(field) if field in Settings.model_fields else (loc,)
    var = next((name for name in names if env.get(name, "").strip()), names[0])
    ctx = err.get("ctx") or {}
    reason = str(ctx["error"]) if "error" in ctx else str(err["msg"])
    if field in _SECRETS:  # never echo the value: it may be a real secret with a typo
        return ConfigurationError(f"{var} {reason}.")
    return ConfigurationError(f"{var}={env.get(var, '')!r} {reason}.")


#: The values of the seed's ``NODE_ENV`` we take as the environment (others, e.g. ``test``, are ignored).
NODE_ENVIRONMENTS = ("development", "staging", "production")


def with_node_env(env: dict[str, str]) -> dict[str, str]:
    """The seed read ``NODE_ENV``: it sets the environment when ``CCTG_ENVIRONMENT`` is unset
    (and is one of development/staging/production); the default stays production."""
    if env.get("CCTG_ENVIRONMENT", "").strip():
        return env
    node = env.get("NODE_ENV", "").strip().lower()
    if node in NODE_ENVIRONMENTS:
        return {**env, "CCTG_ENVIRONMENT": node}
    if node:
        logging.getLogger(__name__).warning(
            "NODE_ENV=%r is not development, staging or production: ignored (the environment stays production; "
            "set CCTG_ENVIRONMENT)",
            node[:40],
        )
    return env


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment (``os.environ`` when not given)."""
    env = with_node_env(dict(os.environ if environ is None else environ))
    sources = tuple(sorted(k for k in env if k.startswith(PREFIXES)))
    reset = _ENVIRON.set(env)
    try:
        init: dict[str, Any] = {"sources": sources}  # the rest comes from the environment source
        return Settings(**init)
    except ValidationError as exc:
        raise _configuration_error(exc, env) from None
    finally:
        _ENVIRON.reset(reset)
