"""Toolsets: which tools a server lists, and the registrar every tool module registers through.

A tool module declares its toolset once, as ``TOOLSET = "<name>"`` at module level, and
registers its tools with ``register(mcp: Registrar)``. ``build_server`` hands each module a
``Registrar`` bound to that toolset; the registrar requires a title on every tool, resource
and prompt, dedents docstrings into descriptions, records every tool in the catalogue (listed
or not) and adds to the server only the tools the selection lists. A module without
``TOOLSET``, or naming a toolset not in ``TOOLSETS``, stops ``build_server`` (and so every test).

The selection (``CCTG_TOOLSETS`` / ``serve --toolsets``): a comma list of toolset names,
``default`` (the toolsets whose rule matches the delivery and environment) and ``all``.
``CCTG_READ_ONLY=1`` keeps only tools annotated ``readOnlyHint``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from cctg_mcp.resilience.errors import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])

#: When a toolset is in the default selection: always, in bridge delivery, outside production, never.
Rule = Literal["always", "bridge", "nonproduction", "opt-in"]


@dataclass(frozen=True)
class Toolset:
    """A named group of tools and the rule that lists it by default."""

    name: str
    summary: str
    rule: Rule


TOOLSETS: dict[str, Toolset] = {
    t.name: t
    for t in (
        Toolset("send", "notify the person: events, messages, task completions, alerts, approval requests", "always"),
        Toolset("answers", "read the person's answers: wait for one, list, clear", "always"),
        Toolset("diagnostics", "is the channel healthy: status, health report, metrics, ping", "always"),
        Toolset("recovery", "act on a failure: trigger recovery, read its history", "always"),
        Toolset("breakers", "force a component's circuit breakers open, closed, disabled or reset", "opt-in"),
        Toolset("bridge", "the CCTelegram bridge process: status, start, stop, restart", "bridge"),
        Toolset("chaos", "fault injection experiments (refused in production)", "nonproduction"),
        Toolset("modes", "nomad / local / mute, as in CCTelegram", "opt-in"),
        Toolset("tasks", "Claude Code todos and Task Master tasks, as in CCTelegram", "opt-in"),
        Toolset("permissions", "a permission prompt tool for Claude Code (--permission-prompt-tool)", "opt-in"),
    )
}
KEYWORDS = ("default", "all")


def _allowed() -> str:
    return ", ".join((*KEYWORDS, *TOOLSETS))


@dataclass(frozen=True)
class ToolSelection:
    """The toolsets to list, and whether only read-only tools are listed."""

    toolsets: frozenset[str] = frozenset(TOOLSETS)
    read_only: bool = False

    def lists(self, toolset: str, annotations: ToolAnnotations | None) -> bool:
        if toolset not in self.toolsets:
            return False
        return not self.read_only or bool(annotations and annotations.read_only_hint)


EVERYTHING = ToolSelection()


def default_toolsets(delivery: str, environment: str) -> frozenset[str]:
    rules: set[Rule] = {"always"}
    if delivery == "bridge":
        rules.add("bridge")
    if environment != "production":
        rules.add("nonproduction")
    return frozenset(t.name for t in TOOLSETS.values() if t.rule in rules)


def select_tools(
    requested: Iterable[str],
    *,
    delivery: str,
    environment: str,
    read_only: bool = False,
    source: str = "CCTG_TOOLSETS",
) -> ToolSelection:
    """The selection for ``CCTG_TOOLSETS`` or ``--toolsets`` (``source``; empty: ``default``);
    unknown names are a ``ConfigurationError`` listing the names that exist."""
    names = [n.strip().lower() for n in requested if n.strip()] or ["default"]
    unknown = [n for n in names if n not in TOOLSETS and n not in KEYWORDS]
    if unknown:
        raise ConfigurationError(
            f"{source} names unknown toolset(s) {', '.join(map(repr, unknown))}: use a comma list of {_allowed()}."
        )
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(TOOLSETS)
        elif name == "default":
            chosen.update(default_toolsets(delivery, environment))
        else:
            chosen.add(name)
    return ToolSelection(frozenset(chosen), read_only)


@dataclass(frozen=True)
class ToolEntry:
    """A tool as registered (listed or not)."""

    name: str
    toolset: str
    annotations: ToolAnnotations | None
    listed: bool


@dataclass
class Catalogue:
    """Every tool any module registered, with its toolset: the source of the docs' tables."""

    tools: list[ToolEntry] = field(default_factory=list)

    def by_toolset(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {name: [] for name in TOOLSETS}
        for entry in self.tools:
            out[entry.toolset].append(entry.name)
        return out


def describe(fn: Callable[..., Any]) -> str:
    """A tool's description: its docstring without the indentation."""
    return inspect.cleandoc(fn.__doc__ or "")


class Registrar:
    """What a tool module's ``register`` receives: the server's decorators, bound to a toolset."""

    def __init__(
        self, mcp: MCPServer[Any], toolset: str | None, selection: ToolSelection, catalogue: Catalogue
    ) -> None:
        if toolset is not None and toolset not in TOOLSETS:
            raise ValueError(f"unknown toolset {toolset!r}: declare one of {', '.join(TOOLSETS)}")
        self.server = mcp
        self.toolset = toolset
        self.selection = selection
        self.catalogue = catalogue

    def tool(self, *, title: str, annotations: ToolAnnotations) -> Callable[[F], F]:
        """``@mcp.tool`` with a required title and annotations, in the module's toolset; the name is
        the function's, the description its docstring."""
        home = self.toolset
        if home is None or home not in TOOLSETS:
            raise ValueError(f"unknown toolset {home!r}: use one of {', '.join(TOOLSETS)}")

        def decorator(fn: F) -> F:
            tool_name = fn.__name__
            listed = self.selection.lists(home, annotations)
            self.catalogue.tools.append(ToolEntry(tool_name, home, annotations, listed))
            if listed:
                self.server.add_tool(
                    fn,
                    name=tool_name,
                    title=title,
                    description=describe(fn),
                    annotations=annotations,
                )
            return fn

        return decorator

    def resource(self, uri: str, *, title: str, **kwargs: Any) -> Callable[[F], F]:
        """``@mcp.resource`` with a required title (resources are listed in every selection)."""
        return self.server.resource(uri, title=title, **kwargs)

    def prompt(self, *, title: str, description: str, **kwargs: Any) -> Callable[[F], F]:
        """``@mcp.prompt`` with a required title and description (every selection)."""
        return self.server.prompt(title=title, description=description, **kwargs)
