"""What a permission request shows: readable, bounded summaries; the lists' configuration."""

from __future__ import annotations

import json

import pytest

from cctg_mcp.config import load_settings
from cctg_mcp.events.catalogue import escape_html
from cctg_mcp.permissions.gate import PermissionDecision
from cctg_mcp.permissions.summary import SUMMARY_LIMIT, matches, summarise
from cctg_mcp.resilience.errors import ConfigurationError
from cctg_mcp.testing import parse_telegram_html


def test_bash_shows_the_command_and_why() -> None:
    assert summarise("Bash", {"command": "git push --force", "description": "publish"}) == (
        "$ git push --force\nWhy: publish"
    )


def test_edit_shows_the_path_and_a_diff_excerpt() -> None:
    text = summarise(
        "Edit", {"file_path": "src/app.py", "old_string": "a = 1\nb = 2\n", "new_string": "a = 1\nb = 3\n"}
    )
    assert text.splitlines() == ["File: src/app.py", "@@ -1,2 +1,2 @@", " a = 1", "-b = 2", "+b = 3"]


def test_multiedit_counts_the_edits_and_write_shows_the_first_lines() -> None:
    multi = summarise(
        "MultiEdit",
        {
            "file_path": "x.py",
            "edits": [{"old_string": "x", "new_string": "y"}, {"old_string": "p", "new_string": "q"}],
        },
    )
    assert multi.startswith("File: x.py\n2 edit(s)\n") and "-x\n+y" in multi and "-p\n+q" in multi
    content = "\n".join(f"line {i}" for i in range(100))
    write = summarise("Write", {"file_path": "big.txt", "content": content})
    assert write.startswith(f"File: big.txt (write 100 lines, {len(content)} characters)\n+line 0\n+line 1")
    assert "… (76 more lines)" in write


def test_webfetch_shows_the_url_and_unknown_tools_their_json() -> None:
    assert summarise("WebFetch", {"url": "https://x.org/a", "prompt": "summarise"}) == (
        "url: https://x.org/a\nprompt: summarise"
    )
    assert summarise("mcp__db__query", {"sql": "DROP TABLE t"}) == 'Input: {"sql": "DROP TABLE t"}'


def test_huge_or_hostile_input_is_bounded_and_safe_after_escaping() -> None:
    hostile = "<script>&amp;\x00\x1b[31m" + "x" * 50_000
    text = summarise("Bash", {"command": hostile})
    assert len(text) <= SUMMARY_LIMIT and "more characters)" in text
    assert "\x00" not in text and "\x1b" not in text
    assert parse_telegram_html(escape_html(text)) == text  # Telegram reads back exactly the summary
    assert len(summarise("Edit", {"file_path": "f", "old_string": "a\n" * 5000, "new_string": "b\n" * 5000})) <= 1500


def test_decisions_are_the_json_claude_code_reads() -> None:
    assert json.loads(PermissionDecision("allow", {"a": [1]}).to_json()) == {
        "behavior": "allow",
        "updatedInput": {"a": [1]},
    }
    assert json.loads(PermissionDecision("deny", message="no").to_json()) == {"behavior": "deny", "message": "no"}


def test_lists_match_names_and_wildcards() -> None:
    assert matches("Read", ("Read", "Grep")) == "Read"
    assert matches("read", ("Read",)) is None  # tool names are case-sensitive
    assert matches("mcp__github__push", ("Bash", "mcp__github__*")) == "mcp__github__*"


def test_permission_settings_are_read_and_bad_values_name_the_variable() -> None:
    settings = load_settings(
        {"CCTG_PERMISSION_TIMEOUT": "30", "CCTG_PERMISSION_AUTO_ALLOW": "Read, Grep,,Read", "CCTG_PERMISSION_DENY": ""}
    )
    assert (settings.permission_timeout, settings.permission_auto_allow, settings.permission_deny) == (
        30.0,
        ("Read", "Grep"),
        (),
    )
    assert load_settings({}).permission_timeout == 120.0
    for env, name in (
        ({"CCTG_PERMISSION_TIMEOUT": "0"}, "CCTG_PERMISSION_TIMEOUT"),
        ({"CCTG_PERMISSION_TIMEOUT": "1e9"}, "CCTG_PERMISSION_TIMEOUT"),
        ({"CCTG_PERMISSION_AUTO_ALLOW": "Read;rm -rf"}, "CCTG_PERMISSION_AUTO_ALLOW"),
        ({"CCTG_PERMISSION_DENY": "Bash Edit"}, "CCTG_PERMISSION_DENY"),
    ):
        with pytest.raises(ConfigurationError, match=name):
            load_settings(env)
