"""The CCTelegram bridge transport: its file protocol and its process (import the modules).

- ``files``: atomic event files out (``EventFileWriter``), response files in
  (``read_bridge_responses``), waiting-file counts (``waiting_event_files``);
- ``process``: find/start/stop/restart the bridge executable (``BridgeProcessManager``)
  and probe its ``/health`` (``probe_bridge_health``).
"""
