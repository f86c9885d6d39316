"""Composition root: settings in, a running server (the frozen ``Runtime``) out.

``open_service(settings)`` builds the runtime in layers, each from the ones before and none
attached later: the parts (outbox, Telegram transport, coordinator, pacer, dispatcher,
supervisor, answers, mode), the use cases over them (``NotificationService``), the
operations over those (chaos, health checks, recovery); it starts the background tasks in
one task group and yields the frozen ``Runtime`` (runtime.py). On exit the task group is
cancelled, in-flight rows go back to pending, and everything is closed. Without a token it
still yields a runtime, whose use cases answer "not configured".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import anyio

from cctg_mcp.answers import DEFAULT_POLL_TIMEOUT, Answers, BridgeAnswers
from cctg_mcp.answers.service import AnswerSource, bot_id_of
from cctg_mcp.answers.store import ANSWERS_FILE
from cctg_mcp.config import Settings
from cctg_mcp.delivery.bridge import bridge_dispatcher
from cctg_mcp.delivery.coordination import Coordinator
from cctg_mcp.delivery.dispatcher import BACKGROUND_CANCEL_MARGIN_S, Dispatcher, background_send_timeout
from cctg_mcp.delivery.housekeeping import run_housekeeping
from cctg_mcp.delivery.local_coordination import LocalCoordinator
from cctg_mcp.delivery.mode import MODE_FILE, ModeStore
from cctg_mcp.delivery.mode_switch import on_telegram_command
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.delivery.service import DEFAULT_TOOL_DEADLINES, NotificationService
from cctg_mcp.delivery.supervisor import DispatcherSupervisor
from cctg_mcp.ops.chaos import ChaosSender, build_chaos
from cctg_mcp.ops.config_support import warn_unsupported
from cctg_mcp.ops.health import install_default_checks
from cctg_mcp.ops.logfile import log_dir, run_log_retention
from cctg_mcp.ops.recovery import build_manager
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.config import ResilienceConfig, load_resilience_config
from cctg_mcp.resilience.health import HealthMonitor, HealthSettings
from cctg_mcp.resilience.metrics import AlertThresholds, MetricsRegistry, serve_prometheus
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.runtime import Runtime
from cctg_mcp.transports.telegram import TelegramTransport

if TYPE_CHECKING:  # only transports/ imports httpx at run time (tests/test_layout.py); redis only when set
    import httpx

    from cctg_mcp.delivery.redis_coordination import RedisCoordinator
    from cctg_mcp.transports.bridge.process import BridgeProcessManager

log = logging.getLogger(__name__)


def lease_for(configured_s: float, config: ResilienceConfig) -> float:
    """The lease a delivery holds: never shorter than the longest attempt (a send tool's
    deadline plus its safety margin, or the background loop's send timeout), so a live
    owner's attempt cannot outlast its lease even before a renewal lands."""
    budgets = [config.timeout_for(operation) for operation in DEFAULT_TOOL_DEADLINES]
    budgets += [config.timeout_for(op, event) for op in DEFAULT_TOOL_DEADLINES for event in config.events]
    longest = max(budgets) + 2.0 + 1.0
    longest = max(longest, background_send_timeout(configured_s) + BACKGROUND_CANCEL_MARGIN_S + 1.0)
    if longest > configured_s:
        log.info("CCTG_LEASE_SECONDS=%g is shorter than the longest attempt; leasing for %gs", configured_s, longest)
    return max(configured_s, longest)


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    resilience: ResilienceConfig | None = None,
    clock: Clock = SYSTEM_CLOCK,
    http_transport: httpx.AsyncBaseTransport | None = None,
    poll_timeout: int = DEFAULT_POLL_TIMEOUT,
    shutdown_grace: float | None = None,
    bridge: BridgeProcessManager | None = None,
) -> AsyncIterator[Runtime]:
    """The running server for ``settings``; the keyword arguments replace a default part
    (tests and embedders): ``http_transport`` under the Bot API client, ``bridge`` the bridge
    process manager, ``shutdown_grace`` the drain's bound."""
    config = resilience if resilience is not None else load_resilience_config({}, settings.config_path)
    warn_unsupported(
        config, environment=settings.environment
    )  # once per start: keys accepted but not acting, and why (ops/config_support.py)
    alerts = config.monitoring.alert_thresholds
    metrics = MetricsRegistry(
        clock=clock,
        disk_path=str(settings.data_dir),  # disk_free_mb: the data dir's volume
        history_interval=config.monitoring.seconds("metrics_interval"),
        history_retention=config.monitoring.retention.seconds("metrics"),
        thresholds=AlertThresholds(
            error_rate=alerts.error_rate,
            response_time_ms=alerts.response_time,
            memory_usage=alerts.memory_usage,
            cpu_usage=alerts.cpu_usage,
        ),
    )
    pipelines = PipelineSet(config, clock=clock, metrics=metrics)
    if settings.problems():
        for problem in settings.problems():
            log.warning("not configured: %s", problem)
        yield Runtime(
            service=NotificationService(
                settings, None, None, clock=clock, pipelines=pipelines, metrics=metrics, resilience=config
            )
        )
        return

    async with AsyncExitStack() as stack:
        outbox = await Outbox.open(
            settings.outbox_path,
            max_pending=settings.outbox_max_pending,
            max_bytes=settings.outbox_max_bytes,
            max_due_s=settings.max_server_wait,
            clock=clock,
            metrics=metrics,
        )
        stack.push_async_callback(outbox.close)
        # Bridge delivery writes CCTelegram event files (delivery/bridge.py): no Bot API client.
        transport = None
        if settings.delivery == "telegram":
            transport = TelegramTransport(
                settings.token,
                settings.api_base_url,
                http_transport=http_transport,
                max_server_wait=settings.max_server_wait,
            )
            stack.push_async_callback(transport.aclose)
        # Chaos faults are injected at this seam, outside production only (see ops/chaos.py).
        chaos_sender = (
            ChaosSender(transport, clock=clock)
            if transport is not None and settings.environment != "production"
            else None
        )
        sender = chaos_sender or transport
        # The sessions sharing this bot: liveness, the one reader, shared budgets (coordination.py):
        # over the data dir, or through Redis for several machines (CCTG_REDIS_URL).
        coordinator: Coordinator
        redis_coordinator: RedisCoordinator | None = None
        if settings.redis_url is not None:
            from cctg_mcp.delivery.redis_coordination import RedisCoordinator, connect  # the [redis] extra

            password = settings.redis_password.get_secret_value() if settings.redis_password else None
            client = connect(settings.redis_url.get_secret_value(), password)
            coordinator = redis_coordinator = RedisCoordinator(client, bot_id_of(settings.token), clock=clock)
        else:
            coordinator = LocalCoordinator(
                settings.data_dir, answers_path=settings.data_dir / ANSWERS_FILE, clock=clock
            )
        await coordinator.start()
        stack.push_async_callback(coordinator.aclose)
        pacer = Pacer(settings.pacing, clock=clock, shared=coordinator)
        lease_s = lease_for(settings.lease_seconds, config)
        # Direct delivery: the server owns the mode (nomad/local/muted); in bridge mode the bridge does.
        mode = ModeStore(settings.data_dir / MODE_FILE, clock=clock) if transport is not None else None
        if sender is None:
            dispatcher: Dispatcher = bridge_dispatcher(
                settings, outbox, pipelines, pacer, clock=clock, coordinator=coordinator, lease_s=lease_s
            )
        else:
            dispatcher = Dispatcher(
                outbox,
                sender,
                pipelines.for_component("telegram"),
                pacer,
                clock=clock,
                lease_s=lease_s,
                send_timeout_s=background_send_timeout(settings.lease_seconds),
                # no more sends in flight than the telegram bulkhead admits (maxConcurrentRequests)
                concurrency=min(8, config.circuit_breaker["telegram"].max_concurrent_requests),
                coordinator=coordinator,
                mode=mode,
            )
        supervisor = DispatcherSupervisor(  # a crashed loop restarts after recovery.restartDelay, backing off
            dispatcher, clock=clock, restart_delay=max(0.05, config.recovery.seconds("restart_delay"))
        )
        answers: AnswerSource
        direct: Answers | None = None
        poller = None
        if transport is not None:  # answers: getUpdates poller + response store (answers/)
            direct = await Answers.open(
                settings,
                transport,
                pipelines,
                clock=clock,
                metrics=metrics,
                poll_timeout=poll_timeout,
                coordinator=coordinator,
            )
            answers, poller = direct, direct.poller
        else:  # bridge: the bridge reads Telegram; answers come from its response files
            answers = await BridgeAnswers.open(settings, clock=clock, metrics=metrics)
        stack.push_async_callback(answers.aclose)
        service = NotificationService(
            settings,
            outbox,
            dispatcher,
            clock=clock,
            pipelines=pipelines,
            metrics=metrics,
            resilience=config,
            transport=sender,
            coordinator=coordinator,
            supervisor=supervisor,
            answers=answers,
            mode=mode,
            bridge=bridge,
        )
        if poller is not None:  # /cct:nomad, /cct:local, /cct:mute from Telegram act on the service
            poller.on_command = partial(on_telegram_command, service)
            if redis_coordinator is not None:
                # The reader shares what it reads; every machine stores it against its own outbox.
                poller.shared = redis_coordinator
                redis_coordinator.set_updates_sink(poller.ingest_shared)
        # The operations over the service: chaos (outside production), health checks, recovery.
        chaos = None
        if chaos_sender is not None or (sender is None and settings.environment != "production"):
            chaos = build_chaos(service, chaos_sender, supervisor)  # bridge mode: ops/chaos_bridge.py
        monitor = HealthMonitor(HealthSettings.from_config(config.health), clock)
        install_default_checks(monitor, service)
        recovery = build_manager(service)  # acts on the service; see ops/recovery.py
        monitor.add_listener(recovery.on_health_change)  # unhealthy -> a session; healthy -> levers undone
        async with anyio.create_task_group() as tg:
            await tg.start(coordinator.run)
            await tg.start(supervisor.run)
            if poller is not None:  # only the data dir's one reader polls
                await tg.start(partial(poller.run_as_reader, coordinator))
            if chaos is not None:
                await tg.start(chaos.run)  # hosts the experiments' rollback timers
            if recovery.settings.enabled:
                await tg.start(recovery.run)  # before the monitor, so no transition is missed
            if monitor.settings.enabled:
                await tg.start(monitor.run)
            if config.monitoring.enabled:
                tg.start_soon(metrics.run_sampler)
            await tg.start(
                partial(
                    run_housekeeping,
                    outbox,
                    direct.store if direct is not None else None,  # the bridge's files age by mtime
                    config.monitoring.retention.seconds("events"),
                    clock=clock,
                )
            )
            await tg.start(  # MONITORING_LOGS_RETENTION: old log files in <data dir>/logs go
                partial(
                    run_log_retention,
                    log_dir(settings.data_dir),
                    config.monitoring.retention.seconds("logs"),
                    clock=clock,
                )
            )
            prometheus = config.monitoring.prometheus
            prometheus_port = None
            if prometheus.enabled:  # PROMETHEUS_ENABLED / _PORT / _ENDPOINT (a path), loopback only
                prometheus_port = await tg.start(
                    functools.partial(serve_prometheus, metrics, "127.0.0.1", prometheus.port, path=prometheus.endpoint)
                )
                log.info("Prometheus metrics on http://127.0.0.1:%d%s", prometheus_port, prometheus.endpoint)
            runtime = Runtime(
                service=service, health=monitor, recovery=recovery, chaos=chaos, prometheus_port=prometheus_port
            )
            try:
                yield runtime
            finally:
                # Graceful: deliveries in progress get recovery.gracefulShutdownTimeout (unless the
                # caller bounds it), then the rest is cancelled and goes back to pending.
                grace = (
                    shutdown_grace
                    if shutdown_grace is not None
                    else config.recovery.seconds("graceful_shutdown_timeout")
                )
                with anyio.CancelScope(shield=True):
                    left = await dispatcher.drain(grace)
                if left:
                    log.warning(
                        "shutdown: %d delivery(ies) still running after the %.1fs grace "
                        "(gracefulShutdownTimeout); they go back to the queue",
                        left,
                        grace,
                    )
                tg.cancel_scope.cancel()
