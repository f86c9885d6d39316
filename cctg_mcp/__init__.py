"""cctg-mcp: notify a person on Telegram from an MCP client, and keep working when things fail.

The public API is ``__all__``: the library client, what its sends return, and the base of
every error it raises. Everything else is internal and may change between versions.
"""

from __future__ import annotations

import time
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("cctg-mcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["BaseResilienceError", "ResilientBridgeClient", "SendResult", "__version__"]
#: When the package was first imported (wall clock): ``cctg-mcp hook`` counts its 2 s from here
#: where the process start time cannot be read.
IMPORTED_AT = time.time()

if TYPE_CHECKING:
    from cctg_mcp.client import ResilientBridgeClient, SendResult
    from cctg_mcp.resilience.errors import BaseResilienceError

#: Where each lazily imported public name lives.
_LAZY = {
    "BaseResilienceError": "cctg_mcp.resilience.errors",
    "ResilientBridgeClient": "cctg_mcp.client",
    "SendResult": "cctg_mcp.client",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `cctg-mcp --version` and the server's start-up do not import the client.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cctg_mcp' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
