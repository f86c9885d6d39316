"""``scripts/chaos``: a soak that proves nothing accepted is lost under chaos and crashes.

It runs the Telegram stand-in in this process (so it survives the server's deaths) and the
real server as a subprocess over stdio (``CCTG_ENVIRONMENT=development``, a short
``CCTG_LEASE_SECONDS`` so rows leased by a killed process come back quickly), driven by the
official ``mcp.Client``. It sends N task-completion events (each with a unique id in its
title; ``task_id`` makes a resend after a crash a ``duplicate``, never a second event) from a
few concurrent callers, while cycling the chaos experiments through ``run_chaos_experiment``,
and SIGKILLs the server twice mid-traffic (restarting it each time and resending the calls the
kill interrupted). Then it waits, bounded, until the outbox drains and counts at the stand-in:

- lost: accepted (delivered / queued / duplicate) for a recipient but never received;
- duplicated: received more than once (expected only for "response lost" faults and for
  messages Telegram accepted just before a kill);
- dead: rows the server gave up on; and the worst time to recover (chaos runs and kills).

Then a storage-fault phase and a slow-peer phase (``dev/soak_faults.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from mcp import Client, StdioServerParameters

from cctg_mcp.dev.demo import breaker_summary
from cctg_mcp.testing import TelegramStandIn

USERS = (111111111, 222222222)
CYCLE = ("network_partition", "high_latency", "message_loss", "error_responses", "bridge_crash")
#: Runs the server after writing its pid (for SIGKILL) and sending its stderr to a log file.
LAUNCH = (
    "import os,sys; open(sys.argv[1],'w').write(str(os.getpid())); "
    "os.dup2(os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND), 2); "
    "from cctg_mcp.cli import main; main(['serve'])"
)
EV = re.compile(r"ev-(\d{5})")


def server_env(standin: TelegramStandIn, data_dir: Path, lease_s: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")},
        **standin.server_env(data_dir, USERS),
        "CCTG_ENVIRONMENT": "development",
        "CCTG_LEASE_SECONDS": str(lease_s),
        "CCTG_RATE_PER_CHAT": "200",
        "CCTG_RATE_PER_CHAT_BURST": "50",
        "CCTG_RATE_GLOBAL": "400",
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "3",
        "CIRCUIT_BREAKER_TIMEOUT": "1000",
        "RETRY_MAX_ATTEMPTS": "3",
        "RETRY_BASE_DELAY": "100",
        "RETRY_MAX_DELAY": "500",
        "CCTG_TOOL_RATE_LIMIT": "0",  # the per-client guard (120 calls/min) would throttle the soak's senders
    }


class Soak:
    """One soak run: events from concurrent callers while chaos runs and the server is killed and restarted."""

    def __init__(self, events: int, seed: int, concurrency: int, lease_s: int, kills: int, rate: float) -> None:
        self.events, self.seed, self.concurrency, self.lease_s = events, seed, concurrency, lease_s
        self.interval, self.next_slot, self.k = 1.0 / rate, 0.0, 0
        self.watchers: anyio.abc.TaskGroup | None = None
        self.kill_at = [events * (k + 1) // (kills + 1) for k in range(kills)]
        self.todo = list(range(events))
        self.accepted: dict[int, str] = {}  # event index -> first answer status
        self.answers: Counter[str] = Counter()
        self.interrupted = 0
        self.runs: list[dict[str, Any]] = []
        self.kill_recovery: list[float | None] = []
        self.killed_during: list[str | None] = []
        self.active_experiment: str | None = None
        self.final_status: dict[str, Any] = {}

    async def call(self, client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        with anyio.fail_after(60):
            result = await client.call_tool(tool, args)
        if result.is_error:
            return {"error": " ".join(getattr(c, "text", "") for c in result.content)}
        return dict(result.structured_content or {})

    async def sender(self, client: Client, dead: anyio.Event) -> None:
        while self.todo and not dead.is_set():
            now = time.monotonic()
            self.next_slot = max(now, self.next_slot + self.interval)  # paced: events arrive at --rate
            await anyio.sleep(self.next_slot - now)
            if not self.todo or dead.is_set():
                return
            i = self.todo.pop(0)
            out: dict[str, Any] | None = None
            try:
                out = await self.call(
                    client,
                    "send_task_completion",
                    {
                        "task_id": f"soak-{self.seed}-{i}",
                        "title": f"soak ev-{i:05d}",
                        "results": f"event {i} of {self.events}",
                    },
                )
            except Exception:
                pass
            finally:
                if out is None:  # the server died under this call: resend it to the next server
                    self.todo.insert(0, i)
                    self.interrupted += 1
            if out is None:
                return
            status = out.get("status") or "error"
            self.answers[status] += 1
            if status in ("delivered", "queued", "duplicate"):
                self.accepted.setdefault(i, status)
            else:
                self.todo.append(i)  # a refused call (e.g. queue full) is retried later
                await anyio.sleep(0.2)

    async def killer(self, stop_at: int, pidfile: Path, dead: anyio.Event, senders: anyio.CancelScope) -> None:
        while len(self.accepted) < stop_at and self.todo:  # noqa: ASYNC110  (a counter, not an event)
            await anyio.sleep(0.005)
        self.killed_during.append(self.active_experiment)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)  # noqa: ASYNC240  # mid-traffic: calls are in flight
        dead.set()
        self.kill_recovery.append(None)
        await anyio.sleep(1.0)
        senders.cancel()

    async def chaos(self, client: Client, dead: anyio.Event) -> None:
        try:
            while not dead.is_set():
                name = CYCLE[self.k % len(CYCLE)]
                self.k += 1
                out = await self.call(
                    client,
                    "run_chaos_experiment",
                    {"experiment": name, "duration_ms": 2000, "intensity": 0.5, "seed": self.seed + self.k},
                )
                if "error" in out:
                    await anyio.sleep(0.5)
                    continue
                self.active_experiment = name
                while not dead.is_set():
                    await anyio.sleep(0.25)
                    history = await self.call(client, "get_chaos_history", {"limit": 1})
                    if history.get("active") is None:
                        self.runs.extend(history.get("runs", [])[:1])
                        break
                self.active_experiment = None
                await anyio.sleep(0.5)
        except Exception:
            if not dead.is_set():
                raise

    async def incarnation(
        self, params: StdioServerParameters, pidfile: Path, stop_at: int | None, standin: TelegramStandIn
    ) -> None:
        dead = anyio.Event()
        before = set(self.accepted)
        restarted = time.monotonic()
        try:
            async with Client(params) as client, anyio.create_task_group() as tg:
                if self.kill_recovery and self.kill_recovery[-1] is None and self.watchers is not None:
                    self.watchers.start_soon(self.watch_recovery, standin, before, restarted)
                tg.start_soon(self.chaos, client, dead)
                async with anyio.create_task_group() as senders:
                    for _ in range(self.concurrency):
                        senders.start_soon(self.sender, client, dead)
                    if stop_at is not None:
                        senders.start_soon(self.killer, stop_at, pidfile, dead, senders.cancel_scope)
                dead.set()
                if stop_at is None:
                    await self.drain(client, standin)
                tg.cancel_scope.cancel()
        except Exception as exc:  # the killed server's session ends with errors; that is expected
            if stop_at is None:
                raise RuntimeError(f"the soak's last server failed: {exc!r}") from exc

    async def watch_recovery(self, standin: TelegramStandIn, before: set[int], restarted: float) -> None:
        """Time from a restart until every event accepted before the kill has reached Telegram."""
        index = len(self.kill_recovery) - 1
        with anyio.move_on_after(300):
            while not before <= self.received_events(standin):  # noqa: ASYNC110  (polls another thread's list)
                await anyio.sleep(0.2)
            self.kill_recovery[index] = round(time.monotonic() - restarted, 2)

    @staticmethod
    def received_events(standin: TelegramStandIn) -> set[int]:
        per: dict[int, set[int]] = {}
        for m in list(standin.sent):
            found = EV.search(m.text)
            if found:
                per.setdefault(int(found.group(1)), set()).add(m.chat_id)
        return {i for i, chats in per.items() if len(chats) == len(USERS)}

    async def drain(self, client: Client, standin: TelegramStandIn) -> None:
        await self.call(client, "stop_chaos_experiment", {})
        with anyio.move_on_after(300):
            while True:
                status = await self.call(client, "get_resilience_status", {})
                box = status.get("outbox") or {}
                history = await self.call(client, "get_chaos_history", {"limit": 1})
                if box.get("pending", 1) + box.get("in_flight", 1) == 0 and history.get("active") is None:
                    break
                await anyio.sleep(0.5)
        runs = (await self.call(client, "get_chaos_history", {"limit": 1})).get("runs", [])
        if runs and not any(r["id"] == runs[0]["id"] and r["started_at"] == runs[0]["started_at"] for r in self.runs):
            self.runs.extend(runs)
        self.final_status = await self.call(client, "get_resilience_status", {})

    def report(self, standin: TelegramStandIn, seconds: float) -> dict[str, Any]:
        counts: Counter[tuple[int, int]] = Counter()
        for m in list(standin.sent):
            found = EV.search(m.text)
            if found:
                counts[(m.chat_id, int(found.group(1)))] += 1
        expected = {(chat, i) for i in self.accepted for chat in USERS}
        box = self.final_status.get("outbox") or {}
        dup_pairs = {k: n for k, n in counts.items() if n > 1}
        faults: Counter[str] = Counter()
        for r in self.runs:
            faults.update(r.get("observations", {}).get("calls_faulted", {}))
        ttr = [float(r["time_to_recover_s"]) for r in self.runs if r.get("time_to_recover_s") is not None]
        return {
            "events": self.events,
            "seed": self.seed,
            "seconds": round(seconds, 1),
            "recipients": len(USERS),
            "accepted_events": len(self.accepted),
            "answers": dict(self.answers),
            "calls_interrupted_by_kills": self.interrupted,
            "kills": len(self.kill_recovery),
            "killed_during_experiment": self.killed_during,
            "expected_deliveries": len(expected),
            "delivered": len(expected & set(counts)),
            "lost": len(expected - set(counts)) - int(box.get("dead", 0)),
            "dead": int(box.get("dead", 0)),
            "duplicated_deliveries": len(dup_pairs),
            "extra_messages": sum(n - 1 for n in dup_pairs.values()),
            "response_lost_faults": faults.get("response_lost", 0),
            "outbox": box,
            "telegram_breaker": breaker_summary(self.final_status),  # per-operation breakers too
            "experiments": [
                {k: r.get(k) for k in ("id", "experiment", "ended_by", "aborted", "recovered", "time_to_recover_s")}
                for r in self.runs
            ],
            "faults_injected": dict(faults),
            "worst_chaos_time_to_recover_s": max(ttr, default=None),
            "chaos_runs_not_recovered": sum(1 for r in self.runs if r.get("recovered") is not True),
            "kill_time_to_recover_s": self.kill_recovery,
        }


async def run_soak(events: int, seed: int, concurrency: int, lease_s: int, kills: int, rate: float) -> dict[str, Any]:
    soak = Soak(events, seed, concurrency, lease_s, kills, rate)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cctg-soak-") as tmp, TelegramStandIn() as standin:
        pidfile = Path(tmp) / "server.pid"
        log_path = Path(tempfile.gettempdir()) / "cctg-soak-server.log"
        log_path.write_text("")
        params = StdioServerParameters(
            command=sys.executable,
            args=["-c", LAUNCH, str(pidfile), str(log_path)],
            env=server_env(standin, Path(tmp) / "data", lease_s),
        )
        async with anyio.create_task_group() as soak.watchers:  # recovery watches outlive a server
            for stop_at in [*soak.kill_at, None]:
                await soak.incarnation(params, pidfile, stop_at, standin)
        return soak.report(standin, time.monotonic() - started)


def render(r: dict[str, Any]) -> str:
    rows = [
        ("events sent (accepted)", f"{r['events']} ({r['accepted_events']})"),
        ("deliveries expected", r["expected_deliveries"]),
        ("delivered", r["delivered"]),
        ("lost", r["lost"]),
        ("dead", r["dead"]),
        ("duplicated deliveries", f"{r['duplicated_deliveries']} ({r['extra_messages']} extra messages)"),
        ("response-lost faults injected", r["response_lost_faults"]),
        ("server SIGKILLs (calls interrupted)", f"{r['kills']} ({r['calls_interrupted_by_kills']})"),
        ("chaos runs (not recovered)", f"{len(r['experiments'])} ({r['chaos_runs_not_recovered']})"),
        ("worst chaos time to recover", f"{r['worst_chaos_time_to_recover_s']} s"),
        ("time to recover after each kill", ", ".join(f"{t} s" for t in r["kill_time_to_recover_s"])),
        ("telegram breakers at the end", r["telegram_breaker"]),
        ("wall time", f"{r['seconds']} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"cctg-mcp chaos soak (seed {r['seed']}, {r['recipients']} recipients)", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    verdict = "PASS: nothing accepted was lost" if r["lost"] == 0 and r["dead"] == 0 else "FAIL: deliveries missing"
    return "\n".join([*lines, "", verdict, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease-seconds", type=int, default=10, help="CCTG_LEASE_SECONDS for the server")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--rate", type=float, default=4.0, help="events per second offered (default 4)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    parser.add_argument("--storage-events", type=int, default=10, help="rows in the storage-fault phase (0: skip)")
    parser.add_argument("--skip-soak", action="store_true", help="run only the storage and slow-peer phases")
    parser.add_argument("--skip-slow-peer", action="store_true", help="skip the slow-peer phase")
    args = parser.parse_args(argv)
    from cctg_mcp.dev import soak_faults

    passed = True
    report: dict[str, Any] = {}
    if not args.skip_soak:
        report = anyio.run(
            run_soak, args.events, args.seed, args.concurrency, args.lease_seconds, args.kills, args.rate
        )
        sys.stdout.write(render(report))
        passed = report["lost"] == 0 and report["dead"] == 0
    storage = anyio.run(soak_faults.storage_phase, args.storage_events) if args.storage_events > 0 else None
    peer = None if args.skip_slow_peer else anyio.run(soak_faults.slow_peer_phase)
    if peer is not None:
        peer["peak_server_rss_mb"] = soak_faults.peak_rss_of_children_mb()
    sys.stdout.write(soak_faults.render(storage, peer))
    passed = passed and (storage is None or storage["passed"]) and (peer is None or peer["passed"])
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps({**report, "storage_phase": storage, "slow_peer_phase": peer}, indent=2)
        )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
