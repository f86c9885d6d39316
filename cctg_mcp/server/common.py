"""What every tool module shares: argument types, annotations, service access, error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar, cast

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.resilience.errors import BaseResilienceError, redact
from cctg_mcp.runtime import Runtime

T = TypeVar("T")

# Reusable argument types: the limits live in the input schema, so bad arguments are
# rejected (naming the field) before anything runs or is stored.
NonBlank = r"\S"
Title = Annotated[str, Field(min_length=1, max_length=200, pattern=NonBlank, description="Short title.")]
Description = Annotated[str, Field(min_length=1, max_length=2000, pattern=NonBlank, description="What happened.")]
TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Your task id; a resend with the same type and task_id answers `duplicate`.",
    ),
]
Source = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", description="Who sends it.")]
SEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
ACT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
#: Reads only, but may ask Telegram or the bridge (a fresh probe).
READ_REMOTE = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)


def runtime_of(ctx: Context) -> Runtime:
    """The running server's ``Runtime`` (the lifespan context)."""
    return cast(Runtime, ctx.request_context.lifespan_context)


def service_of(ctx: Context) -> NotificationService:
    """The use cases of the running server."""
    return runtime_of(ctx).service


def checked(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a synchronous service step (building and validating an event); our errors become
    tool errors naming the field, not the SDK's opaque "Error executing tool"."""
    try:
        return fn(*args, **kwargs)
    except BaseResilienceError as exc:
        raise ToolError(redact(str(exc))) from None


async def call(coro: Awaitable[T]) -> T:
    """Run a service call; our errors become tool errors the model can act on."""
    try:
        return await coro
    except BaseResilienceError as exc:
        raise ToolError(redact(str(exc))) from None


@contextmanager
def resource_errors() -> Iterator[None]:
    """Around a resource read: our errors become a ``ResourceError`` with the fixing message
    (redacted), which the SDK sends to the client as the read's error message; anything else
    would reach the client as the SDK's bare "Error reading resource <uri>"."""
    try:
        yield
    except BaseResilienceError as exc:
        raise ResourceError(redact(str(exc))) from None
