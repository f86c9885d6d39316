"""The seed's fixed tables for the resilience configuration: value sets and ``DEFAULTS``.

``DEFAULTS`` is the seed's ``createDefaultResilienceConfig()`` in its camelCase shape; the
models in ``config`` merge any partial input over it. Pure data: imports nothing of ours.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

Component = Literal["bridge", "telegram", "filesystem", "network"]
COMPONENTS: tuple[Component, ...] = get_args(Component)
Priority = Literal["low", "normal", "high", "critical"]
Environment = Literal["development", "staging", "production"]
Backoff = Literal["exponential", "linear", "fixed"]


# ---- defaults: the seed's createDefaultResilienceConfig(). Health, monitoring and recovery
# scalars are the models' own defaults (which are the seed's); only the tables live here.
def _cb(f: int, s: int, t: int, w: int, mc: int, v: int) -> dict[str, Any]:
    return {
        "failureThreshold": f,
        "successThreshold": s,
        "timeout": t,
        "monitoringWindow": w,
        "maxConcurrentRequests": mc,
        "volumeThreshold": v,
    }


def _rt(n: int, base: int, mx: int, exp: float, jit: int | None, ok: str, no: str) -> dict[str, Any]:
    return {
        "maxAttempts": n,
        "baseDelay": base,
        "maxDelay": mx,
        "exponentialBase": exp,
        "jitterEnabled": jit is not None,
        "jitterMax": jit or 0,
        "retryableErrors": ok.split(),
        "nonRetryableErrors": no.split(),
    }


def _op(priority: str, timeout: int, **overrides: dict[str, Any]) -> dict[str, Any]:
    return {"priority": priority, "timeout": timeout, **overrides}


_URL = "http://localhost:8080"
DEFAULTS: dict[str, Any] = {
    "circuitBreaker": {
        "bridge": _cb(5, 3, 30000, 60000, 10, 5),
        "telegram": _cb(3, 2, 15000, 30000, 5, 3),
        "filesystem": _cb(10, 5, 5000, 60000, 20, 10),
        "network": _cb(5, 3, 20000, 60000, 10, 5),
    },
    "retry": {
        "bridge": _rt(
            3,
            1000,
            10000,
            2.0,
            500,
            "ECONNREFUSED ETIMEDOUT ENOTFOUND BRIDGE_NOT_READY",
            "AUTH_FAILED INVALID_INPUT BRIDGE_CRASHED",
        ),
        "telegram": _rt(
            5,
            2000,
            30000,
            1.5,
            1000,
            "TELEGRAM_RATE_LIMIT TELEGRAM_SERVER_ERROR NETWORK_ERROR",
            "TELEGRAM_INVALID_TOKEN TELEGRAM_FORBIDDEN TELEGRAM_INVALID_CHAT",
        ),
        "filesystem": _rt(3, 500, 5000, 2.0, None, "EMFILE ENFILE EAGAIN EBUSY", "ENOENT EACCES EISDIR ENOTDIR"),
        "network": _rt(
            4, 1000, 15000, 2.0, 500, "ECONNREFUSED ETIMEDOUT ENOTFOUND ECONNRESET", "ECONNABORTED ECANCELED HTTP_4XX"
        ),
    },
    "health": {
        "endpoints": [
            {"name": "bridge-health", "url": f"{_URL}/health", "timeout": 3000, "retries": 2, "critical": True},
            {"name": "bridge-metrics", "url": f"{_URL}/metrics", "timeout": 3000, "retries": 1},
        ]
    },
    "recovery": {
        "backupStrategies": [
            {
                "name": "bridge-restart",
                "priority": 1,
                "timeout": 15000,
                "maxAttempts": 3,
                "conditions": ["BRIDGE_DOWN", "BRIDGE_UNHEALTHY"],
            },
            {
                "name": "process-restart",
                "priority": 2,
                "timeout": 30000,
                "maxAttempts": 2,
                "conditions": ["BRIDGE_CRASHED", "BRIDGE_UNRESPONSIVE"],
            },
            {
                "name": "fallback-mode",
                "priority": 3,
                "timeout": 5000,
                "maxAttempts": 1,
                "conditions": ["ALL_RECOVERY_FAILED"],
            },
        ]
    },
    "operations": {
        "sendEvent": _op("high", 10000, circuitBreaker={"failureThreshold": 3, "timeout": 15000}),
        "sendMessage": _op("normal", 5000),
        "sendTaskCompletion": _op("high", 8000),
        "sendPerformanceAlert": _op("critical", 3000, circuitBreaker={"failureThreshold": 2, "timeout": 10000}),
        "sendApprovalRequest": _op("high", 5000),
        "getBridgeStatus": _op("normal", 3000, retry={"maxAttempts": 2, "baseDelay": 500}),
        "startBridge": _op("critical", 30000, retry={"maxAttempts": 3, "baseDelay": 5000}),
        "stopBridge": _op("critical", 15000),
        "restartBridge": _op("critical", 45000),
    },
    "events": {
        "task_completion": _op("high", 8000),
        "task_started": _op("normal", 5000),
        "task_failed": _op("high", 8000),
        "performance_alert": _op("critical", 3000, retry={"maxAttempts": 5, "baseDelay": 500}),
        "error_occurred": _op("critical", 3000, retry={"maxAttempts": 5, "baseDelay": 500}),
        "approval_request": _op("high", 5000),
        "info_notification": _op("low", 10000),
        "system_health": _op("normal", 5000),
    },
}
