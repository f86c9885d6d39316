"""``scripts/bench``: measure the pipeline, the server and the drain against their limits.

Nothing in the server imports this module. Four phases, each figure the median of several
repetitions measured side by side in one run:

1. **pipeline** (in process, asyncio): a bare ``await`` of a no-op coroutine, the same call
   through ``PipelineSet(...).for_component("telegram").call("sendMessage", noop)`` (deadline,
   retry, breaker, metrics), and a call rejected by an open breaker.
2. **roundtrips** (server over stdio, official ``mcp.Client``, loopback Telegram stand-in):
   the ``ping`` tool (echo) against ``send_telegram_message`` (durable commit, pipeline,
   HTTP to the stand-in, row settled), interleaved; then sequential and concurrent
   throughput of the send tool. Pacing is raised out of the way here (it is phase 3's job).
3. **drain**: events queued during an outage (the stand-in answers 502), then the stand-in
   recovers with Telegram's flood limits switched on; the server is paced to the same
   limits. Time from recovery until the last message is accepted, against the ideal those
   limits allow, and the 429s provoked.
4. **memory**: RSS growth of a fresh process over 100 000 sends through the pipeline and the
   real ``TelegramTransport``, with HTTP stubbed by ``httpx.MockTransport`` (the stand-in,
   a Python HTTP server, would be the bottleneck), read from ``/proc/self/status``.

Usage: ``scripts/bench [--json PATH] [--markdown PATH] [--quick]``. ``--markdown`` replaces
the block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in PATH (or writes the
whole file when it has no such block).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.resilience.breaker import BreakerState
from cctg_mcp.resilience.config import load_resilience_config
from cctg_mcp.resilience.errors import CircuitOpenError, TelegramServerError
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.testing import FaultMode, TelegramStandIn
from cctg_mcp.transports.telegram import TelegramTransport

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
RSS_TRANSPORT = "pipeline + TelegramTransport, HTTP stubbed (httpx.MockTransport)"

# Goals (DESIGN.md §3, issue 9).
PIPELINE_GOAL_US = 20.0
SEND_VS_ECHO_GOAL = 1.5
DRAIN_GOAL = 1.10
RSS_GOAL_MB = 10.0


@dataclass(frozen=True)
class Plan:
    mode: str
    pipeline_calls: int  # calls per repetition
    pipeline_reps: int
    roundtrips: int  # echo and send calls each, interleaved
    throughput_calls: int  # per throughput measurement
    concurrency: int
    drain_events: int  # each goes to every chat
    drain_chats: int
    rss_sends: int
    rss_warmup: int


FULL = Plan("full", 20_000, 15, 400, 400, 8, 100, 6, 100_000, 10_000)
QUICK = Plan("quick", 5_000, 7, 100, 100, 8, 20, 6, 25_000, 5_000)

# The drain's flood limits: the stand-in enforces them, the server is paced to them.
RATE_PER_CHAT, CHAT_BURST, RATE_GLOBAL = 1.0, 3, 30.0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ---- 1. pipeline ---------------------------------------------------------------------------


async def _noop() -> int:
    return 1


async def _per_call_us(n: int, body: Callable[[], Awaitable[Any]]) -> float:
    perf = time.perf_counter_ns
    start = perf()
    for _ in range(n):
        await body()
    return (perf() - start) / n / 1000.0


async def _pipeline_phase(plan: Plan) -> dict[str, Any]:
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
        "bare_call_us_p50": round(_median(bare_us), 3),
        "pipeline_overhead_us_p50": round(_median(pipe_us), 3),
        "breaker_rejection_us_p50": round(_median(reject_us), 3),
    }


# ---- servers over stdio ----------------------------------------------------------------------


def _server_env(standin: TelegramStandIn, data_dir: Path, users: list[int], **extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": standin.token,
        "TELEGRAM_ALLOWED_USERS": ",".join(str(u) for u in users),
        "TELEGRAM_API_BASE_URL": standin.base_url,
        "CCTG_DATA_DIR": str(data_dir),
        "CCTG_ENVIRONMENT": "development",
        "CCTG_TOOL_RATE_LIMIT": "0",  # the per-client guard would stop a benchmark at 120 calls/min
        **extra,
    }


@contextlib.asynccontextmanager
async def _client(env: dict[str, str], errlog: TextIO) -> Any:
    params = StdioServerParameters(command=sys.executable, args=["-m", "cctg_mcp", "serve"], env=env)
    async with Client(stdio_client(params, errlog=errlog)) as client:
        yield client


async def _tool(client: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"{name} failed: {text}")
    return dict(result.structured_content or {})


# ---- 2. roundtrips ---------------------------------------------------------------------------


async def _roundtrip_phase(plan: Plan, tmp: Path, errlog: TextIO) -> dict[str, Any]:
    fast = {"CCTG_RATE_PER_CHAT": "100000", "CCTG_RATE_PER_CHAT_BURST": "100000", "CCTG_RATE_GLOBAL": "100000"}
    with TelegramStandIn() as standin:
        env = _server_env(standin, tmp / "roundtrip", [111111111], **fast)
        async with _client(env, errlog) as client:
            counter = iter(range(10**9))

            async def echo() -> None:
                out = await _tool(client, "ping", {})
                assert out.get("ok") is True, out

            async def send() -> None:
                out = await _tool(client, "send_telegram_message", {"message": f"bench {next(counter)}"})
                assert out.get("status") == "delivered", out

            for _ in range(20):  # warm up: imports, connection pool, SQLite pages
                await echo()
                await send()
            perf = time.perf_counter
            echo_ms: list[float] = []
            send_ms: list[float] = []
            for _ in range(plan.roundtrips):
                t0 = perf()
                await echo()
                t1 = perf()
                await send()
                t2 = perf()
                echo_ms.append((t1 - t0) * 1000.0)
                send_ms.append((t2 - t1) * 1000.0)

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
    return {
        "echo_roundtrip_ms_p50": round(_median(echo_ms), 3),
        "tool_call_roundtrip_ms_p50": round(_median(send_ms), 3),
        "throughput_sequential_calls_per_s": round(sequential, 1),
        "throughput_concurrent_calls_per_s": round(concurrent, 1),
    }


# ---- 3. drain --------------------------------------------------------------------------------


def drain_ideal_seconds(per_chat: int, chats: int, rate: float, burst: int, global_rate: float,
                        global_burst: int) -> float:  # fmt: skip
    """The fastest delivery the limits allow, starting with full buckets."""
    chat_bound = max(0, per_chat - burst) / rate
    global_bound = max(0, per_chat * chats - global_burst) / global_rate
    return max(chat_bound, global_bound)


async def _drain_phase(plan: Plan, tmp: Path, errlog: TextIO) -> dict[str, Any]:
    users = [100_000_001 + i for i in range(plan.drain_chats)]
    total = plan.drain_events * plan.drain_chats
    global_burst = max(1, int(RATE_GLOBAL))
    ideal = drain_ideal_seconds(plan.drain_events, plan.drain_chats, RATE_PER_CHAT, CHAT_BURST, RATE_GLOBAL,
                                global_burst)  # fmt: skip
    with TelegramStandIn(flood_limits=True, per_chat_per_second=RATE_PER_CHAT, per_chat_burst=CHAT_BURST,
                         global_per_second=RATE_GLOBAL, global_burst=global_burst) as standin:  # fmt: skip
        env = _server_env(
            standin, tmp / "drain", users,
            CCTG_RATE_PER_CHAT=str(RATE_PER_CHAT), CCTG_RATE_PER_CHAT_BURST=str(CHAT_BURST),
            CCTG_RATE_GLOBAL=str(RATE_GLOBAL),
            CIRCUIT_BREAKER_FAILURE_THRESHOLD="2", CIRCUIT_BREAKER_TIMEOUT="1000",
            RETRY_MAX_ATTEMPTS="2", RETRY_BASE_DELAY="100", RETRY_MAX_DELAY="400",
        )  # fmt: skip
        async with _client(env, errlog) as client:
            standin.set_fault(FaultMode.SERVER_ERROR, status=502)
            statuses: dict[str, int] = {}
            for i in range(plan.drain_events):
                out = await _tool(client, "send_telegram_event", {
                    "type": "info_notification", "title": f"Backlog {i}",
                    "description": "Queued while Telegram answers 502"})  # fmt: skip
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


# ---- 4. memory -------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


async def _rss_worker(sends: int, warmup: int) -> dict[str, Any]:
    body = {"ok": True, "result": {"message_id": 1, "chat": {"id": 1, "type": "private"}, "date": 0, "text": "x"}}
    payload = json.dumps(body).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload, headers={"Content-Type": "application/json"})

    transport = TelegramTransport("123456:TEST-TOKEN", "http://telegram.invalid",
                                  http_transport=httpx.MockTransport(handler))  # fmt: skip
    pipeline = PipelineSet(load_resilience_config({}, None), metrics=MetricsRegistry()).for_component("telegram")
    chats = [100_000_001 + i for i in range(6)]

    async def run(n: int, offset: int) -> None:
        for i in range(n):
            chat = chats[i % len(chats)]
            text = f"message {offset + i} to <b>{chat}</b>"

            async def send(chat: int = chat, text: str = text) -> int:
                return await transport.send_message(chat, text)

            await pipeline.call("sendMessage", send, deadline=time.monotonic() + 30.0)

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


def _rss_phase(plan: Plan) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "cctg_mcp.bench", "--rss-worker", str(plan.rss_sends), str(plan.rss_warmup)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    worker = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "rss_growth_mb_100k": round(worker["rss_after_mb"] - worker["rss_before_mb"], 2),
        "_rss": worker,
    }


# ---- report ----------------------------------------------------------------------------------


def _git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    _write(f"  {name} ...")
    start = time.perf_counter()
    yield
    _write(f" {time.perf_counter() - start:.1f} s\n")


def run(plan: Plan) -> dict[str, Any]:
    logging.getLogger("cctg_mcp").setLevel(logging.ERROR)  # the tripped breaker would log a warning
    results: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    _write(f"cctg-mcp bench ({plan.mode}) on {platform.python_implementation()} {platform.python_version()}, "
           f"{os.cpu_count()} CPUs\n")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cctg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with open(tmp / "server-stderr.log", "w") as errlog:
            try:
                with _phase("pipeline (in process)"):
                    results.update(anyio.run(_pipeline_phase, plan))
                with _phase("roundtrips over stdio"):
                    results.update(anyio.run(_roundtrip_phase, plan, tmp, errlog))
                with _phase(f"drain of {plan.drain_events * plan.drain_chats} messages"):
                    results.update(anyio.run(_drain_phase, plan, tmp, errlog))
                with _phase(f"memory over {plan.rss_sends} sends"):
                    results.update(_rss_phase(plan))
            except BaseException:
                errlog.flush()
                tail = (tmp / "server-stderr.log").read_text().splitlines()[-30:]
                sys.stderr.write("server stderr (last lines):\n" + "\n".join(tail) + "\n")
                raise
    extras = {k: results.pop(k) for k in [k for k in results if k.startswith("_")]}
    samples = {
        **{k: v for k, v in asdict(plan).items() if k != "mode"},
        "mode": plan.mode,
        "rss_transport": RSS_TRANSPORT,
        "drain_messages": plan.drain_events * plan.drain_chats,
        "drain_first_message_s": extras["_drain_first_s"],
        "drain_send_statuses": extras["_drain_statuses"],
        "drain_duplicates": extras["_drain_duplicates"],
        "rss_before_mb": extras["_rss"]["rss_before_mb"],
        "rss_after_mb": extras["_rss"]["rss_after_mb"],
        "rss_seconds": extras["_rss"]["seconds"],
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    results.update({
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs",
        "git_sha": _git_sha(),
        "samples": samples,
    })  # fmt: skip
    return results


def _rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    s = r["samples"]
    echo, send = r["echo_roundtrip_ms_p50"], r["tool_call_roundtrip_ms_p50"]
    ratio = send / echo if echo else float("inf")
    drain_ratio = r["drain_seconds"] / r["drain_ideal_seconds"] if r["drain_ideal_seconds"] else float("inf")

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    return [
        ("bare `await` of a no-op (p50)", f"{r['bare_call_us_p50']:.2f} µs", "", ""),
        ("pipeline overhead on success (p50)", f"{r['pipeline_overhead_us_p50']:.2f} µs",
         f"≤ {PIPELINE_GOAL_US:g} µs", verdict(r["pipeline_overhead_us_p50"] <= PIPELINE_GOAL_US)),
        ("open-breaker rejection (p50)", f"{r['breaker_rejection_us_p50']:.2f} µs", "", ""),
        ("echo (`ping`) roundtrip over stdio (p50)", f"{echo:.2f} ms", "", ""),
        ("`send_telegram_message` roundtrip (p50)", f"{send:.2f} ms ({ratio:.2f}x echo)",
         f"≤ {SEND_VS_ECHO_GOAL:g}x echo", verdict(ratio <= SEND_VS_ECHO_GOAL)),
        ("sends, sequential", f"{r['throughput_sequential_calls_per_s']:.0f} calls/s", "", ""),
        (f"sends, {s['concurrency']} concurrent", f"{r['throughput_concurrent_calls_per_s']:.0f} calls/s", "", ""),
        (f"drain of {s['drain_messages']} messages / {s['drain_chats']} chats after an outage",
         f"{r['drain_seconds']:.1f} s (ideal {r['drain_ideal_seconds']:.1f} s, {drain_ratio:.3f}x)",
         f"≤ {DRAIN_GOAL:.2f}x ideal", verdict(drain_ratio <= DRAIN_GOAL)),
        ("429s provoked by the drain", str(r["drain_429s"]), "0", verdict(r["drain_429s"] == 0)),
        (f"RSS growth over {s['rss_sends']:,} sends (HTTP stubbed)", f"{r['rss_growth_mb_100k']:.2f} MB",
         f"≤ {RSS_GOAL_MB:g} MB", verdict(r["rss_growth_mb_100k"] <= RSS_GOAL_MB)),
    ]  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    s = r["samples"]
    lines = ["| measure | result | goal | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(r)]
    lines += [
        "",
        f"Measured by `scripts/bench{' --quick' if s['mode'] == 'quick' else ''}` on {r['python']}, "
        f"{r['platform']}, at {r['git_sha']}. Samples: pipeline {s['pipeline_reps']} x {s['pipeline_calls']:,} "
        f"calls; {s['roundtrips']} echo and {s['roundtrips']} send roundtrips (interleaved); "
        f"{s['throughput_calls']} sends per throughput figure; drain of {s['drain_events']} events x "
        f"{s['drain_chats']} chats at {RATE_PER_CHAT:g} msg/s per chat (burst {CHAT_BURST}) and "
        f"{RATE_GLOBAL:g} msg/s overall, first message {s['drain_first_message_s']} s after recovery; "
        f"RSS {s['rss_before_mb']} → {s['rss_after_mb']} MB after {s['rss_warmup']:,} warm-up sends. "
        f"1-minute load average {s['load_avg_1m'][0]} at the start, {s['load_avg_1m'][1]} at the end.",
    ]
    return "\n".join(lines) + "\n"


def table(r: dict[str, Any]) -> str:
    rows = [("measure", "result", "goal", ""), *_rows(r)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def write_markdown(path: Path, r: dict[str, Any]) -> None:
    block = f"{BEGIN}\n{markdown(r)}{END}"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--json", dest="json_path", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the results table (markdown) into this file")
    parser.add_argument("--quick", action="store_true", help="smaller samples (well under 2 minutes)")
    parser.add_argument("--rss-worker", nargs=2, type=int, metavar=("SENDS", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_worker:
        _write(json.dumps(anyio.run(_rss_worker, *args.rss_worker)) + "\n")
        return 0
    results = run(QUICK if args.quick else FULL)
    _write("\n" + table(results))
    if args.json_path:
        args.json_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        write_markdown(args.markdown, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
