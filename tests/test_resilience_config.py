"""Resilience configuration: seed defaults, files, environment, validation, overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cctg_mcp.resilience.config import (
    COMPONENTS,
    ENV_VARS,
    CircuitBreakerConfig,
    ResilienceConfig,
    RetryConfig,
    load_resilience_config,
    parse_resilience_config,
    read_config_file,
)
from cctg_mcp.resilience.errors import ConfigurationError

DEFAULT = ResilienceConfig()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- seed defaults


@pytest.mark.parametrize(
    ("component", "row"),
    [
        ("bridge", (5, 3, 30000, 60000, 10, 5)),
        ("telegram", (3, 2, 15000, 30000, 5, 3)),
        ("filesystem", (10, 5, 5000, 60000, 20, 10)),
        ("network", (5, 3, 20000, 60000, 10, 5)),
    ],
)
def test_default_breakers_match_seed(component: str, row: tuple[int, ...]) -> None:
    cb = DEFAULT.circuit_breaker[component]  # type: ignore[index]
    assert (
        cb.failure_threshold,
        cb.success_threshold,
        cb.timeout,
        cb.monitoring_window,
        cb.max_concurrent_requests,
        cb.volume_threshold,
    ) == row
    assert cb.enabled and cb.failure_ratio is None and cb.half_open_max_calls == 1


@pytest.mark.parametrize(
    ("component", "row", "retryable", "non_retryable"),
    [
        (
            "bridge",
            (3, 1000, 10000, 2.0, True, 500),
            ["ECONNREFUSED", "ETIMEDOUT", "ENOTFOUND", "BRIDGE_NOT_READY"],
            ["AUTH_FAILED", "INVALID_INPUT", "BRIDGE_CRASHED"],
        ),
        (
            "telegram",
            (5, 2000, 30000, 1.5, True, 1000),
            ["TELEGRAM_RATE_LIMIT", "TELEGRAM_SERVER_ERROR", "NETWORK_ERROR"],
            ["TELEGRAM_INVALID_TOKEN", "TELEGRAM_FORBIDDEN", "TELEGRAM_INVALID_CHAT"],
        ),
        (
            "filesystem",
            (3, 500, 5000, 2.0, False, 0),
            ["EMFILE", "ENFILE", "EAGAIN", "EBUSY"],
            ["ENOENT", "EACCES", "EISDIR", "ENOTDIR"],
        ),
        (
            "network",
            (4, 1000, 15000, 2.0, True, 500),
            ["ECONNREFUSED", "ETIMEDOUT", "ENOTFOUND", "ECONNRESET"],
            ["ECONNABORTED", "ECANCELED", "HTTP_4XX"],
        ),
    ],
)
def test_default_retry_matches_seed(
    component: str, row: tuple[Any, ...], retryable: list[str], non_retryable: list[str]
) -> None:
    r = DEFAULT.retry[component]  # type: ignore[index]
    assert (
        r.max_attempts,
        r.base_delay,
        r.max_delay,
        r.exponential_base,
        r.jitter_enabled,
        r.jitter_max,
    ) == row
    assert r.retryable_errors == retryable
    assert r.non_retryable_errors == non_retryable
    assert r.backoff == "exponential"


def test_default_health_recovery_monitoring_match_seed() -> None:
    h = DEFAULT.health
    assert (h.enabled, h.interval, h.timeout, h.failure_threshold, h.recovery_threshold, h.grace_period) == (
        True,
        30000,
        5000,
        3,
        2,
        10000,
    )
    health, metrics = h.endpoints
    assert (health.name, health.url, health.method, health.timeout, health.retries) == (
        "bridge-health",
        "http://localhost:8080/health",
        "GET",
        3000,
        2,
    )
    assert health.expected_status == [200] and health.critical
    assert (metrics.name, metrics.url, metrics.retries, metrics.critical) == (
        "bridge-metrics",
        "http://localhost:8080/metrics",
        1,
        False,
    )

    rc = DEFAULT.recovery
    assert (
        rc.auto_recovery_enabled,
        rc.max_recovery_attempts,
        rc.recovery_delay,
        rc.escalation_threshold,
        rc.graceful_shutdown_timeout,
        rc.restart_delay,
    ) == (True, 5, 5000, 3, 30000, 2000)
    assert [(s.priority, s.name, s.timeout, s.max_attempts, s.conditions) for s in rc.backup_strategies] == [
        (1, "bridge-restart", 15000, 3, ["BRIDGE_DOWN", "BRIDGE_UNHEALTHY"]),
        (2, "process-restart", 30000, 2, ["BRIDGE_CRASHED", "BRIDGE_UNRESPONSIVE"]),
        (3, "fallback-mode", 5000, 1, ["ALL_RECOVERY_FAILED"]),
    ]

    m = DEFAULT.monitoring
    assert m.metrics_interval == 10000
    t = m.alert_thresholds
    assert (t.error_rate, t.response_time, t.memory_usage, t.cpu_usage) == (0.1, 5000, 0.8, 0.8)
    assert (m.retention.metrics, m.retention.events, m.retention.logs) == (
        24 * 3600_000,
        7 * 24 * 3600_000,
        3 * 24 * 3600_000,
    )
    assert not m.prometheus.enabled and m.prometheus.endpoint == "/metrics"
    assert m.prometheus.port == 9464  # not 9090, Prometheus's own port
    assert m.prometheus.interval == 15000


def test_default_environment_is_production_and_enabled() -> None:
    assert DEFAULT.environment == "production"
    assert DEFAULT.enabled


@pytest.mark.parametrize(
    ("operation", "priority", "timeout", "cb", "retry"),
    [
        ("sendEvent", "high", 10000, {"failure_threshold": 3, "timeout": 15000}, None),
        ("sendMessage", "normal", 5000, None, None),
        ("sendTaskCompletion", "high", 8000, None, None),
        ("sendPerformanceAlert", "critical", 3000, {"failure_threshold": 2, "timeout": 10000}, None),
        ("sendApprovalRequest", "high", 5000, None, None),
        ("getBridgeStatus", "normal", 3000, None, {"max_attempts": 2, "base_delay": 500}),
        ("startBridge", "critical", 30000, None, {"max_attempts": 3, "base_delay": 5000}),
        ("stopBridge", "critical", 15000, None, None),
        ("restartBridge", "critical", 45000, None, None),
    ],
)
def test_default_operations_match_seed(
    operation: str, priority: str, timeout: int, cb: dict[str, int] | None, retry: dict[str, int] | None
) -> None:
    op = DEFAULT.operations[operation]
    assert (op.priority, op.timeout) == (priority, timeout)
    assert (op.circuit_breaker.model_dump(exclude_none=True) if op.circuit_breaker else None) == cb
    assert (op.retry.model_dump(exclude_none=True) if op.retry else None) == retry


@pytest.mark.parametrize(
    ("event", "priority", "timeout", "retry"),
    [
        ("task_completion", "high", 8000, None),
        ("task_started", "normal", 5000, None),
        ("task_failed", "high", 8000, None),
        ("performance_alert", "critical", 3000, {"max_attempts": 5, "base_delay": 500}),
        ("error_occurred", "critical", 3000, {"max_attempts": 5, "base_delay": 500}),
        ("approval_request", "high", 5000, None),
        ("info_notification", "low", 10000, None),
        ("system_health", "normal", 5000, None),
    ],
)
def test_default_events_match_seed(event: str, priority: str, timeout: int, retry: dict[str, int] | None) -> None:
    ev = DEFAULT.events[event]
    assert (ev.priority, ev.timeout) == (priority, timeout)
    assert (ev.retry.model_dump(exclude_none=True) if ev.retry else None) == retry


def test_dump_by_alias_is_seed_shape() -> None:
    dumped = DEFAULT.model_dump(by_alias=True)
    assert dumped["circuitBreaker"]["telegram"]["failureThreshold"] == 3
    assert dumped["retry"]["bridge"]["nonRetryableErrors"] == [
        "AUTH_FAILED",
        "INVALID_INPUT",
        "BRIDGE_CRASHED",
    ]
    assert dumped["monitoring"]["alertThresholds"]["errorRate"] == 0.1
    assert dumped["recovery"]["backupStrategies"][0]["maxAttempts"] == 3
    assert dumped["operations"]["sendEvent"]["circuitBreaker"]["failureThreshold"] == 3


# ---------------------------------------------------------------- files, merging


def test_json_file_camel_case(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.json",
        json.dumps({"circuitBreaker": {"telegram": {"failureThreshold": 7}}, "health": {"gracePeriod": 0}}),
    )
    config = load_resilience_config({}, path)
    assert config.circuit_breaker["telegram"].failure_threshold == 7
    assert config.health.grace_period == 0


def test_json_file_snake_case(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.json",
        json.dumps(
            {
                "circuit_breaker": {"telegram": {"failure_threshold": 7}},
                "monitoring": {"alert_thresholds": {"cpu_usage": 0.5}},
            }
        ),
    )
    config = load_resilience_config({}, path)
    assert config.circuit_breaker["telegram"].failure_threshold == 7
    assert config.monitoring.alert_thresholds.cpu_usage == 0.5


@pytest.mark.parametrize(
    "text",
    [
        "[circuit_breaker.telegram]\nfailure_threshold = 7\n[retry.network]\nmax_attempts = 9\n"
        '[operations.sendMessage]\npriority = "high"\n',
        "[circuitBreaker.telegram]\nfailureThreshold = 7\n[retry.network]\nmaxAttempts = 9\n"
        '[operations.sendMessage]\npriority = "high"\n',
    ],
    ids=["snake", "camel"],
)
def test_toml_file(tmp_path: Path, text: str) -> None:
    config = load_resilience_config({}, write(tmp_path, "c.toml", text))
    assert config.circuit_breaker["telegram"].failure_threshold == 7
    assert config.retry["network"].max_attempts == 9
    assert config.operations["sendMessage"].priority == "high"
    assert config.operations["sendMessage"].timeout == 5000  # merged, not replaced


@pytest.mark.parametrize("text", ['{"retry": {"telegram": {"maxAttempts": 9}}}', "[retry.telegram]\nmaxAttempts = 9\n"])
def test_unknown_extension_is_sniffed(tmp_path: Path, text: str) -> None:
    config = load_resilience_config({}, write(tmp_path, "resilience.conf", text))
    assert config.retry["telegram"].max_attempts == 9


def test_config_path_from_cctg_config(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", '{"health": {"interval": 1234}}')
    assert load_resilience_config({"CCTG_CONFIG": str(path)}).health.interval == 1234
    other = write(tmp_path, "d.json", '{"health": {"interval": 99}}')
    assert load_resilience_config({"CCTG_CONFIG": str(path)}, other).health.interval == 99


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.json", "{not json"),
        ("bad.toml", "x = = 1"),
        ("bad.conf", "{nor = this"),
        ("list.json", "[1, 2]"),
    ],
)
def test_unparsable_file_names_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigurationError, match="config file") as info:
        load_resilience_config({}, path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        read_config_file(tmp_path / "absent.toml")
    assert "absent.toml" in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            {"circuitBreaker": {"telegram": {"failureThreshhold": 2}}},
            "circuitBreaker.telegram.failureThreshhold",
        ),
        ({"helth": {}}, "helth"),
        ({"monitoring": {"alertThresholds": {"errRate": 0.2}}}, "monitoring.alertThresholds.errRate"),
        ({"operations": {"sendEvent": {"timeOut": 5}}}, "operations.sendEvent.timeOut"),
        ({"circuitBreaker": {"telgram": {"failureThreshold": 2}}}, "circuitBreaker.telgram"),
    ],
)
def test_unknown_key_is_rejected_naming_it(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path = write(tmp_path, "c.json", json.dumps(data))
    with pytest.raises(ConfigurationError) as info:
        load_resilience_config({}, path)
    assert key in str(info.value) and str(path) in str(info.value)


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'failureThreshold'"):
        parse_resilience_config({"circuitBreaker": {"telegram": {"failureThreshhold": 2}}})


def test_same_key_in_both_spellings_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="given twice"):
        parse_resilience_config({"health": {"gracePeriod": 1, "grace_period": 2}})


def test_partial_config_deep_merges_over_defaults() -> None:
    config = ResilienceConfig.model_validate({"circuitBreaker": {"telegram": {"failureThreshold": 9}}})
    expected = DEFAULT.model_dump(by_alias=True)
    expected["circuitBreaker"]["telegram"]["failureThreshold"] = 9
    assert config.model_dump(by_alias=True) == expected


def test_lists_replace_rather_than_merge() -> None:
    config = parse_resilience_config({"retry": {"bridge": {"retryableErrors": ["X"]}}, "health": {"endpoints": []}})
    assert config.retry["bridge"].retryable_errors == ["X"]
    assert config.retry["bridge"].non_retryable_errors == DEFAULT.retry["bridge"].non_retryable_errors
    assert config.health.endpoints == []


def test_seed_events_retry_config_key_is_accepted() -> None:
    config = parse_resilience_config(
        {"events": {"task_started": {"priority": "high", "retryConfig": {"maxAttempts": 2}}}}
    )
    assert config.retry_for("network", event_type="task_started").max_attempts == 2
    assert config.model_dump(by_alias=True)["events"]["task_started"]["retry"]["maxAttempts"] == 2


@pytest.mark.parametrize(
    "dump",
    [
        lambda c: c.model_dump(by_alias=True),
        lambda c: c.model_dump(by_alias=True, exclude_none=True),
        lambda c: c.model_dump(),
        lambda c: json.loads(c.model_dump_json(by_alias=True)),
    ],
    ids=["alias", "alias-exclude-none", "snake", "json"],
)
def test_round_trip(dump: Any) -> None:
    config = parse_resilience_config(
        {
            "environment": "staging",
            "circuitBreaker": {"network": {"failureRatio": 0.5, "halfOpenMaxCalls": 2}},
            "retry": {"filesystem": {"backoff": "linear", "exponentialBase": 1.0}},
            "operations": {"custom": {"priority": "low", "retry": {"maxAttempts": 1}}},
        }
    )
    assert ResilienceConfig.model_validate(dump(config)) == config
    assert parse_resilience_config(dump(DEFAULT)) == DEFAULT


def test_round_trip_through_files(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", DEFAULT.model_dump_json(by_alias=True))
    assert load_resilience_config({}, path) == DEFAULT


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"circuitBreaker": {"telegram": {"failureThreshold": 0}}},
            "circuitBreaker.telegram.failureThreshold must be > 0",
        ),
        (
            {"circuitBreaker": {"bridge": {"successThreshold": -1}}},
            "circuitBreaker.bridge.successThreshold must be > 0",
        ),
        ({"circuitBreaker": {"network": {"timeout": 0}}}, "circuitBreaker.network.timeout must be > 0"),
        (
            {"circuitBreaker": {"filesystem": {"monitoringWindow": 0}}},
            "circuitBreaker.filesystem.monitoringWindow must be > 0",
        ),
        (
            {"circuitBreaker": {"telegram": {"failureRatio": 1.5}}},
            "circuitBreaker.telegram.failureRatio must be <= 1",
        ),
        ({"retry": {"bridge": {"maxAttempts": 0}}}, "retry.bridge.maxAttempts must be > 0"),
        ({"retry": {"telegram": {"baseDelay": 0}}}, "retry.telegram.baseDelay must be > 0"),
        (
            {"retry": {"network": {"maxDelay": 500, "baseDelay": 1000}}},
            "retry.network.maxDelay must be >= baseDelay",
        ),
        ({"retry": {"bridge": {"exponentialBase": 1.0}}}, "retry.bridge.exponentialBase must be > 1"),
        ({"retry": {"bridge": {"backoff": "quadratic"}}}, "retry.bridge.backoff"),
        ({"retry": {"bridge": {"maxAttempts": "three"}}}, "retry.bridge.maxAttempts"),
        ({"health": {"interval": 0}}, "health.interval must be > 0"),
        ({"health": {"timeout": 0}}, "health.timeout must be > 0"),
        ({"health": {"failureThreshold": 0}}, "health.failureThreshold must be > 0"),
        ({"health": {"recoveryThreshold": 0}}, "health.recoveryThreshold must be > 0"),
        ({"health": {"endpoints": [{"name": "x", "url": "ftp://x"}]}}, "health.endpoints.0.url"),
        ({"monitoring": {"metricsInterval": 0}}, "monitoring.metricsInterval must be > 0"),
        (
            {"monitoring": {"alertThresholds": {"errorRate": 1.5}}},
            "monitoring.alertThresholds.errorRate must be <= 1",
        ),
        (
            {"monitoring": {"alertThresholds": {"errorRate": -0.1}}},
            "monitoring.alertThresholds.errorRate must be >= 0",
        ),
        (
            {"monitoring": {"alertThresholds": {"memoryUsage": 2}}},
            "monitoring.alertThresholds.memoryUsage must be <= 1",
        ),
        (
            {"monitoring": {"alertThresholds": {"cpuUsage": -1}}},
            "monitoring.alertThresholds.cpuUsage must be >= 0",
        ),
        ({"environment": "prod"}, "environment"),
        ({"operations": {"sendEvent": {"priority": "urgent"}}}, "operations.sendEvent.priority"),
        ({"operations": {"sendEvent": {"timeout": 0}}}, "operations.sendEvent.timeout must be > 0"),
        ({"operations": {"x": {"retry": {"maxDelay": 100}}}}, "operations.x is invalid for bridge"),
    ],
)
def test_validation_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_resilience_config(data, source="my.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("my.toml: ")
    with pytest.raises(ValidationError):  # the model itself rejects it too
        ResilienceConfig.model_validate(data)


def test_exponential_base_one_is_fine_for_non_exponential_backoff() -> None:
    config = parse_resilience_config({"retry": {"bridge": {"backoff": "fixed", "exponentialBase": 1.0}}})
    assert config.retry["bridge"].backoff == "fixed"


def test_file_validation_error_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[health]\ninterval = -5\n")
    with pytest.raises(ConfigurationError) as info:
        load_resilience_config({}, path)
    assert str(path) in str(info.value) and "health.interval must be > 0" in str(info.value)


# ---------------------------------------------------------------- environment


def test_env_var_names_are_the_seeds() -> None:
    seed = {
        "RESILIENCE_ENABLED",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
        "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
        "CIRCUIT_BREAKER_TIMEOUT",
        "CIRCUIT_BREAKER_MONITORING_WINDOW",
        "CIRCUIT_BREAKER_MAX_CONCURRENT",
        "CIRCUIT_BREAKER_VOLUME_THRESHOLD",
        "RETRY_MAX_ATTEMPTS",
        "RETRY_BASE_DELAY",
        "RETRY_MAX_DELAY",
        "RETRY_EXPONENTIAL_BASE",
        "RETRY_JITTER_ENABLED",
        "RETRY_JITTER_MAX",
        "HEALTH_CHECK_ENABLED",
        "HEALTH_CHECK_INTERVAL",
        "HEALTH_CHECK_TIMEOUT",
        "HEALTH_CHECK_FAILURE_THRESHOLD",
        "HEALTH_CHECK_RECOVERY_THRESHOLD",
        "HEALTH_CHECK_GRACE_PERIOD",
        "MONITORING_ENABLED",
        "MONITORING_METRICS_INTERVAL",
        "MONITORING_ERROR_RATE_THRESHOLD",
        "MONITORING_RESPONSE_TIME_THRESHOLD",
        "MONITORING_MEMORY_USAGE_THRESHOLD",
        "MONITORING_CPU_USAGE_THRESHOLD",
        "MONITORING_METRICS_RETENTION",
        "MONITORING_EVENTS_RETENTION",
        "MONITORING_LOGS_RETENTION",
        "PROMETHEUS_ENABLED",
        "PROMETHEUS_ENDPOINT",
        "PROMETHEUS_PORT",
        "CCTG_ENVIRONMENT",
    }
    assert set(ENV_VARS) == seed


def test_no_env_no_file_gives_defaults() -> None:
    assert load_resilience_config({}) == DEFAULT
    assert load_resilience_config({"UNRELATED": "x", "RETRY_MAX_ATTEMPTS": ""}) == DEFAULT  # empty = unset


def test_precedence_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.json",
        json.dumps(
            {
                "circuitBreaker": {"telegram": {"failureThreshold": 7, "successThreshold": 4}},
                "health": {"interval": 1000, "timeout": 900},
            }
        ),
    )
    config = load_resilience_config({"CIRCUIT_BREAKER_FAILURE_THRESHOLD": "9", "HEALTH_CHECK_TIMEOUT": "800"}, path)
    telegram = config.circuit_breaker["telegram"]
    assert telegram.failure_threshold == 9  # env beats file
    assert telegram.success_threshold == 4  # file beats default
    assert telegram.timeout == 15000  # default
    assert (config.health.interval, config.health.timeout) == (1000, 800)


def test_breaker_vars_apply_to_all_components_without_a_gate() -> None:
    config = load_resilience_config(
        {
            "CIRCUIT_BREAKER_TIMEOUT": "1234",
            "CIRCUIT_BREAKER_VOLUME_THRESHOLD": "0",
            "CIRCUIT_BREAKER_MAX_CONCURRENT": "7",
        }
    )
    for component in COMPONENTS:
        cb = config.circuit_breaker[component]
        assert (cb.timeout, cb.volume_threshold, cb.max_concurrent_requests) == (1234, 0, 7)
        assert cb.failure_threshold == DEFAULT.circuit_breaker[component].failure_threshold  # untouched
    both = load_resilience_config(
        {
            "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "4",
            "CIRCUIT_BREAKER_SUCCESS_THRESHOLD": "1",
            "CIRCUIT_BREAKER_MONITORING_WINDOW": "9000",
        }
    )
    assert {(c.failure_threshold, c.success_threshold, c.monitoring_window) for c in both.circuit_breaker.values()} == {
        (4, 1, 9000)
    }


def test_retry_vars_follow_the_seeds_per_component_derivation() -> None:
    config = load_resilience_config({"RETRY_MAX_ATTEMPTS": "4", "RETRY_BASE_DELAY": "1000", "RETRY_MAX_DELAY": "8000"})
    got = {c: (r.max_attempts, r.base_delay, r.max_delay) for c, r in config.retry.items()}
    assert got == {
        "bridge": (4, 1000, 8000),
        "network": (4, 1000, 8000),
        "telegram": (6, 2000, 24000),
        "filesystem": (4, 500, 4000),
    }


def test_retry_jitter_and_base_apply_to_all_components() -> None:
    config = load_resilience_config(
        {"RETRY_EXPONENTIAL_BASE": "3.5", "RETRY_JITTER_ENABLED": "no", "RETRY_JITTER_MAX": "0"}
    )
    assert {(r.exponential_base, r.jitter_enabled, r.jitter_max) for r in config.retry.values()} == {(3.5, False, 0)}
    assert config.retry["telegram"].max_attempts == 5  # untouched without RETRY_MAX_ATTEMPTS


def test_health_monitoring_prometheus_and_top_level_vars() -> None:
    config = load_resilience_config(
        {
            "RESILIENCE_ENABLED": "false",
            "CCTG_ENVIRONMENT": "Development",
            "HEALTH_CHECK_ENABLED": "0",
            "HEALTH_CHECK_INTERVAL": "1000",
            "HEALTH_CHECK_FAILURE_THRESHOLD": "5",
            "HEALTH_CHECK_RECOVERY_THRESHOLD": "4",
            "HEALTH_CHECK_GRACE_PERIOD": "0",
            "MONITORING_ENABLED": "false",
            "MONITORING_METRICS_INTERVAL": "2000",
            "MONITORING_ERROR_RATE_THRESHOLD": "0.25",
            "MONITORING_RESPONSE_TIME_THRESHOLD": "700",
            "MONITORING_MEMORY_USAGE_THRESHOLD": "1",
            "MONITORING_CPU_USAGE_THRESHOLD": "0",
            "MONITORING_METRICS_RETENTION": "1",
            "MONITORING_EVENTS_RETENTION": "2",
            "MONITORING_LOGS_RETENTION": "3",
            "PROMETHEUS_ENABLED": "YES",
            "PROMETHEUS_PORT": "9464",
            "PROMETHEUS_ENDPOINT": "http://h:1/m",
        }
    )
    assert not config.enabled and config.environment == "development"
    h = config.health
    assert (h.enabled, h.interval, h.failure_threshold, h.recovery_threshold, h.grace_period) == (
        False,
        1000,
        5,
        4,
        0,
    )
    m = config.monitoring
    assert (m.enabled, m.metrics_interval) == (False, 2000)
    t = m.alert_thresholds
    assert (t.error_rate, t.response_time, t.memory_usage, t.cpu_usage) == (0.25, 700, 1.0, 0.0)
    assert (m.retention.metrics, m.retention.events, m.retention.logs) == (1, 2, 3)
    assert (m.prometheus.enabled, m.prometheus.port, m.prometheus.endpoint) == (True, 9464, "/m")  # the URL's path
    assert load_resilience_config({"PROMETHEUS_ENDPOINT": "/scrape"}).monitoring.prometheus.endpoint == "/scrape"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
        ("on", True),
        ("Off", False),
    ],
)
def test_boolean_parsing(raw: str, expected: bool) -> None:
    assert load_resilience_config({"RESILIENCE_ENABLED": raw}).enabled is expected
    assert load_resilience_config({"PROMETHEUS_ENABLED": raw}).monitoring.prometheus.enabled is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "t", "enabled"])
def test_bad_boolean_is_an_error(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"RETRY_JITTER_ENABLED.*true or false \(also 1/0, yes/no, on/off\)"):
        load_resilience_config({"RETRY_JITTER_ENABLED": raw})


@pytest.mark.parametrize(
    ("var", "raw", "allowed"),
    [
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "abc", "whole number > 0"),
        ("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "0", "whole number > 0"),
        ("CIRCUIT_BREAKER_TIMEOUT", "-5", "milliseconds > 0"),
        ("CIRCUIT_BREAKER_TIMEOUT", "1.5", "milliseconds > 0"),
        ("CIRCUIT_BREAKER_VOLUME_THRESHOLD", "-1", ">= 0"),
        ("RETRY_MAX_ATTEMPTS", "0", "> 0"),
        ("RETRY_BASE_DELAY", "fast", "milliseconds > 0"),
        ("RETRY_EXPONENTIAL_BASE", "1", "number > 1"),
        ("RETRY_EXPONENTIAL_BASE", "x", "number > 1"),
        ("RETRY_JITTER_MAX", "-1", "milliseconds >= 0"),
        ("HEALTH_CHECK_INTERVAL", "0", "milliseconds > 0"),
        ("HEALTH_CHECK_GRACE_PERIOD", "-1", ">= 0"),
        ("MONITORING_ERROR_RATE_THRESHOLD", "1.5", "between 0 and 1"),
        ("MONITORING_MEMORY_USAGE_THRESHOLD", "-0.1", "between 0 and 1"),
        ("MONITORING_CPU_USAGE_THRESHOLD", "high", "between 0 and 1"),
        ("MONITORING_LOGS_RETENTION", "0", "milliseconds > 0"),
        ("PROMETHEUS_PORT", "70000", "1-65535"),
        ("PROMETHEUS_ENDPOINT", "localhost:9090", "a path such as /metrics"),
        ("CCTG_ENVIRONMENT", "prod", "development, staging, production"),
    ],
)
def test_bad_env_value_names_the_variable(var: str, raw: str, allowed: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_resilience_config({var: raw})
    assert var in str(info.value) and allowed in str(info.value) and repr(raw) in str(info.value)


def test_env_cross_field_error_names_the_variables() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_resilience_config({"RETRY_BASE_DELAY": "20000"})
    assert "RETRY_BASE_DELAY" in str(info.value)
    assert "retry.bridge.maxDelay must be >= baseDelay" in str(info.value)


def test_env_does_not_read_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "9")
    assert load_resilience_config({}) == DEFAULT


# ---------------------------------------------------------------- effective settings


def test_breaker_for_applies_operation_overrides() -> None:
    cb = DEFAULT.breaker_for("telegram", "sendEvent")
    assert (cb.failure_threshold, cb.timeout, cb.success_threshold, cb.monitoring_window) == (
        3,
        15000,
        2,
        30000,
    )
    alert = DEFAULT.breaker_for("bridge", "sendPerformanceAlert")
    assert (alert.failure_threshold, alert.timeout, alert.success_threshold) == (2, 10000, 3)
    assert DEFAULT.breaker_for("bridge", "sendMessage") == DEFAULT.circuit_breaker["bridge"]
    assert DEFAULT.breaker_for("bridge", "noSuchOperation") == DEFAULT.circuit_breaker["bridge"]


def test_retry_for_applies_operation_then_event_overrides() -> None:
    status = DEFAULT.retry_for("bridge", "getBridgeStatus")
    assert (status.max_attempts, status.base_delay, status.max_delay) == (2, 500, 10000)
    assert status.retryable_errors == DEFAULT.retry["bridge"].retryable_errors
    alert = DEFAULT.retry_for("telegram", event_type="performance_alert")
    assert (alert.max_attempts, alert.base_delay, alert.exponential_base) == (5, 500, 1.5)
    both = DEFAULT.retry_for("bridge", "startBridge", "error_occurred")
    assert (both.max_attempts, both.base_delay) == (5, 500)  # the event is more specific
    assert DEFAULT.retry_for("network") == DEFAULT.retry["network"]


def test_base_delay_override_raises_a_smaller_component_max_delay() -> None:
    config = parse_resilience_config({"retry": {"filesystem": {"baseDelay": 100, "maxDelay": 2000}}})
    start = config.retry_for("filesystem", "startBridge")
    assert (start.base_delay, start.max_delay) == (5000, 5000)


def test_timeout_and_priority_for() -> None:
    assert DEFAULT.timeout_for("sendEvent") == 10.0
    assert DEFAULT.timeout_for("sendEvent", "performance_alert") == 3.0
    assert DEFAULT.timeout_for(event_type="info_notification") == 10.0
    assert DEFAULT.timeout_for("restartBridge") == 45.0
    assert DEFAULT.timeout_for("noSuchOperation") == 10.0
    assert DEFAULT.priority_for("sendPerformanceAlert") == "critical"
    assert DEFAULT.priority_for("sendEvent", "info_notification") == "low"
    assert DEFAULT.priority_for() == "normal"


def test_unknown_component_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown component 'telgram'"):
        DEFAULT.breaker_for("telgram")
    with pytest.raises(ConfigurationError, match="unknown component"):
        DEFAULT.retry_for("disk")


def test_kwargs_are_in_seconds() -> None:
    cb = DEFAULT.breaker_for("telegram", "sendEvent").to_breaker_kwargs()
    assert cb == {
        "enabled": True,
        "failure_threshold": 3,
        "success_threshold": 2,
        "open_timeout": 15.0,
        "monitoring_window": 30.0,
        "failure_ratio": None,
        "minimum_throughput": 3,
        "max_concurrent": 5,
        "half_open_max_calls": 1,
    }
    retry = DEFAULT.retry["telegram"].to_retry_kwargs()
    assert retry == {
        "max_attempts": 5,
        "base_delay": 2.0,
        "max_delay": 30.0,
        "exponential_base": 1.5,
        "backoff": "exponential",
        "jitter": True,
        "jitter_max": 1.0,
        "retryable_codes": frozenset({"TELEGRAM_RATE_LIMIT", "TELEGRAM_SERVER_ERROR", "NETWORK_ERROR"}),
        "non_retryable_codes": frozenset({"TELEGRAM_INVALID_TOKEN", "TELEGRAM_FORBIDDEN", "TELEGRAM_INVALID_CHAT"}),
        "severity_attempts": {"critical": 5, "high": 3, "medium": 2, "low": 1},
    }
    assert RetryConfig(enabled=False).to_retry_kwargs()["max_attempts"] == 1
    assert CircuitBreakerConfig().seconds("monitoring_window") == 60.0
    assert DEFAULT.health.seconds("interval") == 30.0


def test_models_are_immutable() -> None:
    with pytest.raises(ValidationError):
        DEFAULT.health.interval = 1
