"""``cctg-mcp setup``: from a bot token to a working client configuration, finding the chat id.

1. the token: ``TELEGRAM_BOT_TOKEN``, ``--token-stdin`` or a hidden prompt (never a command-line
   argument, which other users can read in the process list);
2. ``getMe`` checks it and names the bot;
3. the person sends ``/start`` to the bot; ``getUpdates`` reads it and shows their user id and
   name (``--user-id`` skips this in scripts); they confirm (``--yes`` skips that). A running
   server that reads the bot's updates (it holds the data dir's reader lock) makes setup stop
   first: two readers would cut each other off, and setup would take the server's answers;
4. the configuration is merged into Claude Code's user config (``~/.claude.json``) and/or
   Claude Desktop's ``claude_desktop_config.json`` (other servers kept, the old file kept as
   ``.bak``, written atomically, mode 0600), or printed with ``--print``.

The token is never shown in full: messages show ``123456:AB…yz``; ``--print`` masks it too
unless ``--show-token`` (for redirecting into a file). Messages go to stderr, ``--print``'s
configuration to stdout.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cctg_mcp.resilience.errors import BaseResilienceError, TelegramConflict, TelegramUnauthorized, redact
from cctg_mcp.transports.api import DEFAULT_BASE_URL

if TYPE_CHECKING:  # imported when the command runs, so building the CLI's parser stays light
    from cctg_mcp.transports.telegram import TelegramTransport

SERVER_NAME = "cctg"


class SetupError(Exception):
    """Stops the setup with a message for the person (exit 1)."""


@dataclass(frozen=True)
class Person:
    """The person who sent /start to the bot: their user id and name."""

    user_id: int
    first_name: str
    username: str | None

    def __str__(self) -> str:
        handle = f" (@{self.username})" if self.username else ""
        return f"{self.first_name}{handle}, user id {self.user_id}"


def mask(token: str) -> str:
    """``123456:AB…yz``: enough to recognise the token, never enough to use it."""
    bot, _, secret = token.partition(":")
    return f"{bot}:{secret[:2]}…{secret[-2:]}" if len(secret) >= 8 else f"{bot}:…"


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-stdin", action="store_true", help="read the bot token from stdin's first line")
    parser.add_argument("--api-base-url", default=None, help="Bot API base URL (default TELEGRAM_API_BASE_URL)")
    parser.add_argument("--user-id", action="append", type=int, default=None, help="skip /start: allow this user")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for /start (default 300)")
    parser.add_argument("--yes", action="store_true", help="do not ask to confirm")
    parser.add_argument(
        "--client", choices=("code", "desktop", "both"), default=None, help="which configuration to write"
    )
    parser.add_argument("--config-path", type=Path, default=None, help="the configuration file to merge into")
    parser.add_argument(
        "--toolsets", default=None, help="CCTG_TOOLSETS for the server, e.g. default,permissions (permission_prompt)"
    )
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the configuration instead")
    parser.add_argument("--show-token", action="store_true", help="with --print: print the token in full")


def read_token(args: Any) -> str:
    if args.token_stdin:
        token = sys.stdin.readline().strip()
    elif os.environ.get("TELEGRAM_BOT_TOKEN", "").strip():
        token = os.environ["TELEGRAM_BOT_TOKEN"].strip()
    elif sys.stdin.isatty():
        token = getpass.getpass("Bot token from @BotFather (hidden): ").strip()
    else:
        raise SetupError("No bot token: set TELEGRAM_BOT_TOKEN, pass --token-stdin, or run in a terminal.")
    if ":" not in token or any(c.isspace() for c in token):
        raise SetupError("That does not look like a bot token (expected '<digits>:<secret>' from @BotFather).")
    return token


async def check_token(transport: TelegramTransport, token: str) -> dict[str, Any]:
    try:
        return await transport.get_me()
    except TelegramUnauthorized:
        raise SetupError(f"Telegram rejected the token {mask(token)}: copy it again from @BotFather.") from None
    except BaseResilienceError as exc:
        raise SetupError(f"Telegram could not be reached: {redact(str(exc), token)}") from None


def start_sender(update: dict[str, Any]) -> Person | None:
    """The person who sent ``/start`` in a private chat, from one update."""
    message = update.get("message")
    if not isinstance(message, dict) or not str(message.get("text", "")).startswith("/start"):
        return None
    sender, chat = message.get("from"), message.get("chat")
    if not isinstance(sender, dict) or not isinstance(chat, dict) or chat.get("type") != "private":
        return None
    user_id = sender.get("id")
    if not isinstance(user_id, int) or sender.get("is_bot"):
        return None
    return Person(user_id, str(sender.get("first_name") or "?")[:64], sender.get("username") or None)


def data_dir() -> Path:
    """The data dir a server started from this environment uses (``CCTG_DATA_DIR``, else the
    default), read by the settings' own path parser (stripped, ``~`` expanded)."""
    from cctg_mcp.config import DEFAULT_DATA_DIR, parse_path

    return parse_path(os.environ.get("CCTG_DATA_DIR")) or DEFAULT_DATA_DIR.expanduser()


async def refuse_if_a_server_reads(directory: Path) -> None:
    """Stop before reading getUpdates when a live server holds the data dir's reader lock:
    Telegram would cut its poll off (409) and this setup would take the person's answers."""
    from cctg_mcp.delivery.local_coordination import LocalCoordinator

    reader = await LocalCoordinator(directory).leader()  # None unless a live process holds the lock
    if reader is not None:
        raise SetupError(
            f"A running cctg-mcp server (session {reader}, data dir {directory}) reads this bot's updates. "
            "Reading them here would cut it off (Telegram refuses the older reader with 409) and take the "
            "answers meant for it. Stop the server first, or pass --user-id with your numeric id "
            "(nothing else needs the updates)."
        )


async def wait_for_start(transport: TelegramTransport, wait: float) -> Person:
    """Skip updates already waiting (saying how many), then long-poll until someone sends /start."""
    try:
        import anyio

        old = await transport.get_updates(None, timeout=0, allowed_updates=["message"])
        ids = [u["update_id"] for u in old if isinstance(u.get("update_id"), int)]
        offset = max(ids) + 1 if ids else None
        if ids:
            say(
                f"{len(ids)} update(s) already waiting for the bot are skipped and discarded (Telegram "
                "drops them once setup reads past them); send /start after this line."
            )
        with anyio.move_on_after(wait):
            while True:
                updates = await transport.get_updates(offset, timeout=min(25, max(1, int(wait))))
                for update in updates:
                    if isinstance(update.get("update_id"), int):
                        offset = update["update_id"] + 1
                    person = start_sender(update)
                    if person is not None:
                        await transport.get_updates(offset, timeout=0)  # confirm it, so no server reads it again
                        return person
    except TelegramConflict:
        raise SetupError(
            "Another program reads this bot's updates (a running cctg-mcp server or a webhook): stop it, "
            "or pass --user-id with your numeric id."
        ) from None
    except BaseResilienceError as exc:
        raise SetupError(f"Reading updates failed: {exc}") from None
    raise SetupError(f"No /start arrived within {wait:g} s; nothing was written. Run setup again.")


def server_entry(token: str, users: list[int], base_url: str, toolsets: str | None = None) -> dict[str, Any]:
    """How the client starts the server: an absolute command, since clients have a short PATH."""
    exe = shutil.which("cctg-mcp") or str(Path(sys.executable).with_name("cctg-mcp"))
    command, args = (exe, ["serve"]) if Path(exe).exists() else (sys.executable, ["-m", "cctg_mcp", "serve"])
    env = {"TELEGRAM_BOT_TOKEN": token, "TELEGRAM_ALLOWED_USERS": ",".join(str(u) for u in users)}
    if base_url != DEFAULT_BASE_URL:
        env["TELEGRAM_API_BASE_URL"] = base_url
    if toolsets:
        env["CCTG_TOOLSETS"] = toolsets
    return {"command": command, "args": args, "env": env}


def default_path(client: str) -> Path:
    if client == "code":
        return Path.home() / ".claude.json"
    if sys.platform == "darwin":
        return Path.home() / "Library/Application Support/Claude/claude_desktop_config.json"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home())) / "Claude/claude_desktop_config.json"
    return Path.home() / ".config/Claude/claude_desktop_config.json"


def merge_into(path: Path, entry: dict[str, Any]) -> None:
    """Set ``mcpServers.cctg`` in ``path``, keeping everything else; atomic, 0600, old file as .bak."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (ValueError, OSError) as exc:
            raise SetupError(f"{path} is not readable JSON ({exc}); fix or move it, nothing was written.") from None
        if not isinstance(data, dict):
            raise SetupError(f"{path} does not hold a JSON object; nothing was written.")
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise SetupError(f'{path}: "mcpServers" is not an object; nothing was written.')
    servers[SERVER_NAME] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def confirm(question: str) -> bool:
    sys.stderr.write(question + " [Y/n] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("", "y", "yes") and answer != ""


def clients(args: Any) -> list[str]:
    if args.client == "both":
        return ["code", "desktop"]
    if args.client is not None:
        return [args.client]
    found = [c for c in ("code", "desktop") if default_path(c).exists() or default_path(c).parent.is_dir()]
    return found or ["code"]


async def _setup(args: Any, token: str, base_url: str) -> int:
    from cctg_mcp.transports.telegram import TelegramTransport

    transport = TelegramTransport(token, base_url, timeout=10.0)
    try:
        me = await check_token(transport, token)
        bot = me.get("username") or me.get("first_name") or "your bot"
        say(f"Token {mask(token)} works: the bot is @{bot} (id {me.get('id')}).")
        if args.user_id:
            users = list(dict.fromkeys(args.user_id))
        else:
            await refuse_if_a_server_reads(data_dir())
            say(f"Now open https://t.me/{bot} in Telegram and send /start (waiting up to {args.wait:g} s)...")
            person = await wait_for_start(transport, args.wait)
            say(f"/start came from {person}.")
            if not args.yes and not confirm(f"Allow {person.first_name} to receive notifications and answer?"):
                raise SetupError("Not confirmed; nothing was written.")
            users = [person.user_id]
    finally:
        await transport.aclose()
    entry = server_entry(token, users, base_url, args.toolsets)
    if args.print_only:
        shown = entry if args.show_token else {**entry, "env": {**entry["env"], "TELEGRAM_BOT_TOKEN": mask(token)}}
        sys.stdout.write(json.dumps({"mcpServers": {SERVER_NAME: shown}}, indent=2, ensure_ascii=False) + "\n")
        if not args.show_token:
            say("The token is masked above; add --show-token to print it whole (e.g. into a file).")
        return 0
    for client in clients(args):
        path = args.config_path or default_path(client)
        merge_into(path, entry)
        name = "Claude Code" if client == "code" else "Claude Desktop"
        say(f"Wrote the {SERVER_NAME!r} server into {name}'s configuration: {path} (restart {name} to load it).")
    say(f"Allowed users: {', '.join(str(u) for u in users)}. Check any time with: cctg-mcp check")
    return 0


def run_setup(args: Any) -> int:
    """The ``setup`` command: 0 when the configuration was written or printed, 1 otherwise."""
    token = ""
    try:
        if args.toolsets is not None:  # checked before anything is asked: the server would refuse it
            from cctg_mcp.resilience.errors import ConfigurationError
            from cctg_mcp.server.toolsets import select_tools

            try:
                names = args.toolsets.split(",")
                select_tools(names, delivery="telegram", environment="production", source="--toolsets")
            except ConfigurationError as exc:
                raise SetupError(str(exc)) from None
        token = read_token(args)
        base_url = (args.api_base_url or os.environ.get("TELEGRAM_API_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        import anyio

        return anyio.run(_setup, args, token, base_url)
    except SetupError as exc:
        say(f"cctg-mcp setup: {redact(str(exc), token)}")
        return 1
    except KeyboardInterrupt:
        say("cctg-mcp setup: interrupted; nothing was written.")
        return 1
