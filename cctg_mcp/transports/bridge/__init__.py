"""The CCTelegram bridge transport: its file protocol and its process, in one import.

- ``files``: atomic event files out (``EventFileWriter``), response files in
  (``read_bridge_responses``), pending-file counts;
- ``process``: find/start/stop/restart the bridge executable (``BridgeProcessManager``)
  and probe its ``/health`` (``probe_bridge_health``).
"""

from cctg_mcp.transports.bridge.files import (
    EventFileWriter,
    EventsDirectoryError,
    event_file_body,
    event_file_name,
    pending_event_files,
    read_bridge_responses,
    rfc3339,
    safe_task_id,
)
from cctg_mcp.transports.bridge.process import (
    BRIDGE_NAME,
    BridgeActionResult,
    BridgeHealth,
    BridgeNotFoundError,
    BridgeProcessManager,
    ProcessCheck,
    probe_bridge_health,
)

__all__ = [
    "BRIDGE_NAME",
    "BridgeActionResult",
    "BridgeHealth",
    "BridgeNotFoundError",
    "BridgeProcessManager",
    "EventFileWriter",
    "EventsDirectoryError",
    "ProcessCheck",
    "event_file_body",
    "event_file_name",
    "pending_event_files",
    "probe_bridge_health",
    "read_bridge_responses",
    "rfc3339",
    "safe_task_id",
]
