"""``scripts/chaos`` phases for a hostile world: storage faults and slow or huge peers.

Each phase runs the real server as a subprocess over stdio (the official ``mcp.Client``)
against the in-process Telegram stand-in, and reports what it observed:

- **storage**: an outbox with ``--storage-events`` accepted events, one of them damaged on
  disk (20 bytes that are not UTF-8, which ``PRAGMA quick_check`` does not notice), is
  served: every good row must be delivered and the damaged one quarantined (dead, with
  the reason). Then the data directory is deleted under the running server: every send
  after that must be refused saying so (never "queued ... stored durably").
- **slow peer**: Telegram answers ``sendMessage`` one byte a second (each byte well inside
  the read timeout) and then with a 200 MB body: each call must end within its bound, the
  server's memory must stay bounded, and once Telegram heals every accepted event arrives.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from cctg_mcp.testing import FaultMode, TelegramStandIn

USERS = (111111111,)
#: The phases' servers write their stderr here (not over the report).
LOG_PATH = Path(tempfile.gettempdir()) / "cctg-soak-phases-server.log"
MARKER = "soak-damaged-row-" + "x" * 40


def _params(standin: TelegramStandIn, data_dir: Path, **extra: str) -> StdioServerParameters:
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")},
        **standin.server_env(data_dir, USERS),
        "CCTG_ENVIRONMENT": "development",
        "CCTG_RATE_PER_CHAT": "200",
        "CCTG_RATE_PER_CHAT_BURST": "50",
        "CCTG_RATE_GLOBAL": "400",
        "CCTG_TOOL_RATE_LIMIT": "0",
        **extra,
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "cctg_mcp", "serve"], env=env)


async def _call(client: Client, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
    with anyio.fail_after(120):
        result = await client.call_tool(tool, args)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return (not result.is_error), (result.structured_content if not result.is_error else text)


async def _prefill(path: Path, n: int, damaged: int) -> None:
    from cctg_mcp.delivery.outbox import Outbox
    from cctg_mcp.events.catalogue import Event

    box = await Outbox.open(path)
    for i in range(n):
        title = MARKER if i == damaged else f"storage ev-{i:05d}"
        event = Event(event_id=f"st-{i}", type="task_completion", title=title, description="done", task_id=f"st{i}")
        await box.enqueue(event, list(USERS))
    await box.close()
    await anyio.to_thread.run_sync(damage_row, path, MARKER)


def damage_row(path: Path, marker: str) -> None:
    """20 bytes that are not UTF-8 over the text of the row holding ``marker``, in the file
    itself, where SQLite's ``quick_check`` does not notice (raises if it does)."""
    data = bytearray(path.read_bytes())
    at = data.index(marker.encode()) + 5
    rng = random.Random(19)
    data[at : at + 20] = bytes([0xFF, 0xFE]) + bytes(rng.randrange(128, 256) for _ in range(18))
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as conn:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    conn.close()
    if check != "ok":
        raise RuntimeError(f"the damage was noticed by quick_check ({check}); the phase needs a silent one")


async def storage_phase(events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cctg-soak-storage-") as tmp, TelegramStandIn() as standin:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        await _prefill(data_dir / "outbox.sqlite3", events, damaged=events // 2)
        errlog = LOG_PATH.open("a")
        async with Client(stdio_client(_params(standin, data_dir), errlog=errlog)) as client:
            started = time.monotonic()
            with anyio.move_on_after(120):
                await standin.await_messages(events - 1, timeout=120)
            drained_s = round(time.monotonic() - started, 2)
            _, status = await _call(client, "get_resilience_status", {})
            outbox = (status or {}).get("outbox") or {}
            shutil.rmtree(data_dir)
            answers = []
            for i in range(5):
                ok, out = await _call(client, "send_telegram_message", {"message": f"after the data dir is gone {i}"})
                answers.append("accepted" if ok else ("refused, saying so" if "outbox is gone" in out else out[:120]))
            _, after = await _call(client, "get_resilience_status", {})
        errlog.close()
        delivered = sum(1 for m in standin.sent if "storage ev-" in m.text)
        return {
            "events_prefilled": events,
            "damaged_rows": 1,
            "good_rows_delivered": delivered,
            "good_rows_expected": events - 1,
            "quarantined_dead": int(outbox.get("dead", 0)),
            "seconds_to_deliver_the_good_rows": drained_s,
            "sends_after_data_dir_deleted": answers,
            "status_after_deletion": (after or {}).get("overall"),
            "passed": delivered == events - 1
            and int(outbox.get("dead", 0)) == 1
            and all(a == "refused, saying so" for a in answers),
        }


async def slow_peer_phase() -> dict[str, Any]:
    bound_s = 10.0 + 5.0 + 5.0  # a call's bound in the server: read + connect timeouts + margin
    with tempfile.TemporaryDirectory(prefix="cctg-soak-peer-") as tmp, TelegramStandIn() as standin:
        config = Path(tmp) / "resilience.json"
        config.write_text(
            '{"operations": {"sendMessage": {"timeout": 30000}, "sendTaskCompletion": {"timeout": 30000}},'
            ' "retry": {"telegram": {"maxAttempts": 1}}}'
        )
        params = _params(standin, Path(tmp) / "data", CCTG_CONFIG=str(config))
        results: dict[str, Any] = {}
        errlog = LOG_PATH.open("a")
        async with Client(stdio_client(params, errlog=errlog)) as client:
            standin.drip_interval = 1.0
            standin.set_fault(FaultMode.DRIP, methods={"sendMessage"})
            started = time.monotonic()
            ok, out = await _call(client, "send_telegram_message", {"message": "slow peer ev-00001"})
            results["drip_call_seconds"] = round(time.monotonic() - started, 2)
            results["drip_answer"] = (out or {}).get("status") if ok else str(out)[:160]
            standin.huge_body_bytes = 200 * 1024 * 1024
            standin.set_fault(FaultMode.HUGE_BODY, methods={"sendMessage"})
            started = time.monotonic()
            ok, out = await _call(client, "send_telegram_message", {"message": "huge peer ev-00002"})
            results["huge_call_seconds"] = round(time.monotonic() - started, 2)
            results["huge_answer"] = (out or {}).get("status") if ok else str(out)[:160]
            standin.clear_fault()
            with anyio.move_on_after(120):
                while not {"ev-00001", "ev-00002"} <= {w for m in standin.sent for w in m.text.split()}:
                    await _call(client, "trigger_recovery", {"component": "telegram", "strategy": "retry"})
                    await anyio.sleep(1.0)
            _, status = await _call(client, "get_resilience_status", {})
            results["outbox_at_the_end"] = (status or {}).get("outbox")
        errlog.close()
        received = {w for m in standin.sent for w in m.text.split()}
        results["delivered_after_healing"] = sorted(received & {"ev-00001", "ev-00002"})
        results["call_bound_s"] = bound_s
        results["passed"] = (
            len(results["delivered_after_healing"]) == 2 and results["drip_call_seconds"] <= bound_s + 15
        )
        return results


def peak_rss_of_children_mb() -> float:
    """The largest resident set any finished child (a server) reached, in MB (Linux: KiB)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def render(storage: dict[str, Any] | None, peer: dict[str, Any] | None) -> str:
    lines: list[str] = [f"(the phases' server logs: {LOG_PATH})", ""]
    if storage is not None:
        lines += [
            "storage-fault phase",
            f"  good rows delivered around a damaged one  {storage['good_rows_delivered']}"
            f" of {storage['good_rows_expected']} ({storage['seconds_to_deliver_the_good_rows']} s)",
            f"  damaged row quarantined (dead)            {storage['quarantined_dead']}",
            "  sends after the data dir was deleted      "
            + ", ".join(sorted(set(storage["sends_after_data_dir_deleted"]))),
            f"  status after the deletion                 {storage['status_after_deletion']}",
            f"  {'PASS' if storage['passed'] else 'FAIL'}",
            "",
        ]
    if peer is not None:
        lines += [
            "slow-peer phase",
            f"  Telegram drips 1 byte/s: the call ended   in {peer['drip_call_seconds']} s ({peer['drip_answer']})",
            f"  Telegram answers 200 MB: the call ended   in {peer['huge_call_seconds']} s ({peer['huge_answer']})",
            f"  delivered once Telegram healed            {', '.join(peer['delivered_after_healing'])}",
            f"  peak server memory (all phases)           {peer.get('peak_server_rss_mb')} MB",
            f"  {'PASS' if peer['passed'] else 'FAIL'}",
            "",
        ]
    return "\n".join(lines)
