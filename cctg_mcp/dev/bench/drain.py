"""3. Drain: events queued during an outage (the stand-in answers 502), then delivered once it
recovers with Telegram's flood limits on; time to the last message against the ideal.

``drain_sessions``: the same backlog accepted by several server processes sharing one data
dir (as several Claude Code sessions do); they drain it together, within the same limits.

``redis_drain``: the same backlog accepted by three processes with separate data dirs (three
machines) coordinating through one real ``redis-server`` (``CCTG_REDIS_URL``)."""

from __future__ import annotations

import json
import statistics
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

import anyio

from cctg_mcp.dev.bench.plan import CHAT_BURST, RATE_GLOBAL, RATE_PER_CHAT, Plan
from cctg_mcp.dev.bench.roundtrip import server_env, stdio_server, tool
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.testing.redis_server import redis_server


def drain_ideal_seconds(
    per_chat: int, chats: int, rate: float, burst: int, global_rate: float, global_burst: int
) -> float:
    """The fastest delivery the limits allow, starting with full buckets."""
    chat_bound = max(0, per_chat - burst) / rate
    global_bound = max(0, per_chat * chats - global_burst) / global_rate
    return max(chat_bound, global_bound)


async def drain_phase(plan: Plan, tmp: Path, errlog: TextIO) -> dict[str, Any]:
    r = await _drain(plan, tmp / "drain", errlog, sessions=1)
    return {
        "drain_seconds": r["seconds"],
        "drain_ideal_seconds": r["ideal"],
        "drain_429s": r["429s"],
        "_drain_first_s": r["first"],
        "_drain_statuses": r["statuses"],
        "_drain_duplicates": r["duplicates"],
    }


async def drain_sessions_phase(plan: Plan, tmp: Path, errlog: TextIO, sessions: int = 4) -> dict[str, Any]:
    r = await _drain(plan, tmp / "drain-sessions", errlog, sessions=sessions)
    return {
        "multi_session_drain_seconds": r["seconds"],
        "multi_session_drain_ideal_seconds": r["ideal"],
        "multi_session_429s": r["429s"],
        "_multi_session_sessions": sessions,
        "_multi_session_duplicates": r["duplicates"],
        "_multi_session_first_s": r["first"],
    }


async def redis_drain_phase(plan: Plan, tmp: Path, errlog: TextIO, machines: int = 3) -> dict[str, Any]:
    """The drain by ``machines`` processes with separate data dirs sharing one real
    ``redis-server`` on loopback, and the added cost of a Redis take per send."""
    (tmp / "redis").mkdir(exist_ok=True)
    with redis_server(tmp / "redis") as url:
        r = await _drain(plan, tmp / "drain-redis", errlog, sessions=machines, redis_url=url)
        take_us = await _redis_take_us(url, 500 if plan.mode == "full" else 100)
    return {
        "redis_drain_seconds": r["seconds"],
        "redis_drain_ideal_seconds": r["ideal"],
        "redis_429s": r["429s"],
        "redis_take_us_p50": take_us,
        "_redis_machines": machines,
        "_redis_duplicates": r["duplicates"],
    }


async def _redis_take_us(url: str, n: int) -> float:
    """p50 of one shared-budget take on Redis (one Lua script round trip): what a send adds."""
    from cctg_mcp.delivery.coordination import BucketSpec
    from cctg_mcp.delivery.redis_coordination import RedisCoordinator, connect

    coordinator = RedisCoordinator(connect(url), 1, lease_s=10.0)
    await coordinator.start()
    specs = [BucketSpec("chat:1", 1e9, 1e9), BucketSpec("global", 1e9, 1e9)]
    times: list[float] = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            await coordinator.take(specs, 0.0)
            times.append(time.perf_counter() - started)
    finally:
        await coordinator.aclose()
    return round(statistics.median(times) * 1e6, 1)


async def _drain(
    plan: Plan, data_dir: Path, errlog: TextIO, *, sessions: int, redis_url: str | None = None
) -> dict[str, Any]:
    users = [100_000_001 + i for i in range(plan.drain_chats)]
    total = plan.drain_events * plan.drain_chats
    global_burst = max(1, int(RATE_GLOBAL))
    ideal = drain_ideal_seconds(
        plan.drain_events, plan.drain_chats, RATE_PER_CHAT, CHAT_BURST, RATE_GLOBAL, global_burst
    )
    with TelegramStandIn(
        flood_limits=True,
        per_chat_per_second=RATE_PER_CHAT,
        per_chat_burst=CHAT_BURST,
        global_per_second=RATE_GLOBAL,
        global_burst=global_burst,
    ) as standin:
        # The breaker variables below reach the component's breakers only; the seed's own
        # breaker for sendEvent (3 failures, 15 s open) would hold the backlog for 15 s after
        # the outage and the drain would measure that wait, not the pacing: drop it.
        config = data_dir.parent / f"{data_dir.name}-resilience.json"
        config.write_text(json.dumps({"operations": {"sendEvent": {"circuitBreaker": None}}}))
        env = server_env(
            standin,
            data_dir,
            users,
            CCTG_CONFIG=str(config),
            CCTG_RATE_PER_CHAT=str(RATE_PER_CHAT),
            CCTG_RATE_PER_CHAT_BURST=str(CHAT_BURST),
            CCTG_RATE_GLOBAL=str(RATE_GLOBAL),
            CIRCUIT_BREAKER_FAILURE_THRESHOLD="2",
            CIRCUIT_BREAKER_TIMEOUT="1000",
            RETRY_MAX_ATTEMPTS="2",
            RETRY_BASE_DELAY="100",
            RETRY_MAX_DELAY="400",
        )
        envs = [env] * sessions
        if redis_url is not None:  # one data dir per process (a machine each), one Redis
            envs = [
                {**env, "CCTG_DATA_DIR": str(data_dir / f"machine{i}"), "CCTG_REDIS_URL": redis_url}
                for i in range(sessions)
            ]
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(stdio_server(e, errlog)) for e in envs]
            standin.set_fault(FaultMode.SERVER_ERROR, status=502)
            statuses: dict[str, int] = {}

            async def accept(client: Any, first: int) -> None:
                for i in range(first, plan.drain_events, sessions):  # the backlog split over the sessions
                    out = await tool(
                        client,
                        "send_telegram_event",
                        {
                            "type": "info_notification",
                            "title": f"Backlog {i}",
                            "description": "Queued while Telegram answers 502",
                        },
                    )
                    statuses[str(out.get("status"))] = statuses.get(str(out.get("status")), 0) + 1

            async with anyio.create_task_group() as tg:
                for n, client in enumerate(clients):
                    tg.start_soon(accept, client, n)
            await anyio.sleep(3.0)  # the outage goes on for a while: probes fail, rows wait
            recovered_at = time.monotonic()
            standin.clear_fault()
            timeout = ideal * 3 + 60
            await standin.await_messages(total, timeout=timeout)
            sent = list(standin.sent)
            last = max(m.at for m in sent)
            first = min(m.at for m in sent)
            rate_limited = standin.rate_limited_count
        unique = len({(m.chat_id, m.plain_text) for m in sent})
    return {
        "seconds": round(last - recovered_at, 2),
        "ideal": round(ideal, 2),
        "429s": rate_limited,
        "first": round(first - recovered_at, 2),
        "statuses": statuses,
        "duplicates": len(sent) - unique,
    }
