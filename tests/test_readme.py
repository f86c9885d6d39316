"""The README, users first: its first screen, its commands and configurations, the files it names.

Commands that need the network or another program (pipx, uvx, pip from PyPI, claude, npx) are
not run here; their `cctg-mcp ...` parts are parsed by the real command line parser, and each
client configuration is checked to start `cctg-mcp serve` with the variables it needs. The MCP
Inspector line is run by tests/test_inspector.py and the library example by tests/test_client.py;
`scripts/demo` and `scripts/test` are checked to exist (running them is the demo and the suite)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from cctg_mcp.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def command_lines() -> list[str]:
    lines: list[str] = []
    for lang, body in BLOCKS:
        if lang == "bash":
            lines += [line.split("  #")[0].strip() for line in body.splitlines() if line.strip()]
    return lines


def test_the_first_screen_is_the_two_commands() -> None:
    lang, body = BLOCKS[0]
    assert lang == "bash"
    assert [line.split()[0] for line in body.strip().splitlines()] == ["scripts/demo", "scripts/test"]
    assert README.index("```bash") < README.index("## ")  # before any section


def test_every_cctg_mcp_command_parses() -> None:
    parser = build_parser()
    seen = 0
    for line in command_lines():
        words = shlex.split(line.replace("$(", "").replace(")", ""), posix=True)
        for start, word in enumerate(words):
            if word == "cctg-mcp" and (start == 0 or "=" in words[start - 1] or words[start - 1] in ("--", "uvx")):
                args = [w for w in words[start + 1 :] if w not in ("&",)]
                args = args[: args.index("--") if "--" in args else len(args)]
                if "--method" in args:  # the Inspector's own flags follow the server command
                    args = args[: args.index("--method")]
                if args in (["--version"], []):
                    continue
                parser.parse_args(args)  # SystemExit (a usage error) fails the test
                seen += 1
    assert seen >= 4  # setup, check, serve --transport http, and the client commands' serve


@pytest.mark.parametrize("key", ["mcpServers", "servers"])
def test_client_configurations_start_the_server(key: str) -> None:
    configs = [json.loads(body) for lang, body in BLOCKS if lang == "json" and f'"{key}"' in body]
    assert configs
    for config in configs:
        entry = config[key]["cctg"]
        assert entry["command"] == "cctg-mcp" and entry["args"] == ["serve"]
        assert {"TELEGRAM_BOT_TOKEN", "TELEGRAM_ALLOWED_USERS"} <= set(entry["env"])


def test_the_files_it_names_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    named = re.findall(r"`((?:scripts|docs|manifests|tests)/[\w./-]+)`", README)
    assert local and named
    for path in {*local, *named}:
        assert (ROOT / path).exists(), path
    for line in command_lines():
        word = line.split()[0]
        if word.startswith("scripts/"):
            assert (ROOT / word).exists(), word


def test_install_covers_pipx_uvx_pip_and_the_extras() -> None:
    lines = command_lines()
    assert any(line.startswith("pipx install cctg-mcp") for line in lines)
    assert any(line.startswith("uvx cctg-mcp") for line in lines)
    assert any("cctg-mcp[trio,prometheus]" in line for line in lines)
    http = [line for line in lines if line.startswith("claude mcp add --transport http")]
    assert http and '--header "Authorization: Bearer $CCTG_HTTP_TOKEN"' in http[0]
