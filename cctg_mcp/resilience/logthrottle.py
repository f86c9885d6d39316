"""One log line per interval for a repeated occurrence, with a count of the ones it stood for.

A flood (a stranger pressing a button a thousand times, a client hammering the HTTP port,
the same OS error on every accept) must not become a flood of log lines. ``ThrottledLog``
logs the first occurrence of a key at once; further occurrences within ``interval`` seconds
are only counted, and the next one after the interval logs a line with that count
("... (and 41 more like it since the last such line)"). Time comes from the injected clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock

#: Default seconds between two lines for the same key.
DEFAULT_LOG_INTERVAL = 60.0
#: Most distinct keys remembered; past it the oldest is forgotten (a flood of new keys stays bounded).
MAX_KEYS = 1024


@dataclass
class _Entry:
    last_logged: float
    suppressed: int = 0


class ThrottledLog:
    """``note(key, level, msg, *args)``: log now, or count it for the next line of that key."""

    def __init__(self, logger: logging.Logger, *, interval: float = DEFAULT_LOG_INTERVAL, clock: Clock = SYSTEM_CLOCK):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        #: Every occurrence noted, logged or not.
        self.occurrences = 0
        #: Lines actually written.
        self.lines = 0

    def note(self, key: str, level: int, msg: str, *args: object) -> bool:
        """Record one occurrence; True when it was logged (False: counted for later)."""
        self.occurrences += 1
        now = self.clock.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_logged < self.interval:
            entry.suppressed += 1
            return False
        suppressed = 0 if entry is None else entry.suppressed
        if entry is None and len(self._entries) >= MAX_KEYS:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = _Entry(last_logged=now)
        if suppressed:
            msg = f"{msg} (and %d more like it since the last such line)"
            args = (*args, suppressed)
        self.lines += 1
        self.logger.log(level, msg, *args)
        return True

    def suppressed(self, key: str) -> int:
        """Occurrences of ``key`` counted but not yet logged."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.suppressed
