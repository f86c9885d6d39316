"""Retention: finished outbox rows and stored answers are purged past
``monitoring.retention.events`` (MONITORING_EVENTS_RETENTION, 7 days by default), so the data
dir does not grow without bound. Metric history keeps its own bounded ring (metrics.py).

Pending and in-flight deliveries are never purged, whatever their age.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio
import anyio.abc

from cctg_mcp.answers.store import ResponseStore
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purged:
    """How many finished outbox rows and stored answers one retention pass deleted."""

    outbox_rows: int
    answers: int


async def purge_once(outbox: Outbox, answers_store: ResponseStore | None, retention_s: float) -> Purged:
    """One pass: finished outbox rows and (direct delivery) stored answers older than ``retention_s``.
    The bridge's response files have no store here: they age by mtime (``clear_old_responses``)."""
    rows = await outbox.purge(retention_s)
    answers = await answers_store.delete_older_than(retention_s) if answers_store is not None else 0
    if rows or answers:
        log.info("retention: purged %d finished deliveries and %d answers older than %.0fs", rows, answers, retention_s)
    return Purged(rows, answers)


async def run_housekeeping(
    outbox: Outbox,
    answers_store: ResponseStore | None,
    retention_s: float,
    *,
    interval_s: float = 3600.0,
    clock: Clock = SYSTEM_CLOCK,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Purge at start and then every ``interval_s`` until cancelled."""
    task_status.started()
    while True:
        try:
            await purge_once(outbox, answers_store, retention_s)
        except Exception as exc:  # a failed purge must not stop the server; try again next round
            log.warning("retention purge failed: %s", exc)
        await clock.sleep(interval_s)
