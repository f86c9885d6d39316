"""In-process phases: 1. pipeline overhead (bare call, through the pipeline, open-breaker
rejection) and 4. RSS growth over many sends through the real ``TelegramTransport``."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.lowlevel
import httpx

from cctg_mcp.dev.bench.plan import ROOT, Plan, median
from cctg_mcp.resilience.breaker import BreakerState
from cctg_mcp.resilience.config import load_resilience_config
from cctg_mcp.resilience.errors import CircuitOpenError, TelegramServerError
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.transports.telegram import TelegramTransport

RSS_TRANSPORT = "pipeline + TelegramTransport, HTTP stubbed (httpx.MockTransport)"


async def _noop() -> int:
    return 1


async def _per_call_us(n: int, body: Callable[[], Awaitable[Any]]) -> float:
    perf = time.perf_counter_ns
    start = perf()
    for _ in range(n):
        await body()
    return (perf() - start) / n / 1000.0


async def pipeline_phase(plan: Plan) -> dict[str, Any]:
    config = load_resilience_config({}, None)
    pipeline = PipelineSet(config, metrics=MetricsRegistry()).for_component("telegram")
    rejecting = PipelineSet(config, metrics=MetricsRegistry()).for_component("telegram")
    breaker = rejecting.breaker

    def trip() -> None:  # open for open_timeout; re-tripped before each repetition
        if breaker.state is not BreakerState.OPEN:
            breaker.reset()
            for _ in range(breaker.settings.failure_threshold):
                breaker.acquire().record_failure(TelegramServerError("502 Bad Gateway", code="TELEGRAM_502"))
        assert breaker.state is BreakerState.OPEN, breaker.state

    deadline = time.monotonic() + 3600.0

    def through() -> Awaitable[int]:  # a plain function, so no coroutine frame is added
        return pipeline.call("sendMessage", _noop, deadline=deadline)

    async def rejected() -> None:
        try:  # noqa: SIM105  (contextlib.suppress would add its own cost to the figure)
            await rejecting.call("sendMessage", _noop, deadline=deadline)
        except CircuitOpenError:
            pass

    bare_us: list[float] = []
    pipe_us: list[float] = []
    reject_us: list[float] = []
    n, n_reject = plan.pipeline_calls, max(1, plan.pipeline_calls // 4)
    trip()
    await _per_call_us(n // 4, through)  # warm up
    await _per_call_us(n_reject, rejected)
    for _ in range(plan.pipeline_reps):
        trip()
        bare = await _per_call_us(n, _noop)
        bare_us.append(bare)
        pipe_us.append(await _per_call_us(n, through) - bare)
        reject_us.append(await _per_call_us(n_reject, rejected) - bare)
    return {
        "bare_call_us_p50": round(median(bare_us), 3),
        "pipeline_overhead_us_p50": round(median(pipe_us), 3),
        "breaker_rejection_us_p50": round(median(reject_us), 3),
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


async def rss_worker(sends: int, warmup: int) -> dict[str, Any]:
    body = {"ok": True, "result": {"message_id": 1, "chat": {"id": 1, "type": "private"}, "date": 0, "text": "x"}}
    payload = json.dumps(body).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload, headers={"Content-Type": "application/json"})

    transport = TelegramTransport(
        "123456:TEST-TOKEN", "http://telegram.invalid", http_transport=httpx.MockTransport(handler)
    )
    pipeline = PipelineSet(load_resilience_config({}, None), metrics=MetricsRegistry()).for_component("telegram")
    chats = [100_000_001 + i for i in range(6)]

    async def run(n: int, offset: int) -> None:
        for i in range(n):
            chat = chats[i % len(chats)]
            text = f"message {offset + i} to <b>{chat}</b>"

            async def send(chat: int = chat, text: str = text) -> int:
                return await transport.send_message(chat, text)

            await pipeline.call("sendMessage", send, deadline=time.monotonic() + 30.0)
            # A real exchange waits on its socket, so the event loop runs between two sends;
            # the stub answers without ever yielding. Without this, asyncio never gets to purge
            # the cancelled timer of each call's total timeout (it does so in its loop step),
            # and 100,000 sends "grew" 21 MB that no real send keeps.
            await anyio.lowlevel.checkpoint()

    try:
        await run(warmup, 0)
        gc.collect()
        before = _rss_mb()
        start = time.perf_counter()
        await run(sends, warmup)
        seconds = time.perf_counter() - start
        gc.collect()
        after = _rss_mb()
    finally:
        await transport.aclose()
    return {"rss_before_mb": round(before, 2), "rss_after_mb": round(after, 2), "seconds": round(seconds, 2)}


def rss_phase(plan: Plan) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "cctg_mcp.dev.bench", "--rss-worker", str(plan.rss_sends), str(plan.rss_warmup)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    worker = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "rss_growth_mb_100k": round(worker["rss_after_mb"] - worker["rss_before_mb"], 2),
        "_rss": worker,
    }
