"""``python -m cctg_mcp.dev.bench`` (what ``scripts/bench`` runs)."""

from __future__ import annotations

from cctg_mcp.dev.bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
