"""Issue 13, item 9: no configuration key is silently dropped.

Table-driven over every key of the resilience configuration model and every environment
variable the README's configuration table lists: each one either changes what the runtime
is built from (the same functions app.py builds it with: ``PipelineSet`` breakers and retry
policies per component / operation / event, ``HealthSettings``, ``RecoverySettings``, the
deadlines, the monitoring and Prometheus settings, the endpoints the health monitor probes),
or has a row in ``ops.config_support.UNSUPPORTED`` and start-up warns about it by name.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from cctg_mcp.config import load_settings
from cctg_mcp.ops.config_support import UNSUPPORTED_ENV, flatten, warn_unsupported, why_unsupported
from cctg_mcp.resilience.config import (
    CircuitBreakerOverride,
    ResilienceConfig,
    RetryOverride,
    load_resilience_config,
    parse_resilience_config,
)
from cctg_mcp.resilience.config_env import ENV_VARS
from cctg_mcp.resilience.health import HealthSettings
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.resilience.recovery_models import RecoverySettings

DEFAULT = parse_resilience_config({})
README = Path(__file__).resolve().parent.parent / "README.md"


def override_keys() -> list[str]:
    """Per-operation / per-event override keys (absent from the defaults, still model keys)."""
    keys = []
    for section, name in (("operations", "sendMessage"), ("events", "task_started")):
        for model, part in ((CircuitBreakerOverride, "circuitBreaker"), (RetryOverride, "retry")):
            keys += [f"{section}.{name}.{part}.{f.alias or n}" for n, f in model.model_fields.items()]
    return keys


#: Every leaf key (an absent override section is not a leaf: its keys come from override_keys()).
ALL_KEYS = sorted({key for key, value in flatten(DEFAULT) if value is not None} | set(override_keys()))


def runtime(config: ResilienceConfig) -> str:
    """What the composition root builds from ``config`` (compared as text)."""
    pipelines = PipelineSet(config)
    routes = {}
    for component, pipe in pipelines.pipelines.items():
        for op in (*config.operations, "sendMessage"):
            routes[f"{component}:{op}"] = pipe.route(op)
        for event in (*config.events, "task_started"):
            routes[f"{component}:sendEvent:{event}"] = pipe.route("sendEvent", event)
    view: dict[str, Any] = {
        "enabled": config.enabled,
        "breakers": {n: b.settings for n, b in pipelines.breakers.items()},
        "routes": {k: (b.settings, r.policy) for k, (b, r) in routes.items()},
        "health": HealthSettings.from_config(config.health),
        "endpoints": config.health.endpoints,  # install_default_checks probes each
        "recovery": RecoverySettings.from_config(config.recovery),
        "deadlines": {op: config.timeout_for(op) for op in config.operations},
        "event_timeouts": {e: config.timeout_for("sendEvent", e) for e in config.events},
        "event_priorities": {e: c.priority for e, c in config.events.items()},  # NotificationService.priority
        "monitoring": (  # what app.py reads: sampler, alert thresholds, retention, Prometheus
            config.monitoring.enabled,
            config.monitoring.seconds("metrics_interval"),
            config.monitoring.alert_thresholds,
            [config.monitoring.retention.seconds(k) for k in ("metrics", "events", "logs")],
            config.monitoring.prometheus.enabled,
            config.monitoring.prometheus.port,
            config.monitoring.prometheus.endpoint,
        ),
    }
    return repr(view)


BASELINE = runtime(DEFAULT)


def nested(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return dict(out)


def candidates(key: str, default: Any) -> list[Any]:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "endpoints":
        return [[{"name": "extra", "url": "http://127.0.0.1:9/health"}]]
    if leaf == "backupStrategies":
        return [[]]
    if leaf in ("retryableErrors", "nonRetryableErrors", "conditions"):
        return [["SOME_CODE"]]
    if leaf == "exponentialBase":
        return [3.0, 1.5]
    if leaf == "maxDelay":
        return [default * 2 if default else 20_000, 30_000]
    if leaf == "attemptsBySeverity":
        return [{"low": 1}]
    if isinstance(default, bool) or leaf in ("enabled", "jitterEnabled"):
        return [not default] if isinstance(default, bool) else [False, True]
    if isinstance(default, int):
        return [default + 1, default * 2 + 1]
    if isinstance(default, float):
        return [default / 2, 0.5]
    if leaf == "failureRatio":
        return [0.5]
    if leaf in ("priority",):
        return ["critical", "low"]
    if leaf == "backoff":
        return ["linear", "fixed", "exponential"]
    if leaf == "environment":
        return ["development"]
    if leaf == "endpoint":
        return ["/other"]
    return [2, 7, 0.5, "development", True, False]


def changed(key: str) -> ResilienceConfig:
    default = dict(flatten(DEFAULT)).get(key)
    for value in candidates(key, default):
        try:
            config = parse_resilience_config(nested(key, value))
        except Exception:
            continue
        if dict(flatten(config)).get(key, object()) != default or key not in dict(flatten(DEFAULT)):
            return config
    raise AssertionError(f"no valid non-default value found for {key}; add a candidate")


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_config_key_acts_or_is_reported_unsupported(key: str, caplog: pytest.LogCaptureFixture) -> None:
    config = changed(key)
    why = why_unsupported(key)
    if why is None:
        assert runtime(config) != BASELINE, f"{key} is accepted but changes nothing: make it act or add a row"
    else:
        assert runtime(config) == BASELINE, f"{key} acts now: delete its row from UNSUPPORTED"
        caplog.set_level(logging.WARNING)
        warnings = warn_unsupported(config)
        assert any(key in w and why in w for w in warnings), warnings
        assert sum(key in r.getMessage() for r in caplog.records) == 1  # once, naming the key and why


def readme_variables() -> list[str]:
    text = README.read_text()
    section = text[text.index("| `TELEGRAM_BOT_TOKEN`") :]
    section = section[: section.index("\n\n")]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("|")]
    names = {n for cell in first_cells for n in re.findall(r"`([A-Z][A-Z0-9_]{3,})`", cell)}
    return sorted(names | set(ENV_VARS))


ENV_CANDIDATES = ["2", "7", "0.5", "true", "false", "development", "http://127.0.0.1:9/x", "/tmp/cctg-x", "5m"]
ENV_SPECIFIC = {
    "TELEGRAM_BOT_TOKEN": "123:abcdef",
    "TELEGRAM_ALLOWED_USERS": "42",
    "CCTG_HTTP_TOKEN": "a-long-enough-token-0123456789",
    "CCTG_TOOLSETS": "all",
    "CCTG_PERMISSION_AUTO_ALLOW": "Read",
    "CCTG_PERMISSION_DENY": "Bash",
    "CCTG_HTTP_HOST": "127.0.0.2",
    "PROMETHEUS_ENDPOINT": "/other",
    "CCTG_DELIVERY": "bridge",
    "CCTG_OUTBOX_MAX_BYTES": "4096",
    "CCTG_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def env_effect(name: str, tmp: Path) -> bool:
    base = {"CCTG_DATA_DIR": str(tmp)}
    settings0 = load_settings(base)
    config0 = repr(load_resilience_config(base, None))
    values = [ENV_SPECIFIC[name]] if name in ENV_SPECIFIC else ENV_CANDIDATES
    if name == "CCTG_CONFIG":
        (tmp / "config.json").write_text('{"retry": {"telegram": {"maxAttempts": 9}}}')
        values = [str(tmp / "config.json")]
    for value in values:
        env = {**base, name: value}
        try:
            settings = load_settings(env)
            config = repr(load_resilience_config(env, None))
        except Exception:
            continue
        if settings.model_dump(exclude={"sources"}) != settings0.model_dump(exclude={"sources"}) or config != config0:
            return True
    return False


@pytest.mark.parametrize("name", readme_variables())
def test_every_readme_variable_acts_or_is_reported_unsupported(name: str, tmp_path: Path) -> None:
    if name in UNSUPPORTED_ENV:
        assert UNSUPPORTED_ENV[name]
        return
    assert env_effect(name, tmp_path), f"{name} (listed in the README) changes no setting: make it act or add a row"
