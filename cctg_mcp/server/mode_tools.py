"""Mode tools: nomad, local, muted, as in CCTelegram (REFERENCE §A 2.5). No inputs.

Direct delivery: the server switches itself (persisted in the data dir's bridge_mode.json,
shared by every process); bridge delivery: the bridge is asked with a Mode Switch Request
event, as the original did. See delivery/mode_switch.py."""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations

from cctg_mcp.delivery.mode_switch import ModeSwitchResult, switch_mode
from cctg_mcp.server.common import call, service_of
from cctg_mcp.server.toolsets import Registrar

TOOLSET = "modes"  # server/toolsets.py: which selection lists these tools

#: Switching the mode changes state, is not destructive (nothing is dropped), and is idempotent.
SWITCH = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)


def register(mcp: Registrar) -> None:
    @mcp.tool(title="Nomad mode", annotations=SWITCH)
    async def switch_to_nomad_mode(ctx: Context) -> ModeSwitchResult:
        """Nomad mode (away from the computer): everything is sent, approval requests included, and
        answers are read. Events held by local or mute mode go out now."""
        return await call(switch_mode(service_of(ctx), "nomad"))

    @mcp.tool(title="Local mode", annotations=SWITCH)
    async def switch_to_local_mode(ctx: Context) -> ModeSwitchResult:
        """Local mode (at the computer): notifications only; approval requests wait in the outbox
        (answered `queued`, reason `local`) until nomad mode."""
        return await call(switch_mode(service_of(ctx), "local"))

    @mcp.tool(title="Mute mode", annotations=SWITCH)
    async def switch_to_mute_mode(ctx: Context) -> ModeSwitchResult:
        """Mute: nothing is sent. Sends answer `queued` with reason `muted`; the events are stored
        and go out when the mode is switched back to nomad or local."""
        return await call(switch_mode(service_of(ctx), "muted"))
