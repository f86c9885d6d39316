"""2. Roundtrips: the server over stdio (official ``mcp.Client``, loopback stand-in), ``ping``
against ``send_telegram_message``, then sequential and concurrent send throughput.

Also the helpers that start a server over stdio, shared with the drain phase."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.dev.bench.plan import Plan, median
from cctg_mcp.testing import TelegramStandIn

#: Pacing the roundtrips never wait for (the bench measures the server, not Telegram's limits);
#: each value inside what the settings accept (the burst's ceiling is 1000).
UNPACED = {"CCTG_RATE_PER_CHAT": "100000", "CCTG_RATE_PER_CHAT_BURST": "1000", "CCTG_RATE_GLOBAL": "100000"}


def server_env(standin: TelegramStandIn, data_dir: Path, users: list[int], **extra: str) -> dict[str, str]:
    # CCTG_TOOL_RATE_LIMIT=0: the per-client guard would stop a benchmark at 120 calls/min.
    return standin.server_env(data_dir, users, CCTG_ENVIRONMENT="development", CCTG_TOOL_RATE_LIMIT="0", **extra)


@contextlib.asynccontextmanager
async def stdio_server(env: dict[str, str], errlog: TextIO) -> Any:
    params = StdioServerParameters(command=sys.executable, args=["-m", "cctg_mcp", "serve"], env=env)
    async with Client(stdio_client(params, errlog=errlog)) as client:
        yield client


async def tool(client: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"{name} failed: {text}")
    return dict(result.structured_content or {})


async def server_timings(client: Any) -> dict[str, float]:
    """The server's cumulative timings (seconds, counts) of the send path, from ``get_metrics``."""
    snap = (await tool(client, "get_metrics", {}))["metrics"]
    out: dict[str, float] = {}
    for counter in snap["counters"]:
        labels = counter["labels"]
        if counter["name"].startswith("sqlite_") and labels.get("store") == "outbox":
            out[f"{counter['name']}:{labels['operation']}"] = float(counter["value"])
    latency = snap["operations"].get("telegram", {}).get("sendMessage", {}).get("latency", {})
    out["http:count"] = float(latency.get("count") or 0)
    out["http:seconds"] = float(latency.get("sum_seconds") or 0.0)
    return out


def send_breakdown(
    before: dict[str, float], after: dict[str, float], echo_ms: list[float], send_ms: list[float]
) -> dict[str, float]:
    """Attribute the mean send round trip over the echo's: the accept commit (SQL and fsync,
    in the worker thread), the delivered mark, the worker-thread hops (handing each outbox
    call to a thread, the connection lock, waking the loop), the Bot API exchange with the
    stand-in (through the pipeline) and the rest (tool input and result, rendering, pacing,
    scheduling). Means, not medians: only means add up. From the server's own counters over
    exactly the interleaved calls."""
    sends = len(send_ms)

    def per_send(key: str) -> float:
        return (after.get(key, 0.0) - before.get(key, 0.0)) * 1000.0 / sends if sends else float("nan")

    ops = {k.split(":", 1)[1] for k in after if k.startswith("sqlite_calls:")}
    # The calls a successful single-part send makes: the accept (with its lease) and the
    # delivered mark (in a worker thread, or ``_inline`` on the event loop's thread).
    send_path = {op for op in ops if op.startswith(("enqueue", "exec_relaxed"))}
    echo, send = statistics.fmean(echo_ms), statistics.fmean(send_ms)
    parts = {
        "accept_commit": per_send("sqlite_work_seconds:enqueue"),
        "delivered_mark": sum(per_send(f"sqlite_work_seconds:{op}") for op in send_path - {"enqueue"}),
        "thread_hops": sum(per_send(f"sqlite_wait_seconds:{op}") for op in send_path),
        "http_exchange": per_send("http:seconds"),
    }
    out = {
        "echo_mean": echo,
        "send_mean": send,
        "difference": send - echo,
        **parts,
        "rest": send - echo - sum(parts.values()),
        "outbox_calls_per_send": sum(per_send(f"sqlite_calls:{op}") for op in send_path) / 1000.0,
        "thread_hops_per_send": sum(per_send(f"sqlite_calls:{op}") for op in send_path if not op.endswith("_inline"))
        / 1000.0,
        "http_calls_per_send": per_send("http:count") / 1000.0,
    }
    return {k: round(v, 3) for k, v in out.items()}


async def roundtrip_phase(plan: Plan, tmp: Path, errlog: TextIO) -> dict[str, Any]:
    fast = UNPACED
    with TelegramStandIn() as standin:
        env = server_env(standin, tmp / "roundtrip", [111111111], **fast)
        async with stdio_server(env, errlog) as client:
            counter = iter(range(10**9))

            async def echo() -> None:
                out = await tool(client, "ping", {})
                assert out.get("ok") is True, out

            async def send() -> None:
                out = await tool(client, "send_telegram_message", {"message": f"bench {next(counter)}"})
                assert out.get("status") == "delivered", out

            for _ in range(20):  # warm up: imports, connection pool, SQLite pages
                await echo()
                await send()
            perf = time.perf_counter
            echo_ms: list[float] = []
            send_ms: list[float] = []
            before = await server_timings(client)
            for _ in range(plan.roundtrips):
                t0 = perf()
                await echo()
                t1 = perf()
                await send()
                t2 = perf()
                echo_ms.append((t1 - t0) * 1000.0)
                send_ms.append((t2 - t1) * 1000.0)
            breakdown = send_breakdown(before, await server_timings(client), echo_ms, send_ms)

            t0 = perf()
            for _ in range(plan.throughput_calls):
                await send()
            sequential = plan.throughput_calls / (perf() - t0)

            limiter = anyio.Semaphore(plan.concurrency)

            async def limited() -> None:
                async with limiter:
                    await send()

            t0 = perf()
            async with anyio.create_task_group() as tg:
                for _ in range(plan.throughput_calls):
                    tg.start_soon(limited)
            concurrent = plan.throughput_calls / (perf() - t0)
            answer_ms = [await answer_latency_ms(client, standin, 111111111, n) for n in range(plan.answers)]
    return {
        "echo_roundtrip_ms_p50": round(median(echo_ms), 3),
        "tool_call_roundtrip_ms_p50": round(median(send_ms), 3),
        "send_breakdown_ms": breakdown,
        "throughput_sequential_calls_per_s": round(sequential, 1),
        "throughput_concurrent_calls_per_s": round(concurrent, 1),
        "answer_latency_ms_p50": round(median(answer_ms), 3),
        "answer_latency_ms_max": round(max(answer_ms), 3),
    }


#: How long the bench lets a wait_for_response call settle into waiting before the press.
SETTLE_S = 0.3


async def answer_latency_ms(client: Any, standin: TelegramStandIn, user: int, n: int) -> float:
    """From a button press at Telegram to ``wait_for_response`` returning the answer: the
    press is a getUpdates answer to the server's long poll, which stores it and wakes the
    waiting tool. The tool is given ``SETTLE_S`` to start waiting; only the press is timed."""
    sent = await tool(client, "send_approval_request", {"title": f"bench {n}", "description": "approve?"})
    assert sent.get("status") == "delivered", sent
    message = standin.messages_for(user)[-1]
    assert message.reply_markup is not None, message
    approve = message.reply_markup["inline_keyboard"][0][0]["callback_data"]
    answered: list[float] = []

    async def wait() -> None:
        out = await tool(client, "wait_for_response", {"event_id": sent["event_id"], "timeout_seconds": 30})
        assert out.get("status") == "answered", out
        answered.append(time.perf_counter())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(SETTLE_S)
        pressed = time.perf_counter()
        standin.push_callback(user, approve)
    return (answered[0] - pressed) * 1000.0
