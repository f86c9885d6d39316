"""The pipeline: deadline → retry → breaker → attempt timeout → call.

Retry sits *outside* the breaker (as in Polly and resilience4j): once the breaker opens,
the remaining attempts are rejected fast, and retried only if the breaker's
``retry_after`` fits in the remaining budget. The deadline is absolute on the injected
clock and bounds every wait (backoff, 429 pauses); the callers (a send tool, the
dispatcher) bound the whole operation with one cancel scope of their own.

Per-operation and per-event settings: ``call(operation, fn, event_type=...)`` resolves (once
per pair, then a dict lookup) the configuration's ``operations.<operation>`` and
``events.<event_type>`` overrides. Calls whose effective breaker settings equal the
component's share the component's breaker; an override gets its own breaker, named
``<component>.<operation>`` (state, status and manual force per name). Likewise the retry
executor. Every breaker of a component is in ``Pipeline.breakers``.

Cost on the success path: one ``acquire`` (a few attribute reads), one plain ``await``,
one ``record_success`` and one metrics update. No retry planning on the first attempt, and no
cancel scope per attempt unless ``attempt_timeout`` is configured (httpx already bounds
each HTTP attempt with its own timeouts).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

from cctg_mcp.resilience.breaker import BreakerSettings, BreakerTransition, CircuitBreaker
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.config_tables import COMPONENTS
from cctg_mcp.resilience.errors import (
    AttemptTimeoutError,
    BaseResilienceError,
    CircuitBreakerError,
    ResilienceTimeoutError,
)
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.retry import RetryEvent, RetryExecutor, RetryPolicy

if TYPE_CHECKING:
    from cctg_mcp.resilience.config import ResilienceConfig

T = TypeVar("T")


class Pipeline:
    """One component's pipeline (its breaker and retry executor are shared by its operations)."""

    def __init__(
        self,
        component: str,
        breaker: CircuitBreaker,
        retry: RetryExecutor,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: MetricsRegistry | None = None,
        attempt_timeout: float | None = None,
        enabled: bool = True,
        wait_for_open_breaker: bool = False,
        config: ResilienceConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.component = component
        #: False (default): a call rejected by the breaker gives up at once, so a send answers
        #: ``queued`` fast and the outbox retries at the breaker's ``retry_after``. True: the
        #: retry layer may wait for the breaker when its retry_after fits the deadline.
        self.wait_for_open_breaker = wait_for_open_breaker
        self.breaker = breaker
        self.retry = retry
        self.clock = clock
        self.metrics = metrics
        self.attempt_timeout = attempt_timeout
        self.enabled = enabled
        self.config = config
        self._rng = rng or random.Random()
        #: Every breaker of this component by name: its own and the per-operation ones.
        self.breakers: dict[str, CircuitBreaker] = {breaker.name: breaker}
        self.retries: dict[str, RetryExecutor] = {retry.name: retry}
        self._routes: dict[tuple[str, str | None], tuple[CircuitBreaker, RetryExecutor]] = {}
        self._by_settings: dict[str, CircuitBreaker | RetryExecutor] = {}

    def route(self, operation: str, event_type: str | None = None) -> tuple[CircuitBreaker, RetryExecutor]:
        """The breaker and retry executor for ``operation`` (and ``event_type``) calls."""
        key = (operation, event_type)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = self._resolve(operation, event_type)
        return found

    def _resolve(self, operation: str, event_type: str | None) -> tuple[CircuitBreaker, RetryExecutor]:
        config = self.config
        if config is None:
            return self.breaker, self.retry
        name = f"{self.component}.{operation}" + (f".{event_type}" if event_type in config.events else "")
        cb = config.breaker_for(self.component, operation, event_type)
        breaker = self.breaker
        if cb != config.breaker_for(self.component):
            key = "cb:" + cb.model_dump_json()
            found = self._by_settings.get(key)
            if not isinstance(found, CircuitBreaker):
                found = CircuitBreaker(name, BreakerSettings(**cb.to_breaker_kwargs()), clock=self.clock)
                for listener in self.breaker.listeners:
                    found.add_listener(listener)
                self._by_settings[key] = self.breakers[name] = found
            breaker = found
        rc = config.retry_for(self.component, operation, event_type)
        retry = self.retry
        if rc != config.retry_for(self.component):
            key = "retry:" + rc.model_dump_json()
            found_retry = self._by_settings.get(key)
            if not isinstance(found_retry, RetryExecutor):
                policy = RetryPolicy(**rc.to_retry_kwargs())
                found_retry = RetryExecutor(policy, clock=self.clock, rng=random.Random(self._rng.random()), name=name)
                self._by_settings[key] = self.retries[name] = found_retry
            retry = found_retry
        return breaker, retry

    async def call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        event_type: str | None = None,
    ) -> T:
        """Run ``fn`` through the pipeline; raise our errors only (the original on failure)."""
        if not self.enabled:
            return await fn()
        breaker, retry = self._routes.get((operation, event_type)) or self.route(operation, event_type)

        async def attempt() -> T:
            return await self._attempt(operation, breaker, fn, deadline)

        def on_retry(event: RetryEvent) -> None:
            if self.metrics is not None:
                self.metrics.record_retry(self.component, operation, event.delay)

        return await retry.run(attempt, deadline=deadline, on_retry=on_retry)

    async def _attempt(
        self, operation: str, breaker: CircuitBreaker, fn: Callable[[], Awaitable[T]], deadline: float | None
    ) -> T:
        clock, metrics = self.clock, self.metrics
        try:
            permit = breaker.acquire()
        except CircuitBreakerError as exc:
            if metrics is not None:
                metrics.record_call(self.component, operation, duration=0.0, outcome="rejected", error_code=exc.code)
            if not self.wait_for_open_breaker:
                exc.retryable = False
            raise
        start = clock.monotonic()
        try:
            timeout = self.attempt_timeout
            if deadline is not None and timeout is not None:
                timeout = min(timeout, max(0.0, deadline - start))
            if timeout is None:
                result = await fn()
            else:
                with clock.timeout_scope(timeout) as scope:
                    result = await fn()
                if scope.cancelled_caught:
                    raise AttemptTimeoutError(
                        f"{self.component}.{operation} took longer than {timeout:.3f}s", code="ATTEMPT_TIMEOUT"
                    )
        except Exception as exc:
            duration = clock.monotonic() - start
            permit.record_failure(exc, duration)
            if metrics is not None:
                code = exc.code if isinstance(exc, BaseResilienceError) else type(exc).__name__
                outcome: Literal["timeout", "failure"] = (
                    "timeout" if isinstance(exc, ResilienceTimeoutError) else "failure"
                )
                metrics.record_call(self.component, operation, duration=duration, outcome=outcome, error_code=code)
            raise
        except BaseException:  # cancelled (or interrupted): says nothing about the dependency
            permit.release()
            raise
        duration = clock.monotonic() - start
        permit.record_success(duration, result)
        if metrics is not None:
            metrics.record_call(self.component, operation, duration=duration, outcome="success")
        return result


def breaker_settings(config: ResilienceConfig, component: str) -> BreakerSettings:
    return BreakerSettings(**config.breaker_for(component).to_breaker_kwargs())


def retry_policy(config: ResilienceConfig, component: str) -> RetryPolicy:
    return RetryPolicy(**config.retry_for(component).to_retry_kwargs())


class PipelineSet:
    """The pipelines of every component, built from one ``ResilienceConfig``."""

    def __init__(
        self,
        config: ResilienceConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: MetricsRegistry | None = None,
        rng: random.Random | None = None,
        attempt_timeouts: dict[str, float] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.pipelines: dict[str, Pipeline] = {}
        self._in_use: dict[str, Pipeline] = {}
        rng = rng or random.Random()
        for component in COMPONENTS:
            breaker = CircuitBreaker(component, breaker_settings(config, component), clock=clock)
            if metrics is not None:
                breaker.add_listener(self._record_transition)
                metrics.observe_breaker(component, str(breaker.state))
            retry = RetryExecutor(
                retry_policy(config, component), clock=clock, rng=random.Random(rng.random()), name=component
            )
            self.pipelines[component] = Pipeline(
                component,
                breaker,
                retry,
                clock=clock,
                metrics=metrics,
                attempt_timeout=(attempt_timeouts or {}).get(component),
                enabled=config.enabled,
                config=config,
                rng=random.Random(rng.random()),
            )
            for operation in config.operations:  # per-operation breakers exist from the start
                self.pipelines[component].route(operation)

    def _record_transition(self, transition: BreakerTransition) -> None:
        assert self.metrics is not None
        self.metrics.record_breaker_transition(
            transition.breaker, transition.from_state.value, transition.to_state.value
        )

    def for_component(self, component: str) -> Pipeline:
        """The pipeline that will guard ``component``'s calls; from now on it is ``in_use``."""
        pipeline = self.pipelines[component]
        self._in_use.setdefault(component, pipeline)
        return pipeline

    @property
    def in_use(self) -> dict[str, Pipeline]:
        """The pipelines something was wired to call through (what status and tools list): a
        component no call goes through (``filesystem``/``network`` today, ``bridge`` in direct
        delivery) is not reported, since its zero counts would protect nothing."""
        return dict(self._in_use)

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker by name: each component's and the per-operation ones created so far."""
        return {name: b for p in self.pipelines.values() for name, b in p.breakers.items()}
