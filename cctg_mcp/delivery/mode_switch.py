"""Mode use cases, free of MCP: switch the mode (tools, Telegram commands) and report it.

Direct delivery: the server owns the mode (``delivery/mode.py``); a switch is persisted in
the data dir's ``bridge_mode.json`` and takes effect at once in every process sharing it.
Bridge delivery: the CCTelegram bridge owns it, so, as the original MCP server did, a switch
sends the bridge the event ``info_notification`` titled ``Mode Switch Request`` whose
``data.command`` is ``/cct:<mode>``; the answer's ``mode`` is then what was requested (the
bridge applies it when it reads the event file), or ``unknown`` when the request failed.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Literal

import anyio.to_thread
from pydantic import BaseModel, Field

from cctg_mcp.delivery.mode import COMMAND_OF, MODE_FILE, TO_FILE, Mode, ModeStore, read_mode_file
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.clock import iso_z
from cctg_mcp.resilience.errors import BaseResilienceError, ResourceError, redact

log = logging.getLogger(__name__)

MEANING: dict[Mode, str] = {
    "nomad": "everything is sent, approval requests included, and answers are read",
    "local": "notifications are sent; approval requests wait in the outbox until nomad mode",
    "muted": "nothing is sent; every event is stored (queued, reason 'muted') and goes out when unmuted",
}


class ModeSwitchResult(BaseModel):
    """Whether a mode switch was made, and the mode now in force."""

    success: bool
    message: str
    mode: Literal["nomad", "local", "muted", "unknown"] = Field(
        description="The mode now in force (direct delivery), the mode requested from the bridge, "
        "or unknown when the switch failed."
    )
    previous_mode: Literal["nomad", "local", "muted"] | None = None
    event_id: str | None = Field(default=None, description="Bridge delivery: the Mode Switch Request event.")


class ModeStatus(BaseModel):
    """The delivery mode in force, who manages it, and what it means."""

    mode: Literal["nomad", "local", "muted"] | None = Field(
        description="The mode in force; None in bridge delivery when the bridge has not written its mode file."
    )
    managed_by: Literal["server", "bridge"]
    meaning: str
    file: str = Field(description="Where the mode persists (bridge_mode.json, the bridge's format).")
    persisted: bool = Field(description="The file exists (without it: nomad here, Local for the bridge).")
    changed_by: str | None = None
    changed_at: str | None = None
    error: str | None = Field(default=None, description="The mode file could not be read.")


def mode_store_of(service: NotificationService) -> ModeStore:
    """The direct-delivery mode store, or the "not configured" error the send tools give."""
    if service.mode is not None:
        return service.mode
    raise service.not_configured()


async def switch_mode(service: NotificationService, mode: Mode, *, by: str = "tool") -> ModeSwitchResult:
    if service.settings.delivery == "bridge":
        return await request_bridge_mode(service, mode)
    store = mode_store_of(service)
    try:
        before = await anyio.to_thread.run_sync(partial(store.set, mode, by=by))
    except OSError as exc:
        raise ResourceError(
            f"Could not save the mode to {store.path} ({exc.strerror}); the mode is unchanged. "
            "Make the data dir (CCTG_DATA_DIR) writable.",
            code="MODE_NOT_SAVED",
        ) from None
    if service.dispatcher is not None:
        service.dispatcher.wake()  # unmuted: the held rows go out now
    return ModeSwitchResult(
        success=True,
        message=f"{TO_FILE[mode]} mode (was {TO_FILE[before]}): {MEANING[mode]}.",
        mode=mode,
        previous_mode=before,
    )


async def request_bridge_mode(service: NotificationService, mode: Mode) -> ModeSwitchResult:
    """The original's behaviour: ask the bridge to switch by an event carrying the command."""
    command = COMMAND_OF[mode]
    try:
        event = service.build_event(
            type="info_notification",
            title="Mode Switch Request",
            description=command,
            data={"command": command, "requested_mode": mode},
        )
        result = await service.submit(event, operation="sendEvent")
    except BaseResilienceError as exc:
        return ModeSwitchResult(success=False, message=f"Failed to switch mode: {redact(str(exc))}", mode="unknown")
    if result.status != "delivered":
        return ModeSwitchResult(
            success=False,
            message=f"The mode switch request ({command}) is queued, not yet written for the bridge "
            f"({result.reason}); the bridge switches when it is. Check get_bridge_status.",
            mode="unknown",
            event_id=result.event_id,
        )
    return ModeSwitchResult(
        success=True,
        message=f"Mode switch request {command} written for the bridge (event {result.event_id}); "
        f"the bridge switches to {TO_FILE[mode]} when it reads it.",
        mode=mode,
        event_id=result.event_id,
    )


async def on_telegram_command(service: NotificationService, mode: Mode, user_id: int, update_id: int) -> None:
    """``/cct:<mode>`` from an allowed user: switch, then confirm to the people on Telegram
    (the confirmation goes out even when muting: the person asked for it)."""
    result = await switch_mode(service, mode, by=f"telegram:{user_id}")
    event = service.build_event(
        type="info_notification",
        title=f"{TO_FILE[mode]} mode",
        description=MEANING[mode][:1].upper() + MEANING[mode][1:] + ". Switch with /cct:nomad, /cct:local, /cct:mute.",
        task_id=f"mode-switch-{update_id}",  # a re-read update confirms once
        data={"command": COMMAND_OF[mode], "requested_mode": mode, "previous_mode": result.previous_mode},
    )
    await service.submit(event, operation="sendMessage", bypass_holds=True)


def mode_status(service: NotificationService) -> ModeStatus | None:
    """The mode for the status report (None when nothing is configured)."""
    if service.mode is not None:
        store = service.mode
        current = store.get()
        change = store.last_change
        return ModeStatus(
            mode=current,
            managed_by="server",
            meaning=MEANING[current],
            file=str(store.path),
            persisted=store.path.exists(),
            changed_by=change.by if change else None,
            changed_at=_iso(change.at) if change else None,
            error=store.error,
        )
    if service.settings.delivery != "bridge":
        return None
    path = service.settings.responses_dir / MODE_FILE
    error = None
    try:
        found = read_mode_file(path)
    except (OSError, ValueError) as exc:
        found, error = None, str(exc)
    return ModeStatus(
        mode=found,
        managed_by="bridge",
        meaning=MEANING[found] if found else "the bridge has not saved a mode (its default is Local)",
        file=str(path),
        persisted=found is not None,
        error=error,
    )


def _iso(epoch: float) -> str:
    return iso_z(epoch)
