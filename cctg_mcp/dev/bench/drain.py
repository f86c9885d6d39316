"""3. Drain: events queued during an outage (the stand-in answers 502), then delivered once it
recovers with Telegram's flood limits on; time to the last message against the ideal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

import anyio

from cctg_mcp.dev.bench.plan import CHAT_BURST, RATE_GLOBAL, RATE_PER_CHAT, Plan
from cctg_mcp.dev.bench.roundtrip import server_env, stdio_server, tool
from cctg_mcp.testing import FaultMode, TelegramStandIn


def drain_ideal_seconds(
    per_chat: int, chats: int, rate: float, burst: int, global_rate: float, global_burst: int
) -> float:
    """The fastest delivery the limits allow, starting with full buckets."""
    chat_bound = max(0, per_chat - burst) / rate
    global_bound = max(0, per_chat * chats - global_burst) / global_rate
    return max(chat_bound, global_bound)


async def drain_phase(plan: Plan, tmp: Path, errlog: TextIO) -> dict[str, Any]:
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
        env = server_env(
            standin,
            tmp / "drain",
            users,
            CCTG_RATE_PER_CHAT=str(RATE_PER_CHAT),
            CCTG_RATE_PER_CHAT_BURST=str(CHAT_BURST),
            CCTG_RATE_GLOBAL=str(RATE_GLOBAL),
            CIRCUIT_BREAKER_FAILURE_THRESHOLD="2",
            CIRCUIT_BREAKER_TIMEOUT="1000",
            RETRY_MAX_ATTEMPTS="2",
            RETRY_BASE_DELAY="100",
            RETRY_MAX_DELAY="400",
        )
        async with stdio_server(env, errlog) as client:
            standin.set_fault(FaultMode.SERVER_ERROR, status=502)
            statuses: dict[str, int] = {}
            for i in range(plan.drain_events):
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
        "drain_seconds": round(last - recovered_at, 2),
        "drain_ideal_seconds": round(ideal, 2),
        "drain_429s": rate_limited,
        "_drain_first_s": round(first - recovered_at, 2),
        "_drain_statuses": statuses,
        "_drain_duplicates": len(sent) - unique,
    }
