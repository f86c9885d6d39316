"""Secrets: the bot token and the HTTP bearer token appear nowhere a person or a model can read.

One server per backend goes through every failure mode of the stand-in (``FaultMode``) and
sends under each; then everything observable is searched for both tokens: every log record
(caplog, DEBUG), every tool result (the sends, and every read-only tool the server lists,
called with no arguments), every resource, the metrics snapshot and Prometheus text, the
health report, and the raw bytes of the outbox database (and its WAL).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from helpers import connected, fast_config, make_settings, text_of
from mcp import Client
from mcp.server.mcpserver import MCPServer

from cctg_mcp.app import open_service
from cctg_mcp.runtime import Runtime
from cctg_mcp.server import build_server
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

HTTP_TOKEN = "http-bearer-secret-0123456789abcdef"
#: The breaker must not open: every failure mode has to reach the stand-in.
NO_BREAKER = fast_config(circuitBreaker={"telegram": {"failureThreshold": 10_000, "timeout": 200}})


@pytest.fixture
def standin() -> Any:
    with TelegramStandIn(max_hang=5) as server:
        yield server


def dump(result: Any) -> str:
    return result.model_dump_json() if hasattr(result, "model_dump_json") else str(result)


async def read_everything(client: Client) -> list[str]:
    """Every read-only tool without required arguments, and every resource, as text."""
    seen: list[str] = []
    for tool in (await client.list_tools()).tools:
        required = (tool.input_schema or {}).get("required") or []
        if tool.annotations and tool.annotations.read_only_hint and not required:
            seen.append(dump(await client.call_tool(tool.name, {})))
    for resource in (await client.list_resources()).resources:
        seen.append(dump(await client.read_resource(str(resource.uri))))
    for template in (await client.list_resource_templates()).resource_templates:
        plain = template.uri_template.split("{", 1)[0]
        if "{" not in plain and plain.endswith(("health", "metrics")):
            seen.append(dump(await client.read_resource(plain)))
    return seen


async def test_no_token_anywhere_under_every_failure_mode(
    standin: TelegramStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(standin, tmp_path, CCTG_HTTP_TOKEN=HTTP_TOKEN, CCTG_TOOL_RATE_LIMIT="0")
    services: list[Runtime] = []

    def opened() -> Any:
        context = open_service(settings, resilience=NO_BREAKER)

        class Keep:
            async def __aenter__(self) -> Runtime:
                runtime = await context.__aenter__()
                services.append(runtime)
                return runtime

            async def __aexit__(self, *exc: Any) -> Any:
                return await context.__aexit__(*exc)

        return Keep()

    server: MCPServer[Any] = build_server(opened)
    seen: list[str] = []
    async with Client(server) as client:
        for n, mode in enumerate(FaultMode):
            standin.set_fault(mode)
            before = len(standin.requests)
            with anyio.fail_after(30):
                result = await client.call_tool("send_telegram_message", {"message": f"under {mode.value}"})
                seen.append(dump(result))
                if mode in (FaultMode.NONE, FaultMode.SERVER_ERROR):
                    task = await client.call_tool("send_task_completion", {"task_id": f"t{n}", "title": mode.value})
                    seen.append(dump(task))
            standin.clear_fault()  # (a hung request is recorded once released)
            reached = await anyio.to_thread.run_sync(standin.wait_until, lambda n=before: len(standin.requests) > n, 5)
            assert reached, f"{mode.value} never reached the stand-in"
        seen += await read_everything(client)
        (runtime,) = services
        metrics = runtime.service.metrics
        assert metrics is not None
        seen.append(str(metrics.snapshot()))
        seen.append(metrics.prometheus_text())
        if runtime.health is not None:
            seen.append(str(runtime.health.report()))
    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.exc_info) for record in caplog.records if record.exc_info]
    text = "\n".join(seen)
    assert "queued" in text and "dead" in text and "Unauthorized" in text  # the search saw real material
    for secret in (standin.token, standin.token.split(":", 1)[1], HTTP_TOKEN):
        assert secret not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240  (after the server stopped)
    assert any(p.name == "outbox.sqlite3" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in (standin.token, HTTP_TOKEN):
            assert secret.encode() not in data, path


async def test_a_reset_connection_error_does_not_echo_the_token(standin: TelegramStandIn, tmp_path: Path) -> None:
    """A dropped connection is where httpx errors would carry the request URL (and so the token)."""
    async with connected(make_settings(standin, tmp_path)) as client:
        standin.set_fault(FaultMode.RESET)
        result = await client.call_tool("send_telegram_message", {"message": "reset please"})
        status = await client.call_tool("get_resilience_status", {})
    assert standin.token not in text_of(result) + dump(status)
