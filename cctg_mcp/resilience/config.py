"""Resilience configuration in the seed's shape (``createDefaultResilienceConfig``), with loaders.

Durations are MILLISECONDS, as in the seed; ``seconds(field)``, ``to_breaker_kwargs()``,
``to_retry_kwargs()`` and ``timeout_for()`` give seconds. Keys are accepted in camelCase and
snake_case; ``model_dump(by_alias=True)`` gives the seed's camelCase shape. Unknown keys are
errors. Any partial mapping deep-merges over ``DEFAULTS`` (mappings merge, lists replace).

Precedence in ``load_resilience_config``: defaults < file (JSON/TOML) < environment variables
(``config_env``, which lists how they differ from the seed's ``createResilienceConfigFromEnv``).
``DEFAULTS`` and the value sets live in ``config_tables``; both are re-exported here.

Further differences from the seed: an event may use the seed's ``retryConfig`` key (dumped as
``retry``); an operation/event ``baseDelay`` override above the component's ``maxDelay``
(without its own ``maxDelay``) raises that operation's ``maxDelay`` to its ``baseDelay``.

``breaker_for`` / ``retry_for`` validate a fresh model (~40 us): build policies once, not per send.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from cctg_mcp.resilience.config_env import ENV_SPEC as ENV_SPEC
from cctg_mcp.resilience.config_env import ENV_VARS as ENV_VARS
from cctg_mcp.resilience.config_env import env_overrides as env_overrides
from cctg_mcp.resilience.config_tables import COMPONENTS as COMPONENTS
from cctg_mcp.resilience.config_tables import DEFAULTS as DEFAULTS
from cctg_mcp.resilience.config_tables import Backoff as Backoff
from cctg_mcp.resilience.config_tables import Component as Component
from cctg_mcp.resilience.config_tables import Environment as Environment
from cctg_mcp.resilience.config_tables import Priority as Priority
from cctg_mcp.resilience.errors import ConfigurationError, Severity
from cctg_mcp.resilience.retry import SEED_SEVERITY_ATTEMPTS

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0, le=1)]


def _rule(field: str, rule: str) -> PydanticCustomError:
    return PydanticCustomError("config_rule", "{field} {rule}", {"field": field, "rule": rule})


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def seconds(self, field: str) -> float:
        """A millisecond field (snake_case name) in seconds."""
        return float(getattr(self, field)) / 1000.0


class CircuitBreakerConfig(_Model):
    """A component's circuit breaker settings (milliseconds, as in the seed)."""

    enabled: bool = True
    failure_threshold: PosInt = 5
    success_threshold: PosInt = 3
    timeout: PosInt = 30_000  # open duration, ms
    monitoring_window: PosInt = 60_000
    max_concurrent_requests: PosInt = 10
    volume_threshold: NonNegInt = 5
    failure_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    half_open_max_calls: PosInt = 1

    def to_breaker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``breaker.BreakerSettings`` (seconds)."""
        return {
            "enabled": self.enabled,
            "failure_threshold": self.failure_threshold,
            "success_threshold": self.success_threshold,
            "open_timeout": self.seconds("timeout"),
            "monitoring_window": self.seconds("monitoring_window"),
            "failure_ratio": self.failure_ratio,
            "minimum_throughput": self.volume_threshold,
            "max_concurrent": self.max_concurrent_requests,
            "half_open_max_calls": self.half_open_max_calls,
        }


class RetryConfig(_Model):
    """A component's retry settings (milliseconds, as in the seed)."""

    enabled: bool = True
    max_attempts: PosInt = 3
    base_delay: PosInt = 1000
    max_delay: PosInt = 10_000
    exponential_base: Annotated[float, Field(gt=0)] = 2.0
    jitter_enabled: bool = True
    jitter_max: NonNegInt = 500
    backoff: Backoff = "exponential"
    retryable_errors: list[str] = Field(default_factory=list)
    non_retryable_errors: list[str] = Field(default_factory=list)
    # Attempts by error severity (the seed's getDefaultMaxAttempts), never above maxAttempts.
    attempts_by_severity: dict[Severity, PosInt] = Field(
        default_factory=lambda: {Severity(k): v for k, v in SEED_SEVERITY_ATTEMPTS.items()}
    )

    @model_validator(mode="after")
    def _check(self) -> RetryConfig:
        if self.max_delay < self.base_delay:
            raise _rule("maxDelay", f"must be >= baseDelay ({self.max_delay} < {self.base_delay})")
        if self.backoff == "exponential" and self.exponential_base <= 1:
            raise _rule("exponentialBase", f"must be > 1 for exponential backoff ({self.exponential_base})")
        return self

    def to_retry_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``retry.RetryPolicy`` (seconds; ``backoff`` is the BackoffKind
        value). A disabled retry config means a single attempt."""
        return {
            "max_attempts": self.max_attempts if self.enabled else 1,
            "base_delay": self.seconds("base_delay"),
            "max_delay": self.seconds("max_delay"),
            "exponential_base": self.exponential_base,
            "backoff": self.backoff,
            "jitter": self.jitter_enabled,
            "jitter_max": self.seconds("jitter_max"),
            "retryable_codes": frozenset(self.retryable_errors),
            "non_retryable_codes": frozenset(self.non_retryable_errors),
            "severity_attempts": {k.value: v for k, v in self.attempts_by_severity.items()},
        }


class CircuitBreakerOverride(_Model):
    """One operation's changes to its component's circuit breaker settings."""

    enabled: bool | None = None
    failure_threshold: PosInt | None = None
    success_threshold: PosInt | None = None
    timeout: PosInt | None = None
    monitoring_window: PosInt | None = None
    max_concurrent_requests: PosInt | None = None
    volume_threshold: NonNegInt | None = None
    failure_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    half_open_max_calls: PosInt | None = None


class RetryOverride(_Model):
    """One operation's changes to its component's retry settings."""

    enabled: bool | None = None
    max_attempts: PosInt | None = None
    base_delay: PosInt | None = None
    max_delay: PosInt | None = None
    exponential_base: Annotated[float, Field(gt=0)] | None = None
    jitter_enabled: bool | None = None
    jitter_max: NonNegInt | None = None
    backoff: Backoff | None = None
    retryable_errors: list[str] | None = None
    non_retryable_errors: list[str] | None = None
    attempts_by_severity: dict[Severity, PosInt] | None = None


class HealthEndpoint(_Model):
    """An extra HTTP endpoint the health monitor checks."""

    name: Annotated[str, Field(min_length=1)]
    url: Annotated[str, Field(pattern=r"^https?://")]
    method: Literal["GET", "POST", "HEAD"] = "GET"
    timeout: PosInt = 3000
    retries: NonNegInt = 0
    headers: dict[str, str] = Field(default_factory=dict)
    expected_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200])
    critical: bool = False


class HealthConfig(_Model):
    """How often and how strictly the health monitor checks each component."""

    enabled: bool = True
    interval: PosInt = 30_000
    timeout: PosInt = 5000
    failure_threshold: PosInt = 3
    recovery_threshold: PosInt = 2
    grace_period: NonNegInt = 10_000
    endpoints: list[HealthEndpoint] = Field(default_factory=list)


class AlertThresholds(_Model):
    """The metric levels that raise an alert."""

    error_rate: Ratio = 0.1
    response_time: PosInt = 5000
    memory_usage: Ratio = 0.8
    cpu_usage: Ratio = 0.8


class Retention(_Model):
    """How long metrics history, finished events and logs are kept (milliseconds)."""

    metrics: PosInt = 86_400_000
    events: PosInt = 604_800_000
    logs: PosInt = 259_200_000


def _exposition_path(raw: Any) -> Any:
    """The seed gave a URL (``http://localhost:9090/metrics``); its path is what is served."""
    if isinstance(raw, str) and raw.startswith(("http://", "https://")):
        return urlsplit(raw).path or "/metrics"
    return raw


class PrometheusConfig(_Model):
    """Whether and where metrics are served in the Prometheus text format."""

    enabled: bool = False
    #: The path the exposition is served at (a URL is accepted; its path is used).
    endpoint: Annotated[str, BeforeValidator(_exposition_path), Field(pattern=r"^/[^\s?#]*$")] = "/metrics"
    #: 9464, the Prometheus exporters' convention (9090 is Prometheus's own port).
    port: Annotated[int, Field(ge=1, le=65535)] = 9464
    interval: PosInt = 15_000


class MonitoringConfig(_Model):
    """Metrics sampling, alert thresholds, retention and Prometheus exposition."""

    enabled: bool = True
    metrics_interval: PosInt = 10_000
    alert_thresholds: AlertThresholds = Field(default_factory=AlertThresholds)
    retention: Retention = Field(default_factory=Retention)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)


class BackupStrategy(_Model):
    """A fallback the recovery manager may try, in priority order."""

    name: Annotated[str, Field(min_length=1)]
    priority: NonNegInt  # lower = tried first
    enabled: bool = True
    timeout: PosInt = 5000
    max_attempts: PosInt = 1
    conditions: list[str] = Field(default_factory=list)


class RecoveryConfig(_Model):
    """Whether recovery runs on its own, how often it retries, and when it escalates."""

    enabled: bool = True
    auto_recovery_enabled: bool = True
    max_recovery_attempts: NonNegInt = 5
    recovery_delay: NonNegInt = 5000
    escalation_threshold: PosInt = 3
    graceful_shutdown_timeout: PosInt = 30_000
    restart_delay: NonNegInt = 2000
    backup_strategies: list[BackupStrategy] = Field(default_factory=list)


class OperationConfig(_Model):
    """One operation's priority, timeout and changes to its component's settings."""

    priority: Priority = "normal"
    timeout: PosInt = 10_000
    circuit_breaker: CircuitBreakerOverride | None = None
    # The seed's events spell it ``retryConfig``; both are accepted, dumped as ``retry``.
    retry: RetryOverride | None = Field(
        default=None, validation_alias=AliasChoices("retry", "retryConfig", "retry_config")
    )


def _apply(base: _Model, override: _Model | None) -> Any:
    if override is None:
        return base
    update = override.model_dump(exclude_none=True)
    if isinstance(base, RetryConfig) and "max_delay" not in update:
        update["max_delay"] = max(base.max_delay, update.get("base_delay", 0))
    return type(base).model_validate({**base.model_dump(), **update})


class ResilienceConfig(_Model):
    """The whole resilience configuration: breakers, retries, health, monitoring, recovery."""

    enabled: bool = True
    environment: Environment = "production"
    # Filled from DEFAULTS by the merge in ``_merge_defaults``; a partial input keeps the rest.
    circuit_breaker: dict[Component, CircuitBreakerConfig] = Field(default_factory=dict)
    retry: dict[Component, RetryConfig] = Field(default_factory=dict)
    health: HealthConfig = Field(default_factory=HealthConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    operations: dict[str, OperationConfig] = Field(default_factory=dict)
    events: dict[str, OperationConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any) -> Any:
        return deep_merge(DEFAULTS, normalize_keys(cls, data)) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _check_overrides(self) -> ResilienceConfig:
        for section, table in (("operations", self.operations), ("events", self.events)):
            for name, op in table.items():
                for comp in COMPONENTS:
                    try:
                        _apply(self.retry[comp], op.retry)
                        _apply(self.circuit_breaker[comp], op.circuit_breaker)
                    except ValidationError as exc:
                        problem = "; ".join(describe_errors(exc))
                        raise _rule(f"{section}.{name}", f"is invalid for {comp}: {problem}") from None
        return self

    def _ops(self, operation: str | None, event_type: str | None) -> list[OperationConfig]:
        found = [self.operations.get(operation or ""), self.events.get(event_type or "")]
        return [op for op in found if op is not None]

    def _effective(self, section: str, component: str, operation: str | None, event_type: str | None) -> Any:
        if component not in COMPONENTS:
            raise ConfigurationError(f"unknown component {component!r} (known: {', '.join(COMPONENTS)})")
        result = getattr(self, section)[component]
        try:
            for op in self._ops(operation, event_type):
                result = _apply(result, getattr(op, section))
        except ValidationError as exc:  # only an operation + event pair can get here
            where = f"{component}/{operation}/{event_type}"
            raise ConfigurationError(f"{where}: " + "; ".join(describe_errors(exc))) from None
        return result

    def breaker_for(
        self, component: str, operation: str | None = None, event_type: str | None = None
    ) -> CircuitBreakerConfig:
        """The component's breaker with the operation's, then the event's, overrides applied."""
        result: CircuitBreakerConfig = self._effective("circuit_breaker", component, operation, event_type)
        return result

    def retry_for(self, component: str, operation: str | None = None, event_type: str | None = None) -> RetryConfig:
        """The component's retry with the operation's, then the event's, overrides applied."""
        result: RetryConfig = self._effective("retry", component, operation, event_type)
        return result

    def timeout_for(self, operation: str | None = None, event_type: str | None = None) -> float:
        """Seconds: the event's timeout, else the operation's, else OperationConfig's default."""
        ops = self._ops(operation, event_type)
        return (ops[-1] if ops else OperationConfig()).seconds("timeout")

    def priority_for(self, operation: str | None = None, event_type: str | None = None) -> Priority:
        ops = self._ops(operation, event_type)
        return (ops[-1] if ops else OperationConfig()).priority


# ---- key normalisation, merging, error messages ----
@functools.cache
def _keys(model: type[BaseModel]) -> dict[str, tuple[str, Any]]:
    keys: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        entry = (info.alias or name, info.annotation)
        choices = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else []
        for key in (name, info.alias or name, *choices):
            keys[str(key)] = entry
    return keys


def _normalize_value(annotation: Any, value: Any) -> Any:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _normalize_value(inner[0], value) if len(inner) == 1 else value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return normalize_keys(annotation, value)
    if origin is dict and isinstance(value, Mapping):
        return {k: _normalize_value(args[1], v) for k, v in value.items()}
    if origin is list and isinstance(value, list):
        return [_normalize_value(args[0], v) for v in value]
    return value


def normalize_keys(model: type[BaseModel], data: Any) -> Any:
    """Rewrite snake_case (and other accepted) keys to the camelCase aliases, recursively by schema.
    Unknown keys are kept, so that ``extra="forbid"`` reports them with their path."""
    if not isinstance(data, Mapping):
        return data
    keys, out = _keys(model), {}
    for key, value in data.items():
        if key not in keys:
            out[key] = value
            continue
        alias, annotation = keys[key]
        if alias in out:
            raise _rule(str(key), f"is given twice (as {alias!r} and {key!r})")
        out[alias] = _normalize_value(annotation, value)
    return out


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key; anything else in ``override`` replaces (lists included)."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = copy.deepcopy(dict(base))
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


_KNOWN_KEYS = sorted({k for m in _Model.__subclasses__() for k in _keys(m)})
_OPS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than_equal": ("le", "<=")}


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per error, naming the key path: "retry.bridge.baseDelay must be > 0 (got 0)"."""
    lines = []
    for err in exc.errors():
        path = [str(p) for p in err["loc"] if p != "[key]"]
        ctx, kind, got = err.get("ctx") or {}, err["type"], f" (got {err.get('input')!r})"
        if kind == "config_rule":
            path, text, got = [*path, ctx["field"]], ctx["rule"], ""
        elif kind in _OPS:
            key, sign = _OPS[kind]
            text = f"must be {sign} {ctx[key]}"
        elif kind == "extra_forbidden":
            close = difflib.get_close_matches(path[-1], _KNOWN_KEYS, n=1)
            text, got = "is not a known key" + (f" (did you mean {close[0]!r}?)" if close else ""), ""
        else:
            text = f": {err['msg']}"
        lines.append(f"{'.'.join(path) or '(top level)'} {text}{got}".replace(" :", ":"))
    return lines


def parse_resilience_config(data: Mapping[str, Any], source: str = "configuration") -> ResilienceConfig:
    """Validate a (partial) mapping merged over the defaults; errors become ConfigurationError."""
    try:
        return ResilienceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"{source}: " + "; ".join(describe_errors(exc))) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or TOML file (by extension; unknown extensions: JSON, then TOML)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {file}: cannot be read ({exc})") from None
    formats: dict[str, Callable[[str], Any]] = {"JSON": json.loads, "TOML": tomllib.loads}
    suffix = file.suffix.lower().lstrip(".").upper()
    tried = [suffix] if suffix in formats else list(formats)
    problems = []
    for name in tried:
        try:
            data = formats[name](text)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if not isinstance(data, dict):
            raise ConfigurationError(f"config file {file}: the top level must be an object/table")
        return data
    raise ConfigurationError(f"config file {file}: not valid {' or '.join(tried)}: {'; '.join(problems)}")


def load_resilience_config(environ: Mapping[str, str], config_path: str | Path | None = None) -> ResilienceConfig:
    """Defaults < file (``config_path``, else ``CCTG_CONFIG`` from ``environ``) < environment."""
    path = config_path if config_path is not None else (environ.get("CCTG_CONFIG", "").strip() or None)
    data = read_config_file(path) if path is not None else {}
    config = parse_resilience_config(data, f"config file {path}" if path is not None else "defaults")
    overlay, used = env_overrides(environ)
    if not used:
        return config
    merged = deep_merge(config.model_dump(by_alias=True), overlay)
    return parse_resilience_config(merged, "after environment variables " + ", ".join(used))
