"""The CCTelegram modes (nomad, local, muted) in direct delivery: what may go out now.

As in the CCTelegram bridge (REFERENCE §B 3.7):

- ``nomad``: everything is sent, approval requests included, and answers are read;
- ``local``: notifications only: an event that asks for an answer (``approval_request``, or
  ``data.requires_response``) is stored and waits in the outbox until nomad mode;
- ``muted``: nothing is sent; every event is stored (the send answers ``queued`` with reason
  ``muted``) and goes out when the mode is switched back.

The mode lives in ``bridge_mode.json`` in the data dir, in the bridge's own format (a JSON
string ``"Nomad"``, ``"Local"`` or ``"Muted"``), so every server process sharing the data
dir sees the same mode: ``ModeStore.get`` re-reads the file when it changed (one ``stat``
per call) and writes are atomic (temp file, then rename). Without the file the mode is
``nomad`` (the server's behaviour before modes existed; the bridge's own default is Local).

In bridge delivery the bridge owns the mode (the tools send it the ``/cct:*`` command as an
event), so the dispatcher has no ``ModeStore`` and gates nothing here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

Mode = Literal["nomad", "local", "muted"]
MODE_FILE = "bridge_mode.json"
DEFAULT_MODE: Mode = "nomad"
#: Our names <-> the bridge's file format (Rust ``BridgeMode`` serialised by serde).
TO_FILE: dict[Mode, str] = {"nomad": "Nomad", "local": "Local", "muted": "Muted"}
FROM_FILE: dict[str, Mode] = {v: k for k, v in TO_FILE.items()}
#: The Telegram commands (also as ``/cct:nomad@SomeBot``) and the mode each selects.
COMMANDS: dict[str, Mode] = {"/cct:nomad": "nomad", "/cct:local": "local", "/cct:mute": "muted"}
COMMAND_OF: dict[Mode, str] = {v: k for k, v in COMMANDS.items()}
#: The reasons a held send answers with (``SendResult.reason``).
MUTED = "muted"
LOCAL = "local"


def parse_command(text: str | None) -> Mode | None:
    """The mode a message selects (``/cct:nomad``, ``/cct:mute@CCTelegramBot`` ...), else None."""
    if not text:
        return None
    word = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    return COMMANDS.get(word.split("@", 1)[0].lower())


def asks_for_answer(event: Event) -> bool:
    """An event local mode holds back: it asks the person for an answer."""
    return event.type == "approval_request" or event.data.get("requires_response") is True


def read_mode_file(path: Path) -> Mode | None:
    """The mode in a ``bridge_mode.json`` (ours or the bridge's), None when absent; a file
    that is not one of the three JSON strings raises ``ValueError`` naming what is allowed."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw.strip()
    if isinstance(value, str) and value in FROM_FILE:
        return FROM_FILE[value]
    raise ValueError(f'{path} holds {raw[:40]!r}; expected one of the JSON strings "Nomad", "Local", "Muted"')


@dataclass
class ModeChange:
    """One change of the delivery mode: which mode, who changed it, and when."""

    mode: Mode
    by: str  # "tool", "telegram:<user id>", or "file" (another process or a person edited it)
    at: float  # epoch seconds


class ModeStore:
    """The direct-delivery mode, shared through ``bridge_mode.json`` in the data dir."""

    def __init__(self, path: Path, *, default: Mode = DEFAULT_MODE, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self.default = default
        self._mode: Mode = default
        #: (inode, mtime_ns, size) of the file last read: a switch replaces the file (new inode),
        #: so a change is seen even where timestamps are coarse and the size is the same.
        self._seen: tuple[int, int, int] | None = None
        self.last_change: ModeChange | None = None
        self.error: str | None = None  # the file could not be read or parsed

    def get(self) -> Mode:
        """The current mode, re-read when the file changed (another process may switch it)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._mode, self.error = None, self.default, None
            return self._mode
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"
            return self._mode
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature != self._seen:
            try:
                mode = read_mode_file(self.path) or self.default
            except (OSError, ValueError) as exc:
                self.error = str(exc)
                log.warning("mode: %s; keeping %s", exc, self._mode)
                return self._mode
            self._seen, self.error = signature, None
            if mode != self._mode:
                self.last_change = ModeChange(mode, "file", st.st_mtime)
            self._mode = mode
        return self._mode

    def set(self, mode: Mode, *, by: str) -> Mode:
        """Persist ``mode`` atomically; returns the mode before. Raises ``OSError`` when the
        data dir cannot be written (nothing changed then)."""
        before = self.get()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bridge_mode.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(TO_FILE[mode], f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._seen = None  # re-read (and remember the signature) on the next get
        self._mode = mode
        self.get()
        self.last_change = ModeChange(mode, by, self.clock.time())
        log.info("mode: %s -> %s (by %s)", before, mode, by)
        return before

    def hold_reason(self, event: Event | None) -> str | None:
        """``muted`` or ``local`` when the mode holds this event back, else None."""
        mode = self.get()
        if mode == "muted":
            return MUTED
        if mode == "local" and event is not None and asks_for_answer(event):
            return LOCAL
        return None
