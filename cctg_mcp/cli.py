"""Command line: ``cctg-mcp serve | check | hook | setup | demo``.

``serve`` speaks MCP over stdio (what Claude Desktop and Claude Code run). stdout is the
protocol channel, so logs go to stderr only, through a filter that redacts the bot token.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from cctg_mcp import __version__
from cctg_mcp.config import Settings, load_settings
from cctg_mcp.resilience.errors import BaseResilienceError, ConfigurationError, redact

if TYPE_CHECKING:
    from cctg_mcp.server.toolsets import ToolSelection


class RedactingFilter(logging.Filter):
    """Rewrites every record so no bot token (or given secret) reaches a handler."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message, *self.secrets)
        record.args = None
        return True


def configure_logging(level: str = "INFO", *secrets: str, data_dir: Path | None = None) -> Path | None:
    """stderr always; with ``data_dir`` also the rotating log file in it (ops/logfile.py),
    whose path is returned. Both go through the redacting filter."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    redacting = RedactingFilter(*secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(redacting)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    log_file = None
    if data_dir is not None:
        from cctg_mcp.ops.logfile import install_log_file

        log_file = install_log_file(data_dir, formatter, [redacting])
    # httpx logs every request URL at INFO, and the URL contains the token.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        sys.stderr.write(f"cctg-mcp: configuration error: {exc}\n")
        raise SystemExit(2) from None


def _selection(settings: Settings, toolsets: str | None) -> ToolSelection:
    from cctg_mcp.server.toolsets import select_tools

    return select_tools(
        settings.toolsets if toolsets is None else toolsets.split(","),
        delivery=settings.delivery,
        environment=settings.environment,
        read_only=settings.read_only,
        source="CCTG_TOOLSETS" if toolsets is None else "--toolsets",
    )


def serve(
    backend: str,
    transport: str = "stdio",
    host: str | None = None,
    port: int | None = None,
    toolsets: str | None = None,
) -> int:
    if backend == "trio":
        try:
            import trio  # noqa: F401  (anyio runs on it; the [trio] extra installs it)
        except ImportError:
            sys.stderr.write(
                "cctg-mcp: --backend trio needs trio, which is not installed: "
                "pip install 'cctg-mcp[trio]' (or leave out --backend trio to run on asyncio).\n"
            )
            return 2
    from cctg_mcp.app import open_service
    from cctg_mcp.server import build_server

    settings = _settings_or_exit()
    try:
        selection = _selection(settings, toolsets)
    except ConfigurationError as exc:
        sys.stderr.write(f"cctg-mcp: configuration error: {exc}\n")
        return 2
    if settings.redis_url is not None and backend == "trio":
        sys.stderr.write(
            "cctg-mcp: configuration error: CCTG_REDIS_URL is set, and the Redis client (redis-py) runs on "
            "asyncio only: drop --backend trio, or unset CCTG_REDIS_URL to coordinate over the data dir.\n"
        )
        return 2
    build = functools.partial(build_server, selection=selection)
    http_token = settings.http_token.get_secret_value() if settings.http_token else None
    redis_secrets = [s.get_secret_value() for s in (settings.redis_url, settings.redis_password) if s is not None]
    if settings.redis_url is not None:  # the password inside the URL, on its own
        redis_secrets.append(urlsplit(settings.redis_url.get_secret_value()).password or "")
    configure_logging("INFO", settings.token, http_token or "", *redis_secrets, data_dir=settings.data_dir)
    try:
        from cctg_mcp.resilience.config import load_resilience_config

        resilience = load_resilience_config(dict(os.environ), settings.config_path)
    except ConfigurationError as exc:
        sys.stderr.write(f"cctg-mcp: configuration error: {exc}\n")
        return 2
    from cctg_mcp.server.http import run_http, serve_stdio

    def service() -> Any:
        return open_service(settings, resilience=resilience)

    try:
        if transport == "http":  # graceful shutdown on SIGTERM/SIGINT in both (http_server.py)
            return run_http(
                service,
                build,
                backend=backend,
                host=host or settings.http_host,
                port=settings.http_port if port is None else port,
                token=http_token,
            )
        anyio.run(serve_stdio, service, build, backend=backend)
    except KeyboardInterrupt:
        pass
    except BaseResilienceError as exc:
        sys.stderr.write(f"cctg-mcp: {exc}\n")
        return 2
    return 0


def check(as_json: bool = False) -> int:
    """Contact what a send would contact (ops/preflight.py); exit 0 only when a send would
    reach every recipient now. ``as_json``: the same facts as one JSON object on stdout."""
    import json

    from cctg_mcp.ops.preflight import preflight

    def fail(problem: str) -> int:
        if as_json:
            sys.stdout.write(json.dumps({"ok": False, "problems": [problem]}) + "\n")
        else:
            sys.stdout.write(f"Problem: {problem}\n")
        return 2

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        return fail(f"configuration error: {exc}")
    configure_logging("WARNING", settings.token)
    try:
        from cctg_mcp.resilience.config import load_resilience_config

        load_resilience_config(dict(os.environ), settings.config_path)
    except ConfigurationError as exc:
        return fail(redact(str(exc), settings.token))
    try:
        selection = _selection(settings, None)
    except ConfigurationError as exc:
        return fail(str(exc))
    report = anyio.run(preflight, settings)
    if as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
        return 0 if report.ok else 1
    out = [
        f"cctg-mcp {__version__}: delivery={settings.delivery}, environment={settings.environment}, "
        f"recipients={len(settings.allowed_users)}, data dir={settings.data_dir}",
        f"toolsets: {', '.join(sorted(selection.toolsets))}{' (read-only tools only)' if selection.read_only else ''}",
    ]
    if report.bot is not None:
        out.append(f"Telegram ({report.api}): connected as @{report.bot.username} (id {report.bot.id}).")
    for r in report.recipients:
        out.append(f"Recipient {r.chat_id}: " + ("reachable." if r.reachable else f"NOT reachable: {r.error}"))
    if report.bridge_health is not None:
        out.append(f"Bridge health ({redact(settings.bridge_health_url)}): {report.bridge_health}")
    out.extend(f"Problem: {p}" for p in report.problems)
    if report.ok:  # only what was probed: Telegram itself in direct delivery, the bridge's /health in bridge mode
        if settings.delivery == "telegram":
            out.append(
                f"OK: configuration is valid, Telegram answers and every recipient ({len(report.recipients)}) "
                "can be reached."
            )
        else:
            out.append(
                "OK: configuration is valid, the events directory is writable and the bridge's /health answers healthy."
            )
    sys.stdout.write("\n".join(out) + "\n")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (tests check the README's commands against it)."""
    parser = argparse.ArgumentParser(prog="cctg-mcp", description="Telegram notifications for MCP clients.")
    parser.add_argument("--version", action="version", version=f"cctg-mcp {__version__}")
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="run the MCP server over stdio (default) or streamable HTTP")
    p_serve.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="stdio only")
    p_serve.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p_serve.add_argument("--host", default=None, help="HTTP bind address (CCTG_HTTP_HOST, default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, default=None, help="HTTP port (CCTG_HTTP_PORT, default 8765)")
    p_serve.add_argument(
        "--toolsets",
        default=None,
        help="comma list of toolsets to list (CCTG_TOOLSETS): default, all, or toolset names (see docs/tools.md; "
        "`cctg-mcp check` shows the selection)",
    )
    p_check = sub.add_parser(
        "check", help="check the configuration, the token (getMe) and that every allowed user can be reached"
    )
    p_check.add_argument("--json", dest="as_json", action="store_true", help="print the facts as JSON")
    p_hook = sub.add_parser("hook", help="a Claude Code hook: notify on Telegram about the event read from stdin")
    p_hook.add_argument(
        "--events", default=None, help="comma-separated hook events that notify (default Stop,Notification)"
    )
    p_hook.add_argument(
        "--limit", type=float, default=2.0, help="seconds from process start the command may take (default 2)"
    )
    p_setup = sub.add_parser("setup", help="check a bot token, find your chat id via /start, write the client config")
    from cctg_mcp.commands.setup import add_arguments

    add_arguments(p_setup)
    p_demo = sub.add_parser("demo", help="run a self-contained demo against a local Telegram stand-in")
    p_demo.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args: Any = parser.parse_args(argv)
    command = args.command or "serve"
    if command == "serve":
        return serve(
            getattr(args, "backend", "asyncio"),
            getattr(args, "transport", "stdio"),
            getattr(args, "host", None),
            getattr(args, "port", None),
            getattr(args, "toolsets", None),
        )
    if command == "check":
        return check(as_json=getattr(args, "as_json", False))
    if command == "setup":
        from cctg_mcp.commands.setup import run_setup

        return run_setup(args)
    if command == "hook":
        from cctg_mcp.commands.hook import run_hook

        return run_hook(args.events, limit=max(0.5, min(args.limit, 60.0)))
    from cctg_mcp.dev.demo import run_demo

    return run_demo(json_path=args.json_path)
