"""Tool arguments are taken as sent: no ``"5"`` for 5, no ``true`` for 1, no ``1`` for true.

The SDK validates tool arguments in pydantic's lax mode, which coerces strings to numbers,
booleans to integers and integers to booleans: a model that sends ``"timeout_seconds": "5"``
or ``"limit": true`` gets a silent guess instead of an error naming the field. ``strict_scalars``
makes every top-level number and flag argument of every registered tool strict (an integer
still counts as a float). Strings, enums, lists and objects keep the SDK's handling; the
input schemas (what a client sees) do not change.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from mcp.server.mcpserver import MCPServer
from pydantic import Strict, create_model

_SCALARS = (bool, int, float)


def _is_scalar(annotation: Any) -> bool:
    if annotation in _SCALARS:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return bool(members) and all(m in _SCALARS for m in members)
    return False


def strict_scalars(server: MCPServer[Any]) -> int:
    """Make the scalar arguments of every registered tool strict; how many fields changed."""
    changed = 0
    for tool in server._tool_manager.list_tools():
        model = tool.fn_metadata.arg_model
        overrides: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            if _is_scalar(field.annotation):
                overrides[name] = (Annotated[field.annotation, Strict()], field)
        if overrides:
            tool.fn_metadata.arg_model = create_model(model.__name__, __base__=model, **overrides)
            changed += len(overrides)
    return changed
