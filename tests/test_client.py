"""The library API (ResilientBridgeClient) and the README's example, run for real."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import anyio
import pytest
from helpers import USERS

from cctg_mcp import ResilientBridgeClient
from cctg_mcp.resilience.errors import BaseResilienceError, ErrorCategory, ValidationError
from cctg_mcp.testing import FaultMode, TelegramStandIn

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parent.parent / "README.md"


def env_for(standin: TelegramStandIn, tmp_path: Path) -> dict[str, str]:
    return standin.server_env(tmp_path, USERS)


async def test_send_event_and_status(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with ResilientBridgeClient(
        {"retry": {"telegram": {"maxAttempts": 2}}}, environ=env_for(standin, tmp_path)
    ) as client:
        result = await client.send_event("git_push", "Pushed", "3 commits to main", data={"branch_name": "main"})
        status = await client.get_resilience_status()
        metrics = await client.get_resilience_metrics()
    assert result.status == "delivered"
    assert len(standin.sent) == len(USERS)
    assert status.configured and {b.name.split(".")[0] for b in status.breakers} == {
        "telegram"
    }  # only what guards calls
    assert metrics  # the send was recorded


async def test_errors_are_resilience_errors_with_a_category(standin: TelegramStandIn, tmp_path: Path) -> None:
    standin.set_fault(FaultMode.UNAUTHORIZED)
    async with ResilientBridgeClient(environ=env_for(standin, tmp_path)) as client:
        with pytest.raises(ValidationError) as bad:
            await client.send_event("no_such_type", "t", "d")
        assert "type" in str(bad.value) and not bad.value.can_recover()
        with pytest.raises(BaseResilienceError) as info:
            await client.send_message("hello")
    assert info.value.category in (ErrorCategory.TELEGRAM, ErrorCategory.SYSTEM)
    assert standin.token not in str(info.value)
    assert info.value.recovery.strategy is not None


def test_the_readme_example_runs(
    standin: TelegramStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    text = README.read_text()
    match = re.search(r"<!-- example: library -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its library example"
    code = match.group(1).replace("anyio.run(main)", "")
    for key, value in env_for(standin, tmp_path).items():
        monkeypatch.setenv(key, value)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        anyio.run(namespace["main"], backend=anyio_backend)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert lines[0] == "delivered"
    assert lines[1].startswith("healthy") and "('telegram', 'closed')" in lines[1]
    assert len(standin.sent) == len(USERS)


def test_without_environ_the_resilience_variables_come_from_the_process_environment(
    standin: TelegramStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**env_for(standin, tmp_path), "RETRY_MAX_ATTEMPTS": "7"}.items():
        monkeypatch.setenv(name, value)  # undone after the test: nothing leaks to other tests
    client = ResilientBridgeClient()  # environ=None: os.environ, as Settings reads it
    assert client.config.retry["telegram"].max_attempts == 7 + 2  # the seed's telegram derivation
    given = ResilientBridgeClient(environ={**env_for(standin, tmp_path), "RETRY_MAX_ATTEMPTS": "4"})
    assert given.config.retry["telegram"].max_attempts == 4 + 2


async def test_the_health_report_verdict_comes_from_the_same_report(standin: TelegramStandIn, tmp_path: Path) -> None:
    async with ResilientBridgeClient(environ=env_for(standin, tmp_path)) as client:
        monitor = client.runtime.health
        assert monitor is not None
        calls: list[object] = []
        real = monitor.report

        def counted(*args: object, **kwargs: object) -> object:
            calls.append(args)
            return real(*args, **kwargs)  # type: ignore[arg-type]

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(monitor, "report", counted)
            data = await client.get_resilience_health_report()
    assert len(calls) == 1  # one report: the verdict is computed from it, not from a second one
    assert data["overall"] in ("unknown", "healthy", "degraded", "unhealthy") and "components" in data
