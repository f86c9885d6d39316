"""cctg-mcp: notify a person on Telegram from an MCP client, and keep working when things fail."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("cctg-mcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["ResilientBridgeClient", "__version__"]
#: When the package was first imported (wall clock): ``cctg-mcp hook`` counts its 2 s from here
#: where the process start time cannot be read.
IMPORTED_AT = time.time()

if TYPE_CHECKING:
    from cctg_mcp.client import ResilientBridgeClient


def __getattr__(name: str) -> Any:
    # Lazy, so `cctg-mcp --version` and the server's start-up do not import the client.
    if name == "ResilientBridgeClient":
        from cctg_mcp.client import ResilientBridgeClient

        return ResilientBridgeClient
    raise AttributeError(name)
