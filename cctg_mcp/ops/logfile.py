"""The log file: a rotating copy of the server's log in ``<data dir>/logs``, kept for
``MONITORING_LOGS_RETENTION`` (the seed's logs retention, 3 days by default).

stderr stays the live channel; the file is for afterwards (what did recovery do last night?).
Several server processes share one data dir, so each writes its own file,
``cctg-mcp-<UTC start>-<pid>.log`` (rotated at ``MAX_BYTES`` into ``.1`` .. ``.N``): no two
processes ever rotate the same file. ``run_log_retention`` deletes the files in the folder
not modified within the retention (a file still written to is never that old), whichever
process wrote them. The handler carries the same redacting filter as stderr, so no secret
reaches the file; the file is created 0600 in a 0700 folder.

``install_log_file`` is called by the command line (``cctg-mcp serve``); ``current()`` is the
file this process writes, which the health report and the recovery history point to.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

LOG_DIR = "logs"
PREFIX = "cctg-mcp-"
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 4
#: How often the retention sweep runs (at most; a short retention sweeps more often).
SWEEP_S = 3600.0

_current: Path | None = None


def log_dir(data_dir: Path) -> Path:
    return Path(data_dir) / LOG_DIR


def current() -> Path | None:
    """The log file this process writes (None when it writes none, e.g. the library client)."""
    return _current


def install_log_file(
    data_dir: Path, formatter: logging.Formatter, filters: list[logging.Filter], *, clock: Clock = SYSTEM_CLOCK
) -> Path | None:
    """Add a rotating file handler to the root logger; returns its path, or None (logged on
    stderr) when the data dir cannot hold it: the server runs on without a log file."""
    global _current
    directory = log_dir(data_dir)
    stamp = datetime.fromtimestamp(clock.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{PREFIX}{stamp}-{os.getpid()}.log"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # 0600 whatever the umask
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError as exc:
        log.warning("no log file: cannot write %s (%s); logging to stderr only", path, exc.strerror)
        return None
    handler.setFormatter(formatter)
    for f in filters:
        handler.addFilter(f)
    logging.getLogger().addHandler(handler)
    _current = path
    return path


def purge_old_logs(directory: Path, older_than_s: float, now: float) -> int:
    """Delete our log files (and their rotations) not modified within ``older_than_s``."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX) or ".log" not in entry.name:
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > older_than_s:
                os.unlink(entry.path)
                removed += 1
    return removed


async def run_log_retention(
    directory: Path,
    retention_s: float,
    *,
    clock: Clock = SYSTEM_CLOCK,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Sweep at start, then every ``min(SWEEP_S, retention / 4)`` until cancelled."""
    interval = max(1.0, min(SWEEP_S, retention_s / 4))
    started = False
    while True:
        try:
            removed = await anyio.to_thread.run_sync(purge_old_logs, directory, retention_s, clock.time())
            if removed:
                log.info(
                    "log retention: deleted %d log file(s) older than %.0fs from %s", removed, retention_s, directory
                )
        except Exception:  # never let housekeeping take the server down
            log.exception("log retention sweep failed")
        if not started:
            started = True
            task_status.started()
        await clock.sleep(interval)
