"""Configured ``health.endpoints`` are probed in direct (telegram) mode too; the HTTP transport's
``/readyz`` says ready (200) or not (503) as ``application/health+json``, from the critical
endpoints; half or more endpoints down make the system unhealthy (the seed's rule)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from helpers import fast_config, make_settings, present

from cctg_mcp.app import open_service
from cctg_mcp.server import build_server
from cctg_mcp.server.http import http_app
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio

HEALTH = {"interval": 50, "timeout": 2000, "failureThreshold": 1, "recoveryThreshold": 1, "gracePeriod": 0}


class Endpoint:
    """A tiny HTTP endpoint on loopback whose status code the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0
        self.url = ""

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await stream.receive(65536)
                self.hits += 1
                body = b"{}"
                head = f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                await stream.send(head.encode() + body)


@contextlib.asynccontextmanager
async def endpoints(count: int) -> AsyncIterator[list[Endpoint]]:
    found = [Endpoint() for _ in range(count)]
    async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
        for ep in found:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            stack.push_async_callback(listener.aclose)  # closed after the task group ends
            ep.url = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}/health"
            tg.start_soon(listener.serve, ep._serve)
        yield found
        tg.cancel_scope.cancel()


class Response:
    def __init__(self, status_code: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.text = status_code, headers, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)


class AsgiClient:
    """GET on the ASGI app directly (httpx's ASGITransport leaves an async generator to the GC,
    which trio reports as a ResourceWarning)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def get(self, path: str) -> Response:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8765")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8765),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return Response(start["status"], headers, body)


@contextlib.asynccontextmanager
async def ready_client(
    standin: TelegramStandIn, tmp_path: Path, eps: list[dict[str, Any]]
) -> AsyncIterator[tuple[AsgiClient, Any]]:
    config = fast_config(health={**HEALTH, "endpoints": eps})
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        server = build_server(lambda: contextlib.nullcontext(runtime))
        app = http_app(server, runtime, host="127.0.0.1", port=8765, token="bearer-token-0123456789abcdef")
        yield AsgiClient(app), runtime


async def until(client: AsgiClient, predicate: Callable[[Response], bool]) -> Response:
    with anyio.fail_after(10):
        while True:
            response = await client.get("/readyz")
            if predicate(response):
                return response
            await anyio.sleep(0.02)


async def test_readyz_follows_the_critical_endpoint(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with endpoints(1) as (api,):
        eps = [{"name": "api", "url": api.url, "critical": True, "timeout": 1000}]
        async with ready_client(standin, tmp_path, eps) as (client, runtime):
            ok = await until(client, lambda r: r.json()["checks"].get("api:status", [{}])[0].get("status") == "pass")
            api.status = 500
            down = await until(client, lambda r: r.status_code == 503)
            report = runtime.health.report()
            api.status = 200
            back = await until(client, lambda r: r.status_code == 200)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/health+json")
    assert ok.json()["status"] in ("pass", "warn") and api.hits >= 1  # probed in telegram mode
    body = down.json()
    assert body["status"] == "fail" and body["checks"]["api:status"][0]["status"] == "fail"
    assert body["checks"]["api:status"][0]["critical"] is True
    assert not report.ready and report.component("api").status.value == "unhealthy"
    assert back.json()["checks"]["api:status"][0]["status"] == "pass"
    for response in (ok, down, back):  # no secrets, and no bearer token needed
        assert standin.token not in response.text and "bearer-token" not in response.text


async def test_half_of_the_endpoints_down_is_unhealthy_but_still_ready(
    standin: TelegramStandIn, tmp_path: Path
) -> None:
    """Endpoint checks: telegram's getMe, a and b. One of three down: degraded; two: unhealthy."""
    async with endpoints(2) as (a, b):
        eps = [{"name": "a", "url": a.url}, {"name": "b", "url": b.url}]  # neither critical
        async with ready_client(standin, tmp_path, eps) as (client, runtime):
            await until(client, lambda r: r.json()["checks"].get("b:status", [{}])[0].get("status") == "pass")
            b.status = 503
            await until(client, lambda r: r.json()["checks"]["b:status"][0]["status"] == "fail")
            one_down = runtime.health.report()
            a.status = 503
            response = await until(client, lambda r: r.json()["checks"]["a:status"][0]["status"] == "fail")
            two_down = runtime.health.report()
    assert one_down.overall.value == "degraded" and one_down.ready
    assert two_down.overall.value == "unhealthy" and two_down.ready  # half or more: unhealthy, not critical
    assert response.status_code == 200 and response.json()["status"] == "warn"


async def test_seed_bridge_endpoints_are_not_probed_in_direct_mode(standin: TelegramStandIn, tmp_path: Path) -> None:
    config = fast_config(health=HEALTH)  # the seed's bridge-health / bridge-metrics endpoints stay configured
    async with open_service(make_settings(standin, tmp_path), resilience=config) as runtime:
        names = set(present(runtime.health).components)
    assert "bridge-health" not in names and "bridge-metrics" not in names and "telegram" in names
