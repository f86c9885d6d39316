"""``python -m cctg_mcp.testing``: run the Telegram Bot API stand-in as a process.

Prints one JSON line ``{"base_url": ..., "token": ...}`` and serves until stdin closes
(or only until SIGTERM/SIGINT with ``--ignore-stdin``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from cctg_mcp.testing.standin import DEFAULT_TOKEN, TelegramStandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cctg_mcp.testing", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--flood-limits", action="store_true")
    parser.add_argument("--ignore-stdin", action="store_true", help="serve until SIGTERM only")
    args = parser.parse_args(argv)
    done = threading.Event()
    standin = TelegramStandIn(args.token, host=args.host, port=args.port, flood_limits=args.flood_limits)
    standin.start()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())

    def watch_stdin() -> None:
        for _ in sys.stdin:
            pass
        done.set()

    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    sys.stdout.write(json.dumps({"base_url": standin.base_url, "token": args.token}) + "\n")
    sys.stdout.flush()
    try:
        while not done.wait(0.2):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
