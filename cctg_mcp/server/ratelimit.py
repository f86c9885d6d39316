"""A per-client tool-call rate limit, as MCP server middleware.

Each client (not each session: see below) gets a token bucket of ``CCTG_TOOL_RATE_LIMIT`` calls per minute (the
bucket holds one minute's worth, so a burst up to the limit is fine). A call past it is not
run: the client gets a tool error (``isError: true``) that says when to retry, in seconds.
Only ``tools/call`` is limited; listing tools, reading resources and the handshake are not.

The limit guards the person's Telegram against a runaway agent loop; the pacer (Telegram's
flood limits) and the outbox cap guard the rest.

Who is "a client": with the 2026 protocol the SDK builds a fresh session object per request,
so buckets are keyed by what lasts as long as the client: over HTTP its credentials (a
fingerprint of the bearer token) and address, never the session (a new session per call
would get a fresh bucket each time), else the connection's dispatcher (stdio: the one
client of the process; in memory: one per ``mcp.Client``). At most ``MAX_CLIENTS`` buckets
are kept (least recently used dropped; a dropped client starts full).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.types import CallToolResult, TextContent

from cctg_mcp.runtime import Runtime

#: Seconds to wait as a ``retry_after`` figure is rounded up to this step.
_STEP = 0.1


MAX_CLIENTS = 4096


def client_identity(headers: Any, peer: str | None) -> str:
    """Who a request comes from: a fingerprint of its credentials, and its address.
    Here, not in http_limits, so the stdio server does not import uvicorn."""
    auth = headers.get("authorization", "") if headers is not None else ""
    mark = hashlib.sha256(auth.encode("utf-8", "replace")).hexdigest()[:12] if auth else "anonymous"
    return f"{mark}@{peer or '?'}"


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    owner: object  # keeps an id()-keyed owner alive, so its id is not reused meanwhile


def client_key(ctx: ServerRequestContext[Any, Any]) -> tuple[Hashable, object]:
    """(key, owner) naming the client connection a request came from (see the module doc)."""
    dctx: Any = getattr(ctx.session, "_request_outbound", None)
    dctx = getattr(dctx, "_inner", dctx)
    transport = getattr(dctx, "transport", None)
    headers = getattr(ctx.request, "headers", None) or getattr(transport, "headers", None)
    if headers is not None and getattr(transport, "kind", "") != "direct":
        # Not the session: a new session per call would get a fresh bucket each time.
        peer = getattr(getattr(ctx.request, "client", None), "host", None)
        return ("http-client", client_identity(headers, peer)), None
    owner = getattr(dctx, "_dispatcher", None) or transport or ctx.session
    return ("connection", id(owner)), owner


def limit_from_runtime(lifespan_context: Any) -> float:
    """The configured limit (calls per minute; 0 = off) of the running server (its lifespan
    context is the ``Runtime``; the SDK types it ``Any``)."""
    if not isinstance(lifespan_context, Runtime):
        raise TypeError(f"the lifespan context is {type(lifespan_context).__name__}, not the Runtime")
    return float(lifespan_context.service.settings.tool_rate_limit)


class ToolRateLimiter:
    """``ServerMiddleware``: a token bucket per client (not per session) for ``tools/call``."""

    def __init__(
        self,
        per_minute: float | Callable[[Any], float] = limit_from_runtime,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = per_minute if callable(per_minute) else (lambda _ctx, n=float(per_minute): n)
        self._clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def check(self, key: Hashable, per_minute: float, owner: object = None) -> float:
        """Take one call from ``key``'s bucket; 0.0 if allowed, else seconds until one is."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(per_minute, now, owner)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        rate = per_minute / 60.0
        bucket.tokens = min(per_minute, bucket.tokens + max(0.0, now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return max(_STEP, math.ceil((1.0 - bucket.tokens) / rate / _STEP) * _STEP)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        per_minute = self._limit(ctx.lifespan_context)
        if not per_minute or per_minute <= 0:
            return await call_next(ctx)
        key, owner = client_key(ctx)
        retry_after = self.check(key, per_minute, owner)
        if retry_after <= 0:
            return await call_next(ctx)
        text = (
            f"Rate limit: at most {per_minute:g} tool calls per minute per client, and this client used them "
            f"up. Nothing was run or sent. Retry after {retry_after:.1f} seconds (retry_after={retry_after:.1f})."
        )
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
