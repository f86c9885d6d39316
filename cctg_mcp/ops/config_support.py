"""Configuration keys that are accepted (validated) but do not act, and the start-up warning.

A key that validates looks live; one that is then dropped is a false answer. Every key of
the resilience configuration model either changes what the runtime is built from, or has a
row here saying why it does nothing (pinned by ``tests/test_truth_config.py``, which walks
every key). When a key is made live, delete its row: the test then demands it act.

``warn_unsupported(config)`` logs one WARNING per key of these rows that the configuration
sets to something other than its default (file, environment or code), naming the key and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from cctg_mcp.resilience.config import ResilienceConfig, parse_resilience_config

log = logging.getLogger(__name__)

#: Accepted but not acting: dotted key (camelCase, as in the config file) → why. One row per key.
#: ``*`` stands for any component / operation / event name.
UNSUPPORTED: dict[str, str] = {
    "environment": "the resilience config's environment is not read; CCTG_ENVIRONMENT (or NODE_ENV) sets the "
    "environment (chaos tools, defaults)",
    "operations.*.priority": "an operation's priority is not used; delivery order and degraded mode use the "
    "event's priority (events.<type>.priority, else the catalogue)",
    "monitoring.prometheus.interval": "the Prometheus exposition is pulled by the scraper (its scrape interval "
    "decides); nothing is pushed on an interval",
}

#: Environment variables the README lists that are accepted but do not act: name → why.
UNSUPPORTED_ENV: dict[str, str] = {}


def _match(pattern: str, key: str) -> bool:
    p, k = pattern.split("."), key.split(".")
    return len(p) == len(k) and all(a in ("*", b) for a, b in zip(p, k, strict=True))


def why_unsupported(key: str) -> str | None:
    """The reason ``key`` (dotted, camelCase) does not act, or None when it acts."""
    return next((why for pattern, why in UNSUPPORTED.items() if _match(pattern, key)), None)


def flatten(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted camelCase key, value)`` for every leaf of the configuration."""
    for name, field in type(model).model_fields.items():
        key = f"{prefix}{field.alias or name}"
        value: Any = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from flatten(value, key + ".")
        elif isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
            for sub, item in value.items():
                yield from flatten(item, f"{key}.{sub}.")
        else:
            yield key, value


def set_keys(config: ResilienceConfig) -> list[str]:
    """Keys whose value differs from the defaults (set by a file, the environment or code)."""
    default = dict(flatten(parse_resilience_config({})))
    return [key for key, value in flatten(config) if key not in default or default[key] != value]


def warn_unsupported(config: ResilienceConfig, *, environment: str | None = None) -> list[str]:
    """Warn once per set key that does not act; returns the warnings (for tests and callers).

    ``environment``: the server's own (CCTG_ENVIRONMENT); the config's ``environment`` key is
    then only worth a warning when it says something else (CCTG_ENVIRONMENT also fills it)."""
    warnings: list[str] = []
    for key in set_keys(config):
        why = why_unsupported(key)
        if key == "environment" and config.environment == environment:
            continue
        if why is not None:
            message = f"configuration key {key} is accepted but not supported: {why}"
            log.warning("%s", message)
            warnings.append(message)
    return warnings
