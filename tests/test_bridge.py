"""Bridge mode without a bridge process: event files, atomic writes, failures, response files, health."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from helpers import fast_config, make_settings

from cctg_mcp.app import open_service
from cctg_mcp.config import Settings, load_settings
from cctg_mcp.delivery.bridge import BRIDGE_CHAT_ID, BridgeDispatcher, bridge_dispatcher
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.pacing import Pacer
from cctg_mcp.delivery.service import DeliveryFailedError, NotificationService
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.config import parse_resilience_config
from cctg_mcp.resilience.errors import ResourceError, SystemFailure, ValidationError
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.transports.bridge.files import (
    EventFileWriter,
    EventsDirectoryError,
    event_file_body,
    read_bridge_responses,
)
from cctg_mcp.transports.bridge.process import probe_bridge_health

pytestmark = pytest.mark.anyio

REQUIRED = {"event_id", "type", "source", "timestamp", "task_id", "title", "description", "data"}
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def bridge_settings(tmp_path: Path, **env: str) -> Any:
    return make_settings(None, tmp_path, CCTG_DELIVERY="bridge", **env)


@asynccontextmanager
async def virtual_service(settings: Settings) -> AsyncIterator[tuple[NotificationService, FakeClock]]:
    """The service in virtual time: with no bridge to take its file, a send waits for it up to
    the operation's deadline, seconds that cost no wall time here (the wait is still bounded)."""
    clock = FakeClock()
    with anyio.fail_after(60):
        async with clock.autojump(), open_service(settings, resilience=fast_config(), clock=clock) as runtime:
            yield runtime.service, clock


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()) if directory.exists() else []


def event(task_id: str = "task-1", type: str = "info_notification", **kw: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": type,
        "title": "t",
        "description": "d",
        "task_id": task_id,
        **kw,
    }
    return Event(**fields)


# ---- event files through the service --------------------------------------------------------


async def test_each_send_writes_one_event_file_with_every_field_the_bridge_requires(tmp_path: Path) -> None:
    settings = bridge_settings(tmp_path)
    assert settings.problems() == [] and settings.token == ""
    async with virtual_service(settings) as (service, clock):
        assert service.recipients() == [BRIDGE_CHAT_ID]
        sent = [
            service.build_event(
                type="approval_request",
                title="Deploy?",
                description="Ship to prod?",
                task_id="deploy-7",
                data={"options": ["Yes", "No"]},
            ),
            service.build_event(type="task_completion", title="Refactor", description="done", task_id="t_1"),
            service.build_event(type="build_completed", title='Build <ok> & "quoted"', description="green ✅"),
        ]
        for ev in sent:
            result = await service.submit(ev)
            # written, but no bridge runs to consume it: queued, saying so (issue 13)
            assert result.status == "queued" and result.reason and "has not picked it up" in result.reason, result
            assert [(r.chat_id, r.status) for r in result.recipients] == [(0, "queued")]
        written = files(settings.events_dir)
    assert len(written) == 3 and not [p for p in written if p.name.endswith(".tmp") or p.name.startswith(".")]
    by_task = {json.loads(p.read_text())["task_id"]: p for p in written}
    for ev in sent:
        path = by_task[ev.task_id]
        text = path.read_text()
        body = json.loads(text)
        assert set(body) == REQUIRED
        assert text.startswith('{\n  "event_id": ')  # pretty, two spaces, as the seed writes it
        assert body["event_id"] == ev.event_id and uuid.UUID(body["event_id"])
        assert (body["type"], body["title"], body["description"], body["source"]) == (
            ev.type,
            ev.title,
            ev.description,
            "claude-code",
        )
        assert RFC3339.fullmatch(body["timestamp"]) and body["timestamp"].endswith("Z")
        moment = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert abs(clock.time() - moment.timestamp()) < 60  # the clock's wall time, as stamped
        name = re.fullmatch(rf"{re.escape(ev.task_id)}_(\d{{13}})\.json", path.name)
        assert name is not None and int(name.group(1)) == int(moment.timestamp() * 1000)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    approval = json.loads(by_task["deploy-7"].read_text())["data"]
    assert approval["approval_prompt"] == "Ship to prod?" and approval["options"] == ["Yes", "No"]
    assert json.loads(by_task["t_1"].read_text())["data"]["status"] == "completed"


async def test_a_bridge_health_that_never_answers_does_not_cost_the_send_its_words(tmp_path: Path) -> None:
    """After its deadline a send asks the bridge's /health why its file waits; a /health that
    never answers gets 1 s, inside the send's 2 s safety margin, so the answer still names the
    file (it said only "the delivery deadline was reached" when the probe could take 2 s)."""
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        async with virtual_service(bridge_settings(tmp_path, CC_TELEGRAM_BRIDGE_HEALTH_URL=url)) as (service, _):
            result = await service.submit(service.build_event(type="task_started", title="t", description="d"))
    ((status, reason),) = [(r.status, r.reason) for r in result.recipients]
    assert status == "queued" and reason is not None and "has not picked it up" in reason, reason
    assert "its health check did not answer within 1 s" in reason, reason


async def test_a_duplicate_reads_queued_while_its_file_waits_for_the_bridge(tmp_path: Path) -> None:
    """Sent again, an event whose file no bridge has taken is not 'delivered' (its row says
    only that the file was written); once the file is gone (consumed), it is."""
    settings = bridge_settings(tmp_path)

    def again() -> Event:
        return service.build_event(type="task_completion", title="Refactor", description="done", task_id="dup-1")

    async with virtual_service(settings) as (service, _):
        first = await service.submit(again())
        assert first.status == "queued"
        second = await service.submit(again())
        assert second.status == "duplicate" and second.event_id == first.event_id
        ((status, reason),) = [(r.status, r.reason) for r in second.recipients]
        assert status == "queued" and reason is not None and "has not picked it up" in reason, reason
        (path,) = files(settings.events_dir)
        path.unlink()  # what the bridge does once it has sent the event
        third = await service.submit(again())
        assert [(r.status, r.reason) for r in third.recipients] == [("delivered", None)]


async def test_sending_the_same_event_again_is_a_duplicate_and_writes_nothing(tmp_path: Path) -> None:
    settings = bridge_settings(tmp_path)
    async with virtual_service(settings) as (service, _):
        ev = service.build_event(type="task_started", title="x", description="y", task_id="same")
        first = await service.submit(ev)
        again = await service.submit(
            service.build_event(type="task_started", title="x", description="y", task_id="same")
        )
    assert (first.status, again.status) == ("queued", "duplicate")
    assert len(files(settings.events_dir)) == 1


def test_body_completes_what_the_bridges_validation_requires() -> None:
    approval, _ = event_file_body(event(type="approval_request", description="Go?", data={"options": []}))
    assert approval["data"]["approval_prompt"] == "Go?" and approval["data"]["options"] == ["Approve", "Deny"]
    kept, _ = event_file_body(event(type="approval_request", data={"approval_prompt": "P", "options": ["A"]}))
    assert kept["data"]["approval_prompt"] == "P" and kept["data"]["options"] == ["A"]
    done, _ = event_file_body(event(type="task_completion", data={"results": "r"}))
    assert done["data"] == {"results": "r", "status": "completed", "priority": "normal"}
    alert, _ = event_file_body(event(type="performance_alert", priority="critical"))
    assert alert["data"]["priority"] == "urgent"  # the bridge's word for it
    chrono, ms = event_file_body(event(timestamp="2024-05-01T12:00:00.123456789Z"))
    assert chrono["timestamp"] == "2024-05-01T12:00:00.123Z" and ms == 1714564800123


# ---- atomicity, names, traversal ---------------------------------------------------------------


def test_a_rewrite_replaces_its_own_file_and_another_event_takes_the_next_millisecond(tmp_path: Path) -> None:
    writer = EventFileWriter(tmp_path / "events")
    stamp = "2024-05-01T12:00:00.500Z"
    first = event("t", timestamp=stamp)
    p1 = writer.write_sync(first)
    p2 = writer.write_sync(first)  # a retry after a crash: same file, no duplicate
    other = writer.write_sync(event("t", type="task_started", timestamp=stamp))
    assert p1 == p2 and p1.name == "t_1714564800500.json" and other.name == "t_1714564800501.json"
    assert [p.name for p in files(tmp_path / "events")] == [p1.name, other.name]


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_a_crash_mid_write_leaves_neither_the_file_nor_a_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    directory = tmp_path / "events"
    seen: list[str] = []

    def opener(path: str, flags: int, mode: int) -> int:
        seen.append(path)
        fd = os.open(path, flags, mode)
        if failing == "write":
            os.close(fd)
            return os.open(path, os.O_RDONLY)  # writing to it fails half way
        return fd

    def boom(*_: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    writer = EventFileWriter(directory, opener=opener)
    if failing != "write":
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises((SystemFailure, OSError)):
        writer.write_sync(event("crash"))
    monkeypatch.undo()
    assert len(seen) == 1 and seen[0].endswith(".tmp") and Path(seen[0]).name.startswith(".crash_")
    assert files(directory) == []  # no target, no temp file
    assert EventFileWriter(directory).write_sync(event("crash")).exists()  # and the next attempt works


@pytest.mark.parametrize("task_id", ["../escape", "a/b", "..", "", "x" * 65, "a\x00b", "/etc/passwd", "a.b", "é"])
def test_a_task_id_that_could_reach_a_path_is_refused(tmp_path: Path, task_id: str) -> None:
    writer = EventFileWriter(tmp_path / "events")
    with pytest.raises(ValidationError, match="task_id"):
        writer.write_sync(event(task_id))
    assert files(tmp_path / "events") == [] and sorted(p.name for p in tmp_path.iterdir()) in ([], ["events"])


async def test_an_unsafe_task_id_in_the_outbox_ends_dead_not_written(tmp_path: Path) -> None:
    settings = bridge_settings(tmp_path)
    async with open_service(settings, resilience=fast_config()) as runtime:
        service = runtime.service
        with pytest.raises(DeliveryFailedError, match="task_id"):
            await service.submit(event("../../outside"))  # bypasses build_event's own check
        assert service.outbox is not None and (await service.outbox.counts()).dead == 1
    assert files(settings.events_dir) == [] and not (tmp_path.parent / "outside").exists()


# ---- failures: permission, disk full, transient ------------------------------------------------


def _raising(code: int) -> Any:
    def opener(path: str, flags: int, mode: int) -> int:
        raise OSError(code, os.strerror(code), path)

    return opener


async def test_permission_denied_makes_the_delivery_dead_with_a_message_naming_the_directory(tmp_path: Path) -> None:
    settings = bridge_settings(tmp_path)
    async with open_service(settings, resilience=fast_config()) as runtime:
        service = runtime.service
        assert isinstance(service.dispatcher, BridgeDispatcher)
        service.dispatcher.writer.opener = _raising(errno.EACCES)
        ev = service.build_event(type="info_notification", title="x", description="y", task_id="perm")
        with pytest.raises(DeliveryFailedError) as info:
            await service.submit(ev)
        assert service.outbox is not None
        (row,) = await service.outbox.deliveries(ev.event_id)
    message = str(info.value)
    assert str(settings.events_dir) in message and "CC_TELEGRAM_EVENTS_DIR" in message and "EACCES" in message
    assert row.status == "dead" and row.last_error is not None and str(settings.events_dir) in row.last_error
    assert service.pipelines is not None and service.pipelines.for_component("bridge").breaker.state.value == "closed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_a_read_only_events_directory_is_reported_the_same_way(tmp_path: Path) -> None:
    settings = bridge_settings(tmp_path)
    settings.events_dir.mkdir(parents=True)
    settings.events_dir.chmod(0o500)
    try:
        async with open_service(settings, resilience=fast_config()) as runtime:
            service = runtime.service
            with pytest.raises(DeliveryFailedError, match="EACCES"):
                await service.submit(service.build_event(type="info_notification", title="x", description="y"))
    finally:
        settings.events_dir.chmod(0o700)


async def _dispatcher(tmp_path: Path, config: dict[str, Any] | None = None) -> tuple[Outbox, BridgeDispatcher]:
    settings = bridge_settings(tmp_path)
    box = await Outbox.open(settings.outbox_path)
    pipelines = PipelineSet(parse_resilience_config(config or {}))
    return box, bridge_dispatcher(settings, box, pipelines, Pacer(settings.pacing))


async def test_a_full_disk_keeps_the_event_queued_until_it_can_be_written(tmp_path: Path) -> None:
    box, dispatcher = await _dispatcher(tmp_path)
    try:
        ev = event("disk")
        (claimed,) = await box.enqueue(ev, [0], lease=(dispatcher.owner, 60)) or []
        dispatcher.writer.opener = _raising(errno.ENOSPC)
        outcome = await dispatcher.deliver(claimed)
        assert outcome.status == "queued" and outcome.error_code == "ENOSPC"
        assert outcome.reason is not None and str(dispatcher.writer.events_dir) in outcome.reason
        (row,) = await box.deliveries(ev.event_id)
        assert row.status == "pending" and row.next_attempt_at > 0
        dispatcher.writer.opener = os.open  # space freed
        await box.retry_now()
        (again,) = await box.claim_due(dispatcher.owner, 60)
        assert (await dispatcher.deliver(again)).status == "delivered"
        assert [p.name.split("_")[0] for p in files(dispatcher.writer.events_dir)] == ["disk"]
        assert isinstance(dispatcher.writer.classify(OSError(errno.ENOSPC, "full")), ResourceError)
    finally:
        await box.close()


async def test_a_transient_error_is_retried_by_the_pipeline(tmp_path: Path) -> None:
    fast = {"retry": {"bridge": {"maxAttempts": 3, "baseDelay": 1, "maxDelay": 2, "jitterEnabled": False}}}
    box, dispatcher = await _dispatcher(tmp_path, fast)
    calls: list[str] = []

    def flaky(path: str, flags: int, mode: int) -> int:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return os.open(path, flags, mode)

    try:
        dispatcher.writer.opener = flaky
        (claimed,) = await box.enqueue(event("flaky"), [0], lease=(dispatcher.owner, 60)) or []
        outcome = await dispatcher.deliver(claimed)
        assert outcome.status == "delivered" and len(calls) == 2
        assert dispatcher.pipeline.retry.statistics.retries == 1  # type: ignore[attr-defined]
    finally:
        await box.close()


def test_directory_errors_are_permanent_configuration_problems(tmp_path: Path) -> None:
    writer = EventFileWriter(tmp_path / "events")
    for code in (errno.EACCES, errno.EROFS, errno.ENOTDIR):
        error = writer.classify(OSError(code, os.strerror(code)))
        assert isinstance(error, EventsDirectoryError) and not error.retryable and not error.counts_as_failure
        assert str(tmp_path / "events") in str(error) and error.category.value == "filesystem"


# ---- settings ----------------------------------------------------------------------------------


def test_bridge_settings_read_the_bridge_path_and_need_a_creatable_events_dir(tmp_path: Path) -> None:
    s = load_settings(
        {
            "CCTG_DATA_DIR": str(tmp_path),
            "CCTG_DELIVERY": "bridge",
            "CC_TELEGRAM_BRIDGE_PATH": "~/bin/cctelegram-bridge",
        }
    )
    assert s.delivery == "bridge" and s.bridge_path == Path.home() / "bin" / "cctelegram-bridge"
    assert s.problems() == [] and (tmp_path / "events").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = load_settings(
        {"CCTG_DATA_DIR": str(tmp_path), "CCTG_DELIVERY": "bridge", "CC_TELEGRAM_EVENTS_DIR": str(blocker / "events")}
    )
    (problem,) = bad.problems()
    assert "CC_TELEGRAM_EVENTS_DIR" in problem and str(blocker) in problem


async def test_an_uncreatable_events_dir_means_not_configured(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    settings = bridge_settings(tmp_path, CC_TELEGRAM_EVENTS_DIR=str(tmp_path / "a-file" / "events"))
    async with open_service(settings, resilience=fast_config()) as runtime:
        service = runtime.service
        with pytest.raises(Exception, match="CC_TELEGRAM_EVENTS_DIR"):
            await service.submit(service.build_event(type="info_notification", title="x", description="y"))


# ---- responses from the bridge -----------------------------------------------------------------


def _put(directory: Path, name: str, content: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(content if isinstance(content, str) else json.dumps(content))


def test_response_files_are_read_newest_first_and_malformed_ones_skipped(tmp_path: Path) -> None:
    d = tmp_path / "responses"
    base = {"user_id": 42, "username": "ann", "first_name": "Ann"}
    _put(
        d,
        "telegram_callback_42_20240501_120000.json",
        {
            **base,
            "timestamp": "2024-05-01T12:00:00Z",
            "callback_data": "approve_deploy-7",
            "original_message_id": 9,
            "response_type": "callback_query",
        },
    )
    _put(
        d,
        "telegram_callback_42_20240501_120100.json",
        {**base, "timestamp": "2024-05-01T12:01:00.123456789+00:00", "callback_data": "deny_task_2"},
    )
    _put(
        d,
        "telegram_callback_42_20240501_120200.json",
        {**base, "timestamp": "2024-05-01T12:02:00Z", "callback_data": "ack_t3"},
    )
    _put(
        d,
        "telegram_response_42_20240501_120300.json",
        {**base, "timestamp": "2024-05-01T12:03:00Z", "message_text": "looks good", "message_type": "text"},
    )
    _put(
        d,
        "telegram_callback_42_20240501_120400.json",
        {**base, "timestamp": "2024-05-01T12:04:00Z", "callback_data": "details_t4"},
    )
    # malformed or not responses: all skipped
    _put(d, "bridge_mode.json", '"Nomad"')
    _put(d, "telegram_response_1_x.json", "{not json")
    _put(d, "telegram_response_2_x.json", [1, 2])
    _put(d, "telegram_response_3_x.json", {"timestamp": "2024-05-01T12:00:00Z", "message_text": "no user"})
    _put(d, "telegram_response_4_x.json", {"user_id": 4, "timestamp": "yesterday", "message_text": "bad time"})
    _put(d, "telegram_callback_5_x.json", {"user_id": True, "timestamp": "2024-05-01T12:00:00Z", "callback_data": "x"})
    _put(d, "telegram_callback_6_x.json", {"user_id": 6, "timestamp": "2024-05-01T12:00:00Z"})
    _put(d, "something_else.json", {**base, "timestamp": "2024-05-01T12:00:00Z", "message_text": "?"})
    responses = read_bridge_responses(d, resolve={"deploy-7": "ev-deploy"}.get)
    assert [(r.kind, r.action, r.task_id) for r in responses] == [
        ("callback", "other", "t4"),
        ("text", "text", None),
        ("callback", "acknowledge", "t3"),
        ("callback", "deny", "task_2"),
        ("callback", "approve", "deploy-7"),
    ]
    approve = responses[-1]
    assert (approve.event_id, approve.option, approve.user_id, approve.username) == ("ev-deploy", "Approve", 42, "ann")
    assert approve.timestamp == "2024-05-01T12:00:00.000Z" and approve.callback_data == "approve_deploy-7"
    assert responses[1].text == "looks good" and responses[3].timestamp == "2024-05-01T12:01:00.123Z"
    assert len({r.id for r in responses}) == 5
    since = datetime(2024, 5, 1, 12, 2, tzinfo=UTC).timestamp()
    assert [r.action for r in read_bridge_responses(d, since=since)] == ["other", "text", "acknowledge"]
    assert read_bridge_responses(tmp_path / "missing") == []


# ---- health probe ------------------------------------------------------------------------------


async def test_the_health_probe_maps_answers_to_healthy_degraded_unhealthy() -> None:
    def answer(status: int, body: Any = None, fail: bool = False) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            assert request.method == "GET" and request.url.path == "/health"
            if fail:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

        return httpx.MockTransport(handle)

    url = "http://127.0.0.1:9/health"
    ok = await probe_bridge_health(
        url,
        http_transport=answer(200, {"status": "healthy", "events_processed": 7, "metrics": {"uptime_seconds": 12.5}}),
    )
    assert ok.status == "healthy" and ok.metrics == {"events_processed": 7.0, "uptime_seconds": 12.5}
    assert (await probe_bridge_health(url, http_transport=answer(200))).status == "healthy"
    assert (await probe_bridge_health(url, http_transport=answer(200, {"status": "degraded"}))).status == "degraded"
    assert (await probe_bridge_health(url, http_transport=answer(429))).status == "degraded"
    bad = await probe_bridge_health(url, http_transport=answer(503))
    assert bad.status == "unhealthy" and bad.http_status == 503
    down = await probe_bridge_health(url, http_transport=answer(0, fail=True))
    assert down.status == "unhealthy" and "ConnectError" in down.detail


async def test_bridge_status_without_a_bridge_reports_files_waiting(tmp_path: Path) -> None:
    from cctg_mcp.delivery.bridge import bridge_status

    settings = bridge_settings(
        tmp_path,
        CC_TELEGRAM_BRIDGE_HEALTH_URL="http://127.0.0.1:9/health",
        CC_TELEGRAM_BRIDGE_PATH=str(tmp_path / "nowhere"),
    )
    async with virtual_service(settings) as (service, _):
        await service.submit(service.build_event(type="info_notification", title="x", description="y"))
    async with open_service(settings, resilience=fast_config()) as runtime:  # the probe, on a real socket
        service = runtime.service
        status = await bridge_status(service)
        assert isinstance(service, NotificationService)
    assert (status.running, status.health, status.pending_events, status.executable) == (False, "unhealthy", 1, None)
    assert status.last_event_time is not None and status.delivery == "bridge"
    assert "CC_TELEGRAM_BRIDGE_PATH" in status.message


async def test_background_deliveries_leave_no_file_bookkeeping_behind(tmp_path: Path) -> None:
    box, dispatcher = await _dispatcher(tmp_path)
    dispatcher.idle_poll_s = 0.05
    try:
        for n in range(3):
            await box.enqueue(event(f"bg-{n}"), [0])
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher.run)
                while (await box.counts()).delivered < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert dispatcher.files_written == 3 and len(files(dispatcher.writer.events_dir)) == 3
        assert dispatcher._files == {}  # nothing kept per delivery once its attempt ended (it grew by one each)
        (claimed,) = await box.enqueue(event("tool"), [0], lease=(dispatcher.owner, 60)) or []
        outcome = await dispatcher.deliver(claimed)  # a send tool's attempt: the file rides on its outcome
        assert outcome.status == "delivered" and outcome.event_file is not None and outcome.event_file.exists()
        assert dispatcher._files == {}
    finally:
        await box.close()
