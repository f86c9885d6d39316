"""``cctg-mcp demo``: the whole path on embedded defaults, printed as a short report.

It starts the loopback Telegram stand-in, runs the real server as a subprocess over stdio,
drives it with the official ``mcp.Client``, sends a few events, injects an outage (Telegram
answers 502), shows the sends come back ``queued`` and the breaker open, heals the outage,
and waits until the dispatcher has delivered everything. Nothing here touches the network
beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from cctg_mcp.testing import FaultMode, TelegramStandIn

USERS = (111111111, 222222222)


def _server_env(standin: TelegramStandIn, data_dir: Path) -> dict[str, str]:
    # Short timings so the demo takes seconds, in the seed's units (milliseconds).
    return standin.server_env(
        data_dir,
        USERS,
        CCTG_ENVIRONMENT="development",
        CIRCUIT_BREAKER_FAILURE_THRESHOLD="2",
        CIRCUIT_BREAKER_TIMEOUT="1500",
        RETRY_MAX_ATTEMPTS="2",
        RETRY_BASE_DELAY="100",
        RETRY_MAX_DELAY="400",
    )


async def _call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        return {"status": "error", "message": text}
    return dict(result.structured_content or {})


async def _demo(report: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="cctg-demo-") as tmp, TelegramStandIn() as standin:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "cctg_mcp", "serve"], env=_server_env(standin, Path(tmp))
        )
        sends: list[dict[str, Any]] = []
        async with Client(params) as client:
            tools = await client.list_tools()
            report["tools"] = len(tools.tools)

            async def send(phase: str, tool: str, args: dict[str, Any]) -> None:
                started = time.monotonic()
                out = await _call(client, tool, args)
                sends.append(
                    {
                        "phase": phase,
                        "tool": tool,
                        "status": out.get("status"),
                        "event_id": out.get("event_id"),
                        "reason": out.get("reason") or out.get("message"),
                        "ms": round((time.monotonic() - started) * 1000),
                    }
                )

            await send("healthy", "send_telegram_message", {"message": "Hello from cctg-mcp <demo> & friends"})
            await send(
                "healthy",
                "send_task_completion",
                {"task_id": "demo-task-1", "title": "Build", "results": "42 tests passed", "duration_ms": 1234},
            )
            await send("healthy", "send_approval_request", {"title": "Deploy?", "description": "Ship v1 to prod"})
            await send("healthy", "send_task_completion", {"task_id": "demo-task-1", "title": "Build"})

            standin.set_fault(FaultMode.SERVER_ERROR, status=502)
            report["outage_started"] = True
            for i in range(3):
                await send(
                    "outage",
                    "send_telegram_event",
                    {
                        "type": "build_failed",
                        "title": f"Nightly build {i}",
                        "description": "Sent while Telegram answers 502",
                    },
                )
            during = await _call(client, "get_resilience_status", {"refresh": True})  # checks run now
            report["during_outage"] = {
                "overall": during.get("overall"),
                "telegram_breaker": breaker_summary(during),
                "why": during.get("verdict_reason"),
                "outbox": during.get("outbox"),
            }

            standin.clear_fault()
            healed_at = time.monotonic()
            expected = sum(1 for s in sends if s["status"] in ("delivered", "queued")) * len(USERS)
            await standin.await_messages(expected, timeout=60)
            report["recovery_seconds"] = round(time.monotonic() - healed_at, 2)
            after = await _call(client, "get_resilience_status", {"refresh": True})
            for _ in range(100):  # the dispatcher marks rows delivered right after Telegram accepts
                if (after.get("outbox") or {}).get("pending", 1) == 0 and (after.get("outbox") or {}).get(
                    "in_flight", 1
                ) == 0:
                    break
                await anyio.sleep(0.05)
                after = await _call(client, "get_resilience_status", {"refresh": True})
            report["after_recovery"] = {
                "overall": after.get("overall"),
                "telegram_breaker": breaker_summary(after),
                "why": after.get("verdict_reason"),
                "outbox": after.get("outbox"),
            }
        report["sends"] = sends
        report["messages_at_telegram"] = len(standin.sent)
        report["expected_messages"] = expected
        outbox = report["after_recovery"]["outbox"] or {}
        report["all_delivered"] = (
            len(standin.sent) >= expected and outbox.get("pending") == 0 and outbox.get("dead") == 0
        )


def breaker_summary(status: dict[str, Any]) -> str:
    """Every Telegram breaker (the component's and its per-operation ones) that is not closed."""
    states = {
        str(b.get("name")): str(b.get("state"))
        for b in status.get("breakers", [])
        if str(b.get("name", "")).startswith("telegram")
    }
    not_closed = [f"{name} {state}" for name, state in sorted(states.items()) if state != "closed"]
    if not states:
        return "none listed"
    return ", ".join(not_closed) if not_closed else "all closed"


def _print(report: dict[str, Any]) -> None:
    w = sys.stdout.write
    w("cctg-mcp demo: loopback Telegram stand-in, server over stdio, official MCP client\n\n")
    w(f"{'phase':<8} {'tool':<24} {'status':<10} {'ms':>6}  note\n")
    for s in report["sends"]:
        note = s["reason"] if s["status"] != "delivered" else ""
        w(f"{s['phase']:<8} {s['tool']:<24} {s['status']!s:<10} {s['ms']:>6}  {str(note)[:60]}\n")
    d, a = report["during_outage"], report["after_recovery"]
    for label, doc in (("during the outage", d), ("after recovery", a)):
        w(f"\n{label}: overall={doc['overall']} ({doc['why']})\n")
        w(f"  telegram breakers: {doc['telegram_breaker']}\n  outbox: {doc['outbox']}\n")
    w(
        f"recovered in {report['recovery_seconds']} s; messages at Telegram: {report['messages_at_telegram']} "
        f"(expected {report['expected_messages']})\n"
    )
    verdict = "every accepted event was delivered" if report["all_delivered"] else "SOMETHING WAS NOT DELIVERED"
    w(f"\nresult: {verdict}\n")


def run_demo(json_path: str | None = None) -> int:
    report: dict[str, Any] = {}
    anyio.run(_demo, report)
    _print(report)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
    return 0 if report.get("all_delivered") else 1
