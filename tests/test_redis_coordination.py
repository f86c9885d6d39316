"""The Redis coordinator against a real ``redis-server`` on loopback (no mocks, no fakeredis).

redis-py's asyncio client runs on asyncio only, so these tests are about that backend: the
server refuses ``--backend trio`` with ``CCTG_REDIS_URL`` set (see test_settings/cli).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from cctg_mcp.delivery.coordination import BucketSpec
from cctg_mcp.delivery.redis_coordination import CoordinationUnavailable, RedisCoordinator, connect
from cctg_mcp.resilience.clock import FakeClock
from cctg_mcp.resilience.errors import NetworkError
from cctg_mcp.testing.redis_server import free_port, redis_server

BOT = 123456
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client; trio is refused at start-up with Redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
async def fresh(redis_url: str) -> AsyncIterator[str]:
    client = connect(redis_url)
    await client.flushdb()
    await client.aclose()
    yield redis_url


async def started(url: str, clock: FakeClock | None = None, **kw: Any) -> RedisCoordinator:
    c = RedisCoordinator(connect(url), BOT, clock=clock or FakeClock(), **kw)
    await c.start()
    return c


CHAT = BucketSpec("chat:111", rate=1.0, burst=1.0)
GLOBAL = BucketSpec("global", rate=30.0, burst=30.0)


@pytest.mark.anyio
async def test_the_budget_is_shared_taken_all_or_none_on_redis_time(fresh: str) -> None:
    a, b = await started(fresh), await started(fresh)
    slow_global = BucketSpec("global", rate=0.001, burst=30.0)  # refills too slowly to blur the count
    try:
        assert (await a.take([CHAT, slow_global], 0.0)).wait == 0.0
        second = await b.take([CHAT, slow_global], 0.0)  # another machine, same chat: one per second
        assert 0 < second.wait <= 1.0 and second.paused_s == 0.0  # less the (Redis) time between the takes
        other = await b.take([BucketSpec("chat:222", 1.0, 1.0), slow_global], 0.0)
        assert other.wait == 0.0  # another chat is free; the global bucket had room
        level = float(await a.redis.hget(a.key("bucket:global"), "tokens") or 0)
        assert 27.99 <= level <= 28.01  # two takes: the refused one took nothing from global
        await a.give_back([CHAT, slow_global], 0.0)
        assert (await b.take([CHAT], 0.0)).wait == 0.0  # the token given back is there
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_a_429_pause_holds_every_machine_and_is_never_shortened(fresh: str) -> None:
    a, b = await started(fresh), await started(fresh)
    try:
        await a.pause(30.0, 0.0)
        await b.pause(2.0, 0.0)  # a shorter pause does not cut the longer one
        took = await b.take([GLOBAL], 0.0)
        assert 2.0 < took.paused_s <= 30.0 and took.wait >= took.paused_s  # above 2: not shortened
        state = await b.budget(0.0)
        assert state["pauses"] == 2 and 2.0 < state["paused_for_s"] <= 30.0
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_one_reader_fenced_and_handed_over(fresh: str) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    a = await started(fresh, clock_a, lease_s=10.0)
    b = await started(fresh, clock_b, lease_s=10.0)
    try:
        assert await a.try_lead() and a.is_leader() and a.epoch == 1
        assert not await b.try_lead() and await b.leader() == a.session_id
        assert await a.commit_offset(500) and await b.shared_offset() == 500
        # a pauses past its own deadline (90 % of the lease on its clock): it stops acting
        # as reader before Redis can hand the lease to anyone else.
        await clock_a.advance(9.5)
        assert not a.is_leader() and not await a.commit_offset(900)
        await a.redis.delete(a.key("reader"))  # its lease ran out in Redis too
        assert await b.try_lead() and b.epoch == 2
        # a wakes up believing it still leads (deadline forced): the fenced write is refused.
        a._lease_deadline = clock_a.monotonic() + 100
        assert not await a.commit_offset(900) and await b.shared_offset() == 500
        assert await b.commit_offset(600)
        await b.commit_offset(550)  # the offset only moves forward
        assert await a.shared_offset() == 600
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_a_stopped_peer_is_seen_dead_by_liveness(fresh: str) -> None:
    a, b = await started(fresh, session_ttl_s=30.0), await started(fresh, session_ttl_s=30.0)
    deaths: list[int] = []
    a.add_death_listener(lambda: deaths.append(1))
    try:
        assert {s.session_id for s in await a.sessions()} == {a.session_id, b.session_id}
        assert await a.dead_among([b.session_id, a.session_id]) == set()
        assert await a.dead_among(["hook-1234-abcd"]) == set()  # a hook's lease runs out by itself
        await b.redis.delete(b.key(f"session:{b.session_id}"))  # what its TTL does after a SIGKILL
        assert await a.dead_among([b.session_id]) == {b.session_id}
        assert [s.session_id for s in await a.sessions()] == [a.session_id] and deaths == [1]
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_updates_shared_by_the_reader_reach_every_machine_and_wake_waiters(fresh: str) -> None:
    a, b = await started(fresh), await started(fresh)
    got: list[list[dict[str, Any]]] = []

    async def sink(batch: list[dict[str, Any]]) -> None:
        got.append(batch)

    b.set_updates_sink(sink)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(b.run)
            changed = b.answers_changed()
            await a.share_updates([{"update_id": 7, "message": {"text": "yes"}}])
            with anyio.fail_after(10):
                await changed.wait()
            assert got == [[{"update_id": 7, "message": {"text": "yes"}}]]
            tg.cancel_scope.cancel()
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.anyio
async def test_keys_are_namespaced_per_bot_and_hold_no_token(fresh: str) -> None:
    a = await started(fresh)
    try:
        await a.try_lead()
        await a.take([CHAT, GLOBAL], 0.0)
        await a.pause(1.0, 0.0)
        await a.share_updates([{"update_id": 1}])
        keys = [k.decode() if isinstance(k, bytes) else k for k in await a.redis.keys("*")]
        assert keys and all(k.startswith(f"cctg:{BOT}:") for k in keys), keys
        dump = repr([await a.redis.dump(k) for k in keys])
        assert TOKEN not in dump and TOKEN.split(":")[1] not in dump
        assert await a.redis.pttl(a.key(f"session:{a.session_id}")) > 0  # transient state expires
        assert await a.redis.ttl(a.key("updates")) > 0
    finally:
        await a.aclose()


@pytest.mark.anyio
async def test_unreachable_redis_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    url = f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0"
    c = RedisCoordinator(connect(url), BOT, clock=FakeClock())
    with pytest.raises(NetworkError, match="Redis is unreachable") as info:
        await c.start()
    assert "s3cret-pass" not in str(info.value)
    await c.redis.aclose()


@pytest.mark.anyio
async def test_auth_is_required_and_used(tmp_path: Path) -> None:
    with redis_server(tmp_path, password="pw-1234") as url:
        bare = RedisCoordinator(connect(url.replace(":pw-1234@", "")), BOT, clock=FakeClock())
        with pytest.raises(NetworkError):
            await bare.start()
        await bare.redis.aclose()
        c = RedisCoordinator(connect(url.replace(":pw-1234@", ""), password="pw-1234"), BOT, clock=FakeClock())
        await c.start()
        assert (await c.take([CHAT], 0.0)).wait == 0.0
        await c.aclose()


@pytest.mark.anyio
async def test_tls_with_the_servers_ca_works_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    """rediss:// against a real redis-server speaking TLS only: with the CA named in the URL
    (``ssl_ca_certs``, as the README shows) the budget works; trusting only the system's CAs,
    the handshake fails and start-up says Redis is unreachable (the password not in it)."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    with redis_server(tmp_path, password="pw-tls", tls=(cert, key)) as url:
        assert url.startswith("rediss://")
        c = RedisCoordinator(connect(f"{url}?ssl_ca_certs={ca_file}"), BOT, clock=FakeClock())
        await c.start()
        assert (await c.take([CHAT], 0.0)).wait == 0.0
        await c.aclose()
        stranger = RedisCoordinator(connect(url), BOT, clock=FakeClock())
        with pytest.raises(NetworkError, match="Redis is unreachable") as info:
            await stranger.start()
        assert "pw-tls" not in str(info.value)
        await stranger.redis.aclose()


def test_without_redis_url_nothing_redis_is_imported(tmp_path: Path) -> None:
    """Unset, the server never imports redis (or our Redis module): the extra stays optional."""
    import subprocess
    import sys

    code = (
        "import sys, anyio\n"
        "from cctg_mcp.config import load_settings\n"
        "from cctg_mcp.app import open_service\n"
        "from cctg_mcp.server import build_server\n"
        f"s = load_settings({{'CCTG_DATA_DIR': {str(tmp_path)!r}, 'TELEGRAM_BOT_TOKEN': '1:x', "
        "'TELEGRAM_ALLOWED_USERS': '1', 'TELEGRAM_API_BASE_URL': 'http://127.0.0.1:9'})\n"
        "async def main():\n"
        "    async with open_service(s):\n"
        "        pass\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.') or 'redis_coord' in m))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.anyio
async def test_redis_down_opens_the_coordination_breaker_and_sends_stop_waiting_on_it(tmp_path: Path) -> None:
    clock = FakeClock()
    with redis_server(tmp_path) as url:
        c = RedisCoordinator(connect(url), BOT, clock=clock)
        await c.start()
        assert (await c.take([CHAT], 0.0)).wait == 0.0
    # redis-server is gone: every take is CoordinationUnavailable (the row stays queued) ...
    for _ in range(3):
        with pytest.raises(CoordinationUnavailable, match="unreachable") as info:
            await c.take([CHAT], 0.0)
        assert info.value.retryable and not info.value.counts_as_failure  # not Telegram's fault
        assert info.value.retry_after == 5.0  # due again when the breaker admits a probe, not in 60 s
    assert c.breaker.state.value == "open"
    # ... and once the breaker is open, a send does not even try Redis: it fails at once.
    with pytest.raises(CoordinationUnavailable, match="breaker open") as info:
        await c.take([CHAT], 0.0)
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 5.0
    assert (await c.describe(0.0))["breaker"] == "open"
    # Leading is "not now" while Redis is away, never an error that would stop the server.
    assert await c.try_lead() is False and c.last_error is not None
    await c.redis.aclose()


@pytest.mark.anyio
async def test_the_dispatcher_keeps_going_when_liveness_cannot_be_asked(tmp_path: Path) -> None:
    """Redis away: the dispatcher's liveness round is 'ask again later', not a crash of its loop."""
    from cctg_mcp.config import PacingSettings
    from cctg_mcp.delivery.dispatcher import Dispatcher
    from cctg_mcp.delivery.outbox import Outbox
    from cctg_mcp.delivery.pacing import Pacer
    from cctg_mcp.events.catalogue import Event

    class NoSends:
        async def send_message(self, chat_id: int, text: str, **_: Any) -> int:
            raise AssertionError("nothing is sent in this test")

    class Plain:
        async def call(self, operation: str, fn: Any, **_: Any) -> Any:
            return await fn()

    with redis_server(tmp_path) as url:
        c = RedisCoordinator(connect(url), BOT, clock=FakeClock())
        await c.start()
    outbox = await Outbox.open(tmp_path / "outbox.sqlite3")
    dispatcher = Dispatcher(outbox, NoSends(), Plain(), Pacer(PacingSettings()), lease_s=3600, coordinator=c)
    try:
        event = Event(event_id="e1", type="info_notification", title="t", description="d", task_id="e1")
        await outbox.enqueue(event, [7], lease=("r1-0123abcd", 3600))  # a peer's lease
        assert await dispatcher.release_dead_owners() == 0  # not judged: Redis did not answer
        assert (await outbox.counts()).in_flight == 1
    finally:
        await outbox.close()
        await c.redis.aclose()
