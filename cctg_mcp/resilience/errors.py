"""The error tree every layer speaks.

Foreign errors (httpx, OS, Telegram envelopes) are turned into these at the transport
boundary; everything above the transport only sees ``BaseResilienceError`` subclasses.

::

    BaseResilienceError                     code, category, severity, retryable, recovery, context
    ├── BridgeError                         category=bridge          (bridge down / crashed)
    ├── NetworkError                        category=network         (connect refused, reset, DNS)
    ├── TelegramError                       category=telegram        (carries error_code, description)
    │   ├── TelegramRateLimited             429: pauses for retry_after, never a breaker failure
    │   ├── TelegramServerError             5xx: transient, counts toward the breaker
    │   ├── TelegramBadRequest              400: permanent for this request, not the dependency's fault
    │   │   └── TelegramChatMigrated        400 with migrate_to_chat_id: the group became a supergroup
    │   ├── TelegramUnauthorized            401: bad or revoked token, permanent, alert a person
    │   ├── TelegramForbidden               403: blocked / kicked, permanent for one chat only
    │   └── TelegramConflict                409: two pollers or a webhook, configuration problem
    ├── FilesystemError                     category=filesystem      (EACCES, ENOSPC, ...)
    ├── CircuitBreakerError                 category=circuit_breaker (rejections, never the call's fault)
    │   ├── CircuitOpenError                open or half-open without a permit; carries retry_after
    │   ├── IsolatedCircuitError            manually isolated (forced open)
    │   └── BulkheadFullError               maxConcurrentRequests calls already in flight
    ├── ResilienceTimeoutError              category=timeout
    │   ├── AttemptTimeoutError             one attempt ran past its timeout (counts as a failure)
    │   └── DeadlineExceededError           the whole operation ran out of budget
    ├── ResourceError                       category=resource        (queue full, out of memory)
    ├── ConfigurationError                  category=configuration   (bad settings; start-up stops)
    ├── ValidationError                     category=validation      (bad input; names the field)
    └── SystemFailure                       category=system          (anything unclassified)

``classify(exc)`` maps what this generic package can know (our errors, OS errors, timeouts)
to the tree. HTTP client exceptions and Bot API envelopes are mapped once, in
``cctg_mcp.transports.telegram``; nothing above the transports sees them.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cctg_mcp.resilience.clock import SYSTEM_CLOCK


class ErrorCategory(StrEnum):
    """What kind of failure an error is."""

    BRIDGE = "bridge"
    NETWORK = "network"
    TELEGRAM = "telegram"
    FILESYSTEM = "filesystem"
    CIRCUIT_BREAKER = "circuit_breaker"
    TIMEOUT = "timeout"
    RESOURCE = "resource"
    CONFIGURATION = "configuration"
    VALIDATION = "validation"
    SYSTEM = "system"


class Severity(StrEnum):
    """How serious an error is."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RecoveryStrategy(StrEnum):
    """How a failure may be recovered from."""

    RETRY = "retry"
    CIRCUIT_BREAKER = "circuit_breaker"
    RESTART = "restart"
    FALLBACK = "fallback"
    GRACEFUL_DEGRADATION = "graceful_degradation"
    ESCALATE = "escalate"
    IGNORE = "ignore"
    MANUAL = "manual"


#: The order in which ``escalate()`` moves from one strategy to the next.
ESCALATION_ORDER: tuple[RecoveryStrategy, ...] = (
    RecoveryStrategy.RETRY,
    RecoveryStrategy.CIRCUIT_BREAKER,
    RecoveryStrategy.RESTART,
    RecoveryStrategy.FALLBACK,
    RecoveryStrategy.GRACEFUL_DEGRADATION,
    RecoveryStrategy.ESCALATE,
    RecoveryStrategy.MANUAL,
)

_SECRET_PATTERNS = (
    # Bot API tokens: "<digits>:<35 url-safe chars>", also inside URLs (/bot<token>/method).
    re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
)


def redact(text: str, *secrets: str) -> str:
    """Remove bot tokens, bearer tokens and the given secrets from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS[0].sub("[REDACTED]", text)
    return _SECRET_PATTERNS[1].sub(r"\1[REDACTED]", text)


@dataclass
class RecoveryRecord:
    """An error's recovery plan and the attempts made on it."""

    strategy: RecoveryStrategy
    max_attempts: int = 3
    current_attempt: int = 0
    escalation_level: int = 0
    history: list[str] = field(default_factory=list)


@dataclass
class ErrorContext:
    """Where and when an error happened."""

    operation: str | None = None
    component: str | None = None
    correlation_id: str | None = None
    timestamp: float = field(default_factory=SYSTEM_CLOCK.time)
    metadata: dict[str, Any] = field(default_factory=dict)


class BaseResilienceError(Exception):
    """Root of the tree. Class attributes are defaults; instances may override them."""

    code: str = "RESILIENCE_ERROR"
    category: ErrorCategory = ErrorCategory.SYSTEM
    severity: Severity = Severity.MEDIUM
    retryable: bool = False
    #: Whether this error says something about the dependency's health (breaker counts it).
    counts_as_failure: bool = True
    default_strategy: RecoveryStrategy = RecoveryStrategy.MANUAL

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        severity: Severity | None = None,
        retryable: bool | None = None,
        counts_as_failure: bool | None = None,
        retry_after: float | None = None,
        context: ErrorContext | None = None,
        recovery: RecoveryRecord | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if severity is not None:
            self.severity = severity
        if retryable is not None:
            self.retryable = retryable
        if counts_as_failure is not None:
            self.counts_as_failure = counts_as_failure
        #: Seconds the caller should wait before trying again (429, open breaker), if known.
        self.retry_after = retry_after
        self.context = context or ErrorContext()
        self.recovery = recovery or RecoveryRecord(strategy=self.default_strategy)

    def can_recover(self) -> bool:
        """True while an automatic strategy has attempts left."""
        if self.recovery.strategy in (RecoveryStrategy.MANUAL, RecoveryStrategy.IGNORE):
            return False
        return self.recovery.current_attempt < self.recovery.max_attempts

    def escalate(self) -> RecoveryStrategy:
        """Move to the next strategy in ``ESCALATION_ORDER`` and return it."""
        current = self.recovery.strategy
        self.recovery.history.append(current.value)
        try:
            index = ESCALATION_ORDER.index(current)
        except ValueError:
            index = len(ESCALATION_ORDER) - 2
        nxt = ESCALATION_ORDER[min(index + 1, len(ESCALATION_ORDER) - 1)]
        self.recovery.strategy = nxt
        self.recovery.escalation_level += 1
        self.recovery.current_attempt = 0
        return nxt

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready, redacted description (safe for logs, tool results and metrics)."""
        return {
            "type": type(self).__name__,
            "code": self.code,
            "category": self.category.value,
            "severity": self.severity.value,
            "retryable": self.retryable,
            "message": redact(self.message),
            "retry_after": self.retry_after,
            "recovery": {
                "strategy": self.recovery.strategy.value,
                "max_attempts": self.recovery.max_attempts,
                "current_attempt": self.recovery.current_attempt,
                "escalation_level": self.recovery.escalation_level,
                "history": list(self.recovery.history),
            },
            "context": {
                "operation": self.context.operation,
                "component": self.context.component,
                "correlation_id": self.context.correlation_id,
                "timestamp": self.context.timestamp,
                "metadata": {k: redact(str(v)) for k, v in self.context.metadata.items()},
            },
        }

    def __str__(self) -> str:
        return redact(self.message)


class BridgeError(BaseResilienceError):
    """The CCTelegram bridge is down, crashed or did not take an event file."""

    code = "BRIDGE_ERROR"
    category = ErrorCategory.BRIDGE
    severity = Severity.HIGH
    retryable = True
    default_strategy = RecoveryStrategy.RESTART


class NetworkError(BaseResilienceError):
    """The network failed: connection refused or reset, DNS, unreachable host."""

    code = "NETWORK_ERROR"
    category = ErrorCategory.NETWORK
    retryable = True
    default_strategy = RecoveryStrategy.RETRY


class TelegramError(BaseResilienceError):
    """Telegram answered with an error; ``error_code`` and ``description`` say which."""

    code = "TELEGRAM_ERROR"
    category = ErrorCategory.TELEGRAM
    default_strategy = RecoveryStrategy.RETRY

    def __init__(
        self,
        message: str,
        *,
        error_code: int | None = None,
        description: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.error_code = error_code
        self.description = description


class TelegramRateLimited(TelegramError):
    """Telegram's 429: wait ``retry_after`` seconds; never a breaker failure."""

    code = "TELEGRAM_RATE_LIMIT"
    retryable = True
    counts_as_failure = False
    severity = Severity.LOW


class TelegramServerError(TelegramError):
    """Telegram's 5xx (or a non-Bot-API body from a proxy): transient, counts toward the breaker."""

    code = "TELEGRAM_SERVER_ERROR"
    retryable = True


class TelegramBadRequest(TelegramError):
    """Telegram's 400: this request is wrong (text, chat, markup); the dependency is fine."""

    code = "TELEGRAM_BAD_REQUEST"
    counts_as_failure = False
    default_strategy = RecoveryStrategy.MANUAL


class TelegramChatMigrated(TelegramBadRequest):
    """Telegram's 400 for a group that became a supergroup; ``migrate_to_chat_id`` is its new id."""

    code = "TELEGRAM_CHAT_MIGRATED"

    def __init__(self, message: str, *, migrate_to_chat_id: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.migrate_to_chat_id = migrate_to_chat_id


class TelegramUnauthorized(TelegramError):
    """Telegram's 401: the bot token is wrong or revoked; a person must fix TELEGRAM_BOT_TOKEN."""

    code = "TELEGRAM_INVALID_TOKEN"
    severity = Severity.CRITICAL
    # A wrong token is not an outage, but every call will fail the same way: let the
    # breaker see it so sends stop hammering Telegram, and alert a person.
    counts_as_failure = True
    default_strategy = RecoveryStrategy.MANUAL


class TelegramForbidden(TelegramError):
    """Telegram's 403: this chat blocked or never started the bot; other chats are fine."""

    code = "TELEGRAM_FORBIDDEN"
    counts_as_failure = False
    default_strategy = RecoveryStrategy.MANUAL


class TelegramConflict(TelegramError):
    """Telegram's 409: another getUpdates reader or a webhook is active for this bot."""

    code = "TELEGRAM_CONFLICT"
    severity = Severity.HIGH
    counts_as_failure = False
    default_strategy = RecoveryStrategy.MANUAL


class FilesystemError(BaseResilienceError):
    """A file operation failed (permissions, missing directory, too many open files)."""

    code = "FILESYSTEM_ERROR"
    category = ErrorCategory.FILESYSTEM
    default_strategy = RecoveryStrategy.RETRY


class CircuitBreakerError(BaseResilienceError):
    """A breaker rejected the call without running it; never the call's own fault."""

    code = "CIRCUIT_BREAKER_ERROR"
    category = ErrorCategory.CIRCUIT_BREAKER
    counts_as_failure = False
    default_strategy = RecoveryStrategy.CIRCUIT_BREAKER


class CircuitOpenError(CircuitBreakerError):
    """The breaker is open (or half-open with no probe permit left); ``retry_after`` says when."""

    code = "CIRCUIT_OPEN"
    retryable = True


class IsolatedCircuitError(CircuitBreakerError):
    """The breaker was forced open by a person or a recovery action."""

    code = "CIRCUIT_ISOLATED"
    default_strategy = RecoveryStrategy.MANUAL


class BulkheadFullError(CircuitBreakerError):
    """The component already has ``maxConcurrentRequests`` calls in flight; this one was not made."""

    code = "BULKHEAD_FULL"
    category = ErrorCategory.RESOURCE


class ResilienceTimeoutError(BaseResilienceError):
    """Something ran out of time."""

    code = "TIMEOUT"
    category = ErrorCategory.TIMEOUT
    retryable = True
    default_strategy = RecoveryStrategy.RETRY


class AttemptTimeoutError(ResilienceTimeoutError):
    """One attempt ran past its timeout; counts as a failure of the dependency."""

    code = "ATTEMPT_TIMEOUT"


class DeadlineExceededError(ResilienceTimeoutError):
    """The whole operation's budget is spent; the event stays queued in the outbox."""

    code = "DEADLINE_EXCEEDED"
    retryable = False  # the budget is spent: retrying inside it cannot help
    counts_as_failure = False
    default_strategy = RecoveryStrategy.FALLBACK


class ResourceError(BaseResilienceError):
    """A local resource is exhausted: the queue is full, the disk or memory ran out."""

    code = "RESOURCE_EXHAUSTED"
    category = ErrorCategory.RESOURCE
    severity = Severity.HIGH
    counts_as_failure = False
    default_strategy = RecoveryStrategy.GRACEFUL_DEGRADATION


class ConfigurationError(BaseResilienceError):
    """The settings are wrong or missing; the message names the variable to fix."""

    code = "INVALID_CONFIG"
    category = ErrorCategory.CONFIGURATION
    severity = Severity.CRITICAL
    counts_as_failure = False
    default_strategy = RecoveryStrategy.MANUAL


class ValidationError(BaseResilienceError):
    """The input is invalid; the message names the field and what is allowed."""

    code = "INVALID_INPUT"
    category = ErrorCategory.VALIDATION
    severity = Severity.LOW
    counts_as_failure = False
    default_strategy = RecoveryStrategy.IGNORE


class SystemFailure(BaseResilienceError):
    """Anything not classified otherwise (a bug, an unexpected OS error)."""

    code = "SYSTEM_ERROR"
    category = ErrorCategory.SYSTEM
    default_strategy = RecoveryStrategy.ESCALATE


_RETRYABLE_ERRNOS = {
    errno.ECONNREFUSED: "ECONNREFUSED",
    errno.ECONNRESET: "ECONNRESET",
    errno.ETIMEDOUT: "ETIMEDOUT",
    errno.EHOSTUNREACH: "EHOSTUNREACH",
    errno.ENETUNREACH: "ENETUNREACH",
    errno.EPIPE: "EPIPE",
    errno.ECONNABORTED: "ECONNABORTED",
}
_FS_TRANSIENT = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE", errno.EAGAIN: "EAGAIN", errno.EBUSY: "EBUSY"}
_FS_PERMANENT = {
    errno.ENOENT: "ENOENT",
    errno.EACCES: "EACCES",
    errno.EPERM: "EPERM",
    errno.EISDIR: "EISDIR",
    errno.ENOTDIR: "ENOTDIR",
    errno.EROFS: "EROFS",
}


def classify(exc: BaseException) -> BaseResilienceError:
    """Map any exception to the tree (our own errors pass through unchanged)."""
    if isinstance(exc, BaseResilienceError):
        return exc
    if isinstance(exc, TimeoutError):
        return AttemptTimeoutError(redact(f"timed out: {exc}"), code="ETIMEDOUT")
    if isinstance(exc, OSError):
        err = exc.errno
        text = redact(f"{type(exc).__name__}: {exc}")
        if err in _RETRYABLE_ERRNOS:
            return NetworkError(text, code=_RETRYABLE_ERRNOS[err])
        if err == errno.ENOSPC:
            return ResourceError(text, code="ENOSPC", severity=Severity.CRITICAL)
        if err in _FS_TRANSIENT:
            return FilesystemError(text, code=_FS_TRANSIENT[err], retryable=True)
        if err in _FS_PERMANENT:
            return FilesystemError(text, code=_FS_PERMANENT[err], retryable=False, counts_as_failure=False)
        return SystemFailure(text, code="OS_ERROR")
    if isinstance(exc, MemoryError):
        return ResourceError("out of memory", code="ENOMEM", severity=Severity.CRITICAL)
    if isinstance(exc, (ValueError, TypeError)):
        return ValidationError(redact(f"{type(exc).__name__}: {exc}"))
    return SystemFailure(redact(f"{type(exc).__name__}: {exc}"))
