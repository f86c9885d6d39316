"""Permission prompts answered on Telegram (Claude Code's ``--permission-prompt-tool``):
``summary`` renders a tool call for the person, ``gate`` asks and decides."""

from cctg_mcp.permissions.gate import PermissionDecision, PermissionGate
from cctg_mcp.permissions.summary import summarise

__all__ = ["PermissionDecision", "PermissionGate", "summarise"]
