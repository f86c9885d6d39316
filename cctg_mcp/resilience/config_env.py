"""Resilience settings from environment variables (names and units as the seed's
``createResilienceConfigFromEnv``): ``ENV_SPEC`` and ``env_overrides``.

Deliberate differences from the seed's ``createResilienceConfigFromEnv``:

- ``environment`` defaults to ``production`` (the seed: ``development``) and comes from
  ``CCTG_ENVIRONMENT``, else from the seed's ``NODE_ENV`` when that is development, staging or
  production.
- No gate variables: each variable that is set applies on its own (the seed reads the breaker
  block only if ``CIRCUIT_BREAKER_FAILURE_THRESHOLD`` is set, retry only with
  ``RETRY_MAX_ATTEMPTS``, health only with ``HEALTH_CHECK_INTERVAL``, monitoring only when
  ``MONITORING_ENABLED=true``).
- ``CIRCUIT_BREAKER_*`` apply to all four components. ``RETRY_MAX_ATTEMPTS`` / ``_BASE_DELAY`` /
  ``_MAX_DELAY`` are derived per component the seed's way (telegram: attempts+2, base x2, max x3;
  filesystem: base/2, max/2, at least 1 ms); ``RETRY_EXPONENTIAL_BASE`` / ``_JITTER_ENABLED`` /
  ``_JITTER_MAX`` apply to all four components (the seed hard-codes them for all but bridge).
- Booleans are true/false/1/0/yes/no/on/off (any case; ``units.parse_bool``, the one parser);
  anything else is an error, never a fallback. An empty variable counts as unset.
- Durations accept units (``500ms``, ``30s``, ``5m``, ``1h``); a plain number is milliseconds
  as in the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args
from urllib.parse import urlsplit

from cctg_mcp.resilience.config_tables import COMPONENTS, Environment
from cctg_mcp.resilience.errors import ConfigurationError
from cctg_mcp.resilience.units import BOOL_ALLOWED, parse_bool, parse_duration


def _ms(raw: str) -> int:
    value = parse_duration(raw, "ms")
    if value != int(value):
        raise ValueError(raw)  # a fraction of a millisecond
    return int(value)


_UNITS = ", or a duration with a unit such as 500ms, 30s, 5m, 1h"


_ENVIRONMENTS = get_args(Environment)
# kind -> (converter, check, what is allowed)
_KINDS: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {
    "pos": (int, lambda v: v > 0, "a whole number > 0"),
    "nonneg": (int, lambda v: v >= 0, "a whole number >= 0"),
    "ms": (_ms, lambda v: v > 0, "a whole number of milliseconds > 0" + _UNITS),
    "ms0": (_ms, lambda v: v >= 0, "a whole number of milliseconds >= 0" + _UNITS),
    "ratio": (float, lambda v: 0 <= v <= 1, "a number between 0 and 1"),
    "gt1": (float, lambda v: v > 1, "a number > 1"),
    "port": (int, lambda v: 1 <= v <= 65535, "a port number 1-65535"),
    "bool": (parse_bool, lambda v: True, BOOL_ALLOWED),
    "url": (str, lambda v: v.startswith(("http://", "https://")), "an http(s) URL"),
    "path": (
        lambda raw: urlsplit(raw).path if raw.startswith(("http://", "https://")) else raw,
        lambda v: v.startswith("/") and not any(c.isspace() or c in "?#" for c in v),
        "a path such as /metrics (or a URL, whose path is used)",
    ),
    "env": (str.lower, lambda v: v in _ENVIRONMENTS, "one of " + ", ".join(_ENVIRONMENTS)),
}
_SEED_SCALE: dict[str, dict[str, Callable[[int], int]]] = {
    "telegram": {"maxAttempts": lambda v: v + 2, "baseDelay": lambda v: v * 2, "maxDelay": lambda v: v * 3},
    "filesystem": {"baseDelay": lambda v: max(1, v // 2), "maxDelay": lambda v: max(1, v // 2)},
}
_CB, _RETRY, _HEALTH, _MON = "circuitBreaker.*.", "retry.*.", "health.", "monitoring."
# (variable, kind, dotted key path); "*" is each of the four components.
ENV_SPEC: tuple[tuple[str, str, str], ...] = (
    ("RESILIENCE_ENABLED", "bool", "enabled"),
    ("CCTG_ENVIRONMENT", "env", "environment"),
    ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "pos", _CB + "failureThreshold"),
    ("CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "pos", _CB + "successThreshold"),
    ("CIRCUIT_BREAKER_TIMEOUT", "ms", _CB + "timeout"),
    ("CIRCUIT_BREAKER_MONITORING_WINDOW", "ms", _CB + "monitoringWindow"),
    ("CIRCUIT_BREAKER_MAX_CONCURRENT", "pos", _CB + "maxConcurrentRequests"),
    ("CIRCUIT_BREAKER_VOLUME_THRESHOLD", "nonneg", _CB + "volumeThreshold"),
    ("RETRY_MAX_ATTEMPTS", "pos", _RETRY + "maxAttempts"),
    ("RETRY_BASE_DELAY", "ms", _RETRY + "baseDelay"),
    ("RETRY_MAX_DELAY", "ms", _RETRY + "maxDelay"),
    ("RETRY_EXPONENTIAL_BASE", "gt1", _RETRY + "exponentialBase"),
    ("RETRY_JITTER_ENABLED", "bool", _RETRY + "jitterEnabled"),
    ("RETRY_JITTER_MAX", "ms0", _RETRY + "jitterMax"),
    ("HEALTH_CHECK_ENABLED", "bool", _HEALTH + "enabled"),
    ("HEALTH_CHECK_INTERVAL", "ms", _HEALTH + "interval"),
    ("HEALTH_CHECK_TIMEOUT", "ms", _HEALTH + "timeout"),
    ("HEALTH_CHECK_FAILURE_THRESHOLD", "pos", _HEALTH + "failureThreshold"),
    ("HEALTH_CHECK_RECOVERY_THRESHOLD", "pos", _HEALTH + "recoveryThreshold"),
    ("HEALTH_CHECK_GRACE_PERIOD", "ms0", _HEALTH + "gracePeriod"),
    ("MONITORING_ENABLED", "bool", _MON + "enabled"),
    ("MONITORING_METRICS_INTERVAL", "ms", _MON + "metricsInterval"),
    ("MONITORING_ERROR_RATE_THRESHOLD", "ratio", _MON + "alertThresholds.errorRate"),
    ("MONITORING_RESPONSE_TIME_THRESHOLD", "ms", _MON + "alertThresholds.responseTime"),
    ("MONITORING_MEMORY_USAGE_THRESHOLD", "ratio", _MON + "alertThresholds.memoryUsage"),
    ("MONITORING_CPU_USAGE_THRESHOLD", "ratio", _MON + "alertThresholds.cpuUsage"),
    ("MONITORING_METRICS_RETENTION", "ms", _MON + "retention.metrics"),
    ("MONITORING_EVENTS_RETENTION", "ms", _MON + "retention.events"),
    ("MONITORING_LOGS_RETENTION", "ms", _MON + "retention.logs"),
    ("PROMETHEUS_ENABLED", "bool", _MON + "prometheus.enabled"),
    ("PROMETHEUS_ENDPOINT", "path", _MON + "prometheus.endpoint"),
    ("PROMETHEUS_PORT", "port", _MON + "prometheus.port"),
)
ENV_VARS: tuple[str, ...] = tuple(spec[0] for spec in ENV_SPEC)


def _parse_env(var: str, raw: str, kind: str) -> Any:
    convert, check, allowed = _KINDS[kind]
    try:
        value = convert(raw)
    except ValueError:
        value = None
    if value is None or not check(value):
        raise ConfigurationError(f"environment variable {var}={raw!r} is invalid: expected {allowed}")
    return value


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The partial config the environment asks for, and the variables used (empty = unset)."""
    overlay: dict[str, Any] = {}
    used: list[str] = []
    node_env = environ.get("NODE_ENV", "").strip().lower()
    if not environ.get("CCTG_ENVIRONMENT", "").strip() and node_env in ("development", "staging", "production"):
        overlay["environment"] = node_env
        used.append("NODE_ENV")
    for var, kind, path in ENV_SPEC:
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        value = _parse_env(var, raw, kind)
        used.append(var)
        for comp in COMPONENTS if "*" in path else ("",):
            *parents, leaf = path.replace("*", comp).split(".")
            scale = _SEED_SCALE.get(comp, {}).get(leaf) if parents[0:1] == ["retry"] else None
            node = overlay
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = scale(value) if scale else value
    return overlay, used
