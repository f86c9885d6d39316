"""Shared wiring for end-to-end tests: settings, fast resilience timings, an in-memory client,
bounded tool calls and waits, and the several-server-processes session helpers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, AnyStr, NamedTuple, TypeVar

import anyio
import anyio.abc
from mcp import Client
from mcp.types import CallToolResult, GetPromptResult, ReadResourceResult, TextContent, TextResourceContents

from cctg_mcp.answers import (
    ANSWERS_FILE,
    Answers,
    BridgeAnswers,
    EventIndex,
    ResponsePoller,
    ResponseStore,
    updates_pipeline,
)
from cctg_mcp.app import open_service
from cctg_mcp.config import Settings, load_settings
from cctg_mcp.delivery.outbox import Outbox
from cctg_mcp.delivery.service import NotificationService
from cctg_mcp.events.catalogue import Event
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.config import ResilienceConfig, parse_resilience_config
from cctg_mcp.resilience.metrics import MetricsRegistry
from cctg_mcp.resilience.pipeline import PipelineSet
from cctg_mcp.server import build_server
from cctg_mcp.testing import TelegramStandIn
from cctg_mcp.transports.bridge.process import BridgeProcessManager
from cctg_mcp.transports.telegram import TelegramTransport

T = TypeVar("T")
USERS = (111, 222)

#: An MCP ``initialize`` request, for the tests that speak JSON-RPC themselves.
INIT: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}

#: Short timings so an outage trips the breaker and heals within a test's bounded wait.
FAST: dict[str, Any] = {
    "environment": "development",
    "circuitBreaker": {
        "telegram": {"failureThreshold": 2, "volumeThreshold": 2, "successThreshold": 1, "timeout": 200}
    },
    "retry": {"telegram": {"maxAttempts": 2, "baseDelay": 10, "maxDelay": 20, "jitterEnabled": False}},
    "operations": {
        # null drops the seed's per-operation breaker overrides (sendEvent 3/15 s ...): every
        # send uses the component's breaker, whatever a test sets it to
        name: {"timeout": 2000, "circuitBreaker": None}
        for name in ("sendEvent", "sendMessage", "sendTaskCompletion", "sendPerformanceAlert", "sendApprovalRequest")
    },
}


def clean_environ() -> dict[str, str]:
    """This process's environment without any of the server's settings (TELEGRAM_*, CCTG_*,
    CC_TELEGRAM_*), for a subprocess that must see only what the test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "CCTG_", "CC_TELEGRAM_"))}


def fast_config(**overrides: Any) -> ResilienceConfig:
    return parse_resilience_config({**FAST, **overrides})


def make_settings(standin: TelegramStandIn | None, data_dir: Path, **env: str) -> Settings:
    base = {"CCTG_DATA_DIR": str(data_dir), "CCTG_ENVIRONMENT": "development"}
    if standin is not None:
        base.update(
            standin.server_env(data_dir, USERS),
            CCTG_RATE_PER_CHAT="1000",
            CCTG_RATE_PER_CHAT_BURST="1000",
            CCTG_RATE_GLOBAL="1000",
        )
    base.update(env)
    return load_settings(base)


@asynccontextmanager
async def connected(settings: Settings, config: ResilienceConfig | None = None) -> AsyncIterator[Client]:
    server = build_server(lambda: open_service(settings, resilience=config or fast_config()))
    async with Client(server) as client:
        yield client


@asynccontextmanager
async def connected_in_virtual_time(
    settings: Settings, config: ResilienceConfig | None = None, *, clock: FakeClock | None = None, **parts: Any
) -> AsyncIterator[tuple[Client, FakeClock]]:
    """``connected``, with the server on a ``FakeClock`` under ``autojump()``: for a server
    that waits on no socket (bridge delivery writes and reads files, or Telegram through
    ``inprocess.InProcessTelegram``, passed in ``parts`` as ``http_transport``), so a send's
    wait for its deadline costs no wall time. Bounded by 60 real seconds."""
    clock = clock or FakeClock()
    server = build_server(lambda: open_service(settings, resilience=config or fast_config(), clock=clock, **parts))
    with anyio.fail_after(60):
        async with clock.autojump(), Client(server) as client:
            yield client, clock


def present(part: T | None) -> T:
    """A part of the runtime this test knows is wired (it is typed optional: off when a
    feature does not run): narrowed, or the test fails here saying which was missing."""
    assert part is not None, "a runtime part the test relies on is not wired"
    return part


def direct_answers(service: NotificationService) -> Answers:
    """The service's getUpdates answers (direct delivery): its store and poller."""
    answers = service.answers
    assert isinstance(answers, Answers), f"direct delivery's answers expected, got {type(answers).__name__}"
    return answers


def resource_text(result: ReadResourceResult) -> str:
    """The text of a resource read (our resources are JSON text, never blobs)."""
    content = result.contents[0]
    assert isinstance(content, TextResourceContents), type(content).__name__
    return content.text


def prompt_text(result: GetPromptResult) -> str:
    """The text of a prompt's first message."""
    content = result.messages[0].content
    assert isinstance(content, TextContent), type(content).__name__
    return content.text


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def call_raw(client: Client, tool: str, args: dict[str, Any] | None = None, limit: float = 15) -> CallToolResult:
    """Call ``tool``, bounded by ``limit`` seconds; the result as it is, error or not."""
    with anyio.fail_after(limit):
        return await client.call_tool(tool, args or {})


async def call(client: Client, tool: str, args: dict[str, Any] | None = None, limit: float = 15) -> dict[str, Any]:
    """Call ``tool``, which must succeed, bounded by ``limit`` seconds; its structured content."""
    result = await call_raw(client, tool, args, limit)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None, text_of(result)
    return dict(result.structured_content)


async def wait_for(predicate: Callable[[], object], limit: float = 15, what: str = "the condition") -> None:
    """Poll state another thread or process changes (the stand-in's HTTP threads, a server's
    poller, a subprocess) until ``predicate()`` is true, bounded by ``limit`` seconds."""
    try:
        with anyio.fail_after(limit):
            while not predicate():  # noqa: ASYNC110  (the state is changed outside this event loop)
                await anyio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"waited {limit} s for {what}") from None


def read_line(stream: IO[AnyStr], limit: float = 30) -> AnyStr:
    """One line a subprocess writes (and flushes) to a pipe, waiting at most ``limit`` seconds."""
    ready, _, _ = select.select([stream], [], [], limit)
    if not ready:
        raise TimeoutError(f"no line from the subprocess within {limit} s")
    return stream.readline()


READER_CHILD = """
import sys, anyio
from pathlib import Path
from cctg_mcp.delivery.local_coordination import LocalCoordinator
async def main():
    c = LocalCoordinator(Path(sys.argv[1]))
    await c.start()
    await c.lead()
    print(c.session_id, flush=True)
    await anyio.sleep(60)
anyio.run(main)
"""


@contextmanager
def reader_process(data_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real process that joins ``data_dir``, holds its reader lock (as a running server does)
    and has printed its session id; killed at the end."""
    proc = subprocess.Popen([sys.executable, "-c", READER_CHILD, str(data_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc, read_line(proc.stdout).strip()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()  # a pipe left to the garbage collector is a ResourceWarning


# -- several server processes on one data dir (test_sessions, test_redis_machines) ------------

USER = USERS[0]
RATE = 4  # messages per second per chat, at the stand-in and in the servers' pacing
#: An answer reached its waiter by being woken (the shared signal), not by the next progress
#: tick (5 s) or the call's timeout (30 s). The latency itself is about 0.05 s here and was
#: 0.6 s once on a loaded runner: a figure to measure, not a wall-clock limit to assert.
WOKEN_S = 2.5


def session_env(standin: TelegramStandIn, data_dir: Path) -> dict[str, str]:
    config = data_dir.parent / "resilience.json"
    config.write_text(json.dumps(FAST))
    return {
        **standin.server_env(data_dir, [USER]),
        "CCTG_ENVIRONMENT": "development",
        "CCTG_CONFIG": str(config),
        "CCTG_RATE_PER_CHAT": str(RATE),
        "CCTG_RATE_PER_CHAT_BURST": "1",
        "HEALTH_CHECK_ENABLED": "false",
    }


class Session:
    def __init__(self, client: Client, index: int) -> None:
        self.client, self.index = client, index
        self.session_id = ""
        self.pid = 0

    async def call(self, tool: str, args: dict[str, Any], limit: float = 30) -> dict[str, Any]:
        return await call(self.client, tool, args, limit)

    async def coordination(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.call("get_resilience_status", {}))["coordination"]
        return doc


def arrived(standin: TelegramStandIn) -> Counter[str]:
    return Counter(m.plain_text.split("\n\n")[1] for m in standin.sent if "multi-session" in m.plain_text)


async def send_all(group: list[Session], per_session: int) -> set[str]:
    accepted: set[str] = set()

    async def one(session: Session) -> None:
        for k in range(per_session):
            text = f"multi-session {session.index}-{k:02d}"
            sent = await session.call("send_telegram_message", {"message": text})
            assert sent["status"] in ("delivered", "queued"), sent
            accepted.add(text)

    async with anyio.create_task_group() as tg:
        for session in group:
            tg.start_soon(one, session)
    return accepted


async def answers_reach_their_waiters(standin: TelegramStandIn, group: list[Session]) -> list[float]:
    """Every session asks for approval and waits; each press reaches the one that asked.
    Returns the seconds from each press to its waiter's answer."""
    events: list[str] = []
    keyboards = [m.reply_markup for m in standin.messages_for(USER) if m.reply_markup]
    for session in group:
        sent = await session.call("send_approval_request", {"title": f"Deploy {session.index}?", "description": "x"})
        events.append(sent["event_id"])
    await wait_for(lambda: sum(bool(m.reply_markup) for m in standin.messages_for(USER)) == len(group), 30)
    assert not keyboards
    buttons = [
        [b["callback_data"] for row in m.reply_markup["inline_keyboard"] for b in row]
        for m in standin.messages_for(USER)
        if m.reply_markup
    ]
    latencies: list[float] = []
    for session, event_id, (approve, _deny) in zip(group, events, buttons, strict=True):
        result: list[dict[str, Any]] = []

        async def waiter(s: Session = session, e: str = event_id, r: list[dict[str, Any]] = result) -> None:
            r.append(await s.call("wait_for_response", {"event_id": e, "timeout_seconds": 30}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(1.0)  # let the call reach the server and wait there (checked below)
            assert not result
            pressed = time.monotonic()
            standin.push_callback(USER, approve)
            with anyio.fail_after(10):
                while not result:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            latencies.append(time.monotonic() - pressed)
        (answer,) = result
        assert (answer["status"], answer["action"]) == ("answered", "approve"), answer
        assert answer["response"]["event_id"] == event_id
        assert answer["waited_seconds"] >= 0.2  # it was waiting before the press: woken, not found
    return latencies


# -- a stand-in bridge executable (fixture fake_bridge in conftest.py) ----------------------

FAKE_BRIDGE = """\
#!{python}
import json, os, signal, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

if os.environ.get("FAKE_BRIDGE_EXIT"):
    sys.exit(int(os.environ["FAKE_BRIDGE_EXIT"]))
if os.environ.get("FAKE_BRIDGE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
events = Path(os.environ["CC_TELEGRAM_EVENTS_DIR"])
out = Path(os.environ["FAKE_BRIDGE_OUT"])
started, processed = time.time(), 0

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": os.environ.get("FAKE_BRIDGE_STATUS", "healthy"),
                           "uptime_seconds": time.time() - started, "events_processed": processed}}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["FAKE_BRIDGE_PORT"])), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
print("fake bridge listening", flush=True)
while True:
    for path in sorted(events.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        with out.open("a") as sink:
            sink.write(json.dumps({{"file": path.name, "event": doc}}) + "\\n")
        path.unlink()
        processed += 1
    time.sleep(0.02)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeBridge:
    root: Path
    script: Path
    port: int
    out: Path
    events_dir: Path
    pids: list[int] = field(default_factory=list)

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "FAKE_BRIDGE_PORT": str(self.port),
            "FAKE_BRIDGE_OUT": str(self.out),
            "CC_TELEGRAM_EVENTS_DIR": str(self.events_dir),
            **extra,
        }

    def settings(self, data_dir: Path, **env: str) -> Settings:
        """Bridge-delivery settings that start and probe this stand-in bridge."""
        return make_settings(
            None,
            data_dir,
            CCTG_DELIVERY="bridge",
            CC_TELEGRAM_BRIDGE_PATH=str(self.script),
            CC_TELEGRAM_BRIDGE_HEALTH_URL=self.health_url,
            **env,
        )

    def manager(self, **kwargs: Any) -> BridgeProcessManager:
        env = self.env(**kwargs.pop("extra_env", {}))
        options: dict[str, Any] = {"grace_s": 3.0, "restart_delay_s": 0.0, "start_timeout_s": 15.0, **kwargs}
        return BridgeProcessManager(
            data_dir=self.root / "data",
            health_url=self.health_url,
            executable=self.script,
            env_overrides=env,
            **options,
        )

    def processed(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    async def await_processed(self, n: int, limit_s: float = 15.0) -> list[dict[str, Any]]:
        with anyio.fail_after(limit_s):
            while len(self.processed()) < n:  # noqa: ASYNC110  (waiting on the subprocess)
                await anyio.sleep(0.05)
        return self.processed()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    return False


async def await_gone(pid: int, limit_s: float = 10.0) -> None:
    with anyio.fail_after(limit_s):
        while not gone(pid):  # noqa: ASYNC110  (waiting on the subprocess)
            await anyio.sleep(0.05)


# -- answers: the getUpdates store and poller, the bridge's response files -------------------

ALICE = USERS[0]
STRANGER = 999  # not in TELEGRAM_ALLOWED_USERS
NOW = time.time()  # the response files' times; the fake clocks read 5 s later (wall_start=NOW + 5)


@asynccontextmanager
async def stores(tmp_path: Path, *, outbox: bool = True) -> AsyncIterator[tuple[ResponseStore, Outbox | None]]:
    box = await Outbox.open(tmp_path / "outbox.sqlite3") if outbox else None
    store = await ResponseStore.open(tmp_path / ANSWERS_FILE, outbox_path=box.path if box else None, bot_id=123456)
    try:
        yield store, box
    finally:
        await store.close()
        if box is not None:
            await box.close()


@asynccontextmanager
async def polling(
    standin: TelegramStandIn, store: ResponseStore, *, poll_timeout: int = 0, config: dict[str, Any] | None = None
) -> AsyncIterator[tuple[ResponsePoller, MetricsRegistry]]:
    metrics = MetricsRegistry()
    pipelines = PipelineSet(fast_config(**(config or {})), metrics=metrics)
    async with TelegramTransport(standin.token, standin.base_url) as transport:
        poller = ResponsePoller(
            store,
            transport,
            updates_pipeline(pipelines),
            allowed_users=USERS,
            metrics=metrics,
            poll_timeout=poll_timeout,
        )
        poller.offset = await store.next_offset()
        yield poller, metrics


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def callback_file(directory: Path, data: str, *, at: float = NOW, user: int = ALICE) -> Path:
    """A button press as the bridge writes it (bot.rs): ``telegram_callback_<user>_<YYYYmmdd_HHMMSS>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"telegram_callback_{user}_{datetime.fromtimestamp(at, UTC):%Y%m%d_%H%M%S}.json"
    path = directory / name
    path.write_text(
        json.dumps(
            {
                "timestamp": stamp(at),
                "user_id": user,
                "username": "alice",
                "first_name": "Al",
                "callback_data": data,
                "response_type": "callback_query",
            }
        )
    )
    return path


def text_file(directory: Path, body: str, *, at: float = NOW, user: int = ALICE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"telegram_response_{user}_{datetime.fromtimestamp(at, UTC):%Y%m%d_%H%M%S}.json"
    path.write_text(json.dumps({"timestamp": stamp(at), "user_id": user, "message_text": body, "message_type": "text"}))
    return path


def event(event_id: str, task_id: str, type_: str = "approval_request") -> Event:
    return Event(
        event_id=event_id,
        type=type_,
        title="Deploy?",
        description="prod",
        task_id=task_id,
        data={"approval_prompt": "Deploy?", "options": ["Approve", "Deny"]},
    )


@asynccontextmanager
async def bridge_answers(
    tmp_path: Path, *events: Event, clock: FakeClock | None = None
) -> AsyncIterator[BridgeAnswers]:
    box = await Outbox.open(tmp_path / "outbox.sqlite3")
    for e in events:
        await box.enqueue(e, [0])
    index = EventIndex.open_sync(box.path)
    assert index is not None
    answers = BridgeAnswers(
        tmp_path / "responses",
        index,
        clock=clock or FakeClock(wall_start=NOW + 5),
        progress_interval=5.0,
        allowed_users=USERS,
    )
    try:
        yield answers
    finally:
        await answers.aclose()
        await box.close()


# -- the server over HTTP as a real subprocess ------------------------------------------------


class HttpServer(NamedTuple):
    port: int
    log_path: Path
    process: anyio.abc.Process


@asynccontextmanager
async def http_server(standin: TelegramStandIn, tmp_path: Path, token: str, **extra: str) -> AsyncIterator[HttpServer]:
    """``cctg-mcp serve --transport http`` on an ephemeral port (stderr to tmp_path/stderr.log),
    yielded once it logged its URL (it listens before that line); SIGTERM at the end unless the
    test ended it, SIGKILL if anything failed."""
    log_path = tmp_path / "stderr.log"
    env = {
        "PATH": os.environ.get("PATH", ""),
        **standin.server_env(tmp_path, USERS, CCTG_ENVIRONMENT="development", CCTG_HTTP_TOKEN=token, **extra),
    }
    command = [sys.executable, "-m", "cctg_mcp", "serve", "--transport", "http", "--port", "0"]
    with log_path.open("wb") as stderr:
        proc = await anyio.open_process(command, env=env, stderr=stderr, stdin=subprocess.DEVNULL)
        try:
            with anyio.fail_after(60):
                while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/mcp", log_path.read_text())):
                    assert proc.returncode is None, log_path.read_text()
                    await anyio.sleep(0.05)
            yield HttpServer(int(found.group(1)), log_path, proc)
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with anyio.fail_after(30):
                    await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
