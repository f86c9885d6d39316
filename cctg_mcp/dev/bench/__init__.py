"""``scripts/bench``: measure the pipeline, the server and the drain against their limits.

Nothing in the server imports this module. Four phases, each figure the median of several
repetitions measured side by side in one run:

1. **pipeline** (in process, asyncio): a bare ``await`` of a no-op coroutine, the same call
   through ``PipelineSet(...).for_component("telegram").call("sendMessage", noop)`` (deadline,
   retry, breaker, metrics), and a call rejected by an open breaker.
2. **roundtrips** (server over stdio, official ``mcp.Client``, loopback Telegram stand-in):
   the ``ping`` tool (echo) against ``send_telegram_message`` (durable commit, pipeline,
   HTTP to the stand-in, row settled), interleaved, with the server's own counters read
   around them to split the difference (``send_breakdown_ms``: accept commit, delivered mark,
   thread hops, HTTP exchange, rest); then sequential and concurrent throughput of the send
   tool. Pacing is raised out of the way here (it is phase 3's job).
3. **drain**: events queued during an outage (the stand-in answers 502), then the stand-in
   recovers with Telegram's flood limits switched on; the server is paced to the same
   limits. Time from recovery until the last message is accepted, against the ideal those
   limits allow, and the 429s provoked.
4. **memory**: RSS growth of a fresh process over 100 000 sends through the pipeline and the
   real ``TelegramTransport``, with HTTP stubbed by ``httpx.MockTransport`` (the stand-in,
   a Python HTTP server, would be the bottleneck), read from ``/proc/self/status``.

Modules: ``plan`` (sample sizes, goals), ``micro`` (phases 1 and 4), ``roundtrip`` (2),
``drain`` (3), ``report`` (tables), ``runner`` (``run``, ``main``); ``python -m cctg_mcp.dev.bench``.

Usage: ``scripts/bench [--json PATH] [--markdown PATH] [--quick]``. ``--markdown`` replaces
the block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in PATH (or writes the
whole file when it has no such block).
"""

from __future__ import annotations

from cctg_mcp.dev.bench.drain import drain_ideal_seconds
from cctg_mcp.dev.bench.plan import FULL, QUICK, Plan
from cctg_mcp.dev.bench.report import markdown, table, write_markdown
from cctg_mcp.dev.bench.runner import main, run

__all__ = ["FULL", "QUICK", "Plan", "drain_ideal_seconds", "main", "markdown", "run", "table", "write_markdown"]
