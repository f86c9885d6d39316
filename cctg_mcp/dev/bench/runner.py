"""Run the four phases in order and print, or write, the report."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio

from cctg_mcp.dev.bench.drain import drain_phase, drain_sessions_phase, redis_drain_phase
from cctg_mcp.dev.bench.micro import RSS_TRANSPORT, pipeline_phase, rss_phase, rss_worker
from cctg_mcp.dev.bench.plan import FULL, QUICK, Plan, write
from cctg_mcp.dev.bench.report import git_sha, table, write_markdown
from cctg_mcp.dev.bench.roundtrip import roundtrip_phase

DESCRIPTION = "``scripts/bench``: measure the pipeline, the server and the drain against their limits."


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    write(f"  {name} ...")
    start = time.perf_counter()
    yield
    write(f" {time.perf_counter() - start:.1f} s\n")


def run(plan: Plan) -> dict[str, Any]:
    logging.getLogger("cctg_mcp").setLevel(logging.ERROR)  # the tripped breaker would log a warning
    results: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    write(
        f"cctg-mcp bench ({plan.mode}) on {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    with tempfile.TemporaryDirectory(prefix="cctg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with open(tmp / "server-stderr.log", "w") as errlog:
            try:
                with _phase("pipeline (in process)"):
                    results.update(anyio.run(pipeline_phase, plan))
                with _phase("roundtrips over stdio"):
                    results.update(anyio.run(roundtrip_phase, plan, tmp, errlog))
                with _phase(f"drain of {plan.drain_events * plan.drain_chats} messages"):
                    results.update(anyio.run(drain_phase, plan, tmp, errlog))
                with _phase(f"drain of {plan.drain_events * plan.drain_chats} messages by 4 sessions"):
                    results.update(anyio.run(drain_sessions_phase, plan, tmp, errlog))
                with _phase(f"drain of {plan.drain_events * plan.drain_chats} messages by 3 machines on Redis"):
                    results.update(anyio.run(redis_drain_phase, plan, tmp, errlog))
                with _phase(f"memory over {plan.rss_sends} sends"):
                    results.update(rss_phase(plan))
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
        "multi_session_sessions": extras["_multi_session_sessions"],
        "multi_session_duplicates": extras["_multi_session_duplicates"],
        "multi_session_first_message_s": extras["_multi_session_first_s"],
        "redis_machines": extras["_redis_machines"],
        "redis_duplicates": extras["_redis_duplicates"],
        "rss_before_mb": extras["_rss"]["rss_before_mb"],
        "rss_after_mb": extras["_rss"]["rss_after_mb"],
        "rss_seconds": extras["_rss"]["seconds"],
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    results.update(
        {
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs",
            "git_sha": git_sha(),
            "samples": samples,
        }
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=DESCRIPTION)
    parser.add_argument("--json", dest="json_path", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the results table (markdown) into this file")
    parser.add_argument("--quick", action="store_true", help="smaller samples (well under 2 minutes)")
    parser.add_argument("--rss-worker", nargs=2, type=int, metavar=("SENDS", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_worker:
        write(json.dumps(anyio.run(rss_worker, *args.rss_worker)) + "\n")
        return 0
    results = run(QUICK if args.quick else FULL)
    write("\n" + table(results))
    if args.json_path:
        args.json_path.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        write_markdown(args.markdown, results)
    return 0
