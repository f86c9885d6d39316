"""Coordination through Redis, for server processes on several machines sharing one bot.

The same ``Coordinator`` interface as ``LocalCoordinator`` (see ``coordination.py``), with the
state in Redis (``CCTG_REDIS_URL``), namespaced per bot: ``cctg:<bot id>:...``. No key or value
holds the token.

- **liveness**: each process keeps ``session:<id>`` alive (a key with a short TTL, renewed
  every ``heartbeat_s``); a process killed with SIGKILL stops renewing and its key expires
  within ``session_ttl_s``, so its leased rows move on within seconds.
- **the one reader**: ``reader`` holds the leader's session id with a lease (``lease_s``),
  renewed every heartbeat (at most a third of the lease) by a script that renews only the
  holder's own lease. Each
  acquisition increments ``reader:epoch`` (the fencing token). A leader counts itself leader
  only until its own lease deadline, measured on its monotonic clock from *before* the
  renewal was sent, so a paused old leader stops acting before anyone else can take over;
  and the getUpdates offset is written by a script that checks the token, so a stale leader's
  write is refused.
- **shared budgets**: one Lua script per take: every bucket refilled from Redis's own clock
  (``TIME``, never the clients'), all taken or none, the shared 429 pause honoured.
- **answers**: the reader appends each batch of raw updates to the ``updates`` stream
  (bounded, with a TTL); every process reads the stream (``XREAD BLOCK``) into its
  own answers store (so a button press resolves against the outbox of the machine that sent
  the event) and wakes its waiters.

Each machine keeps its own durable SQLite outbox: Redis being down never loses an accepted
event; sends queue locally and the status says why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
from anyio.abc import TaskStatus

from cctg_mcp.delivery.coordination import BucketSpec, SessionInfo, Take
from cctg_mcp.resilience.breaker import BreakerSettings, CircuitBreaker
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import CircuitBreakerError, ConfigurationError, NetworkError, redact

if TYPE_CHECKING:  # redis is an optional extra, imported only when CCTG_REDIS_URL is set
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

#: Updates kept in the stream (a follower that was away longer reads Telegram's answers late,
#: never wrongly: the reader's offset is shared, so nothing is read twice from Telegram).
STREAM_MAXLEN = 10_000
STREAM_TTL_S = 7 * 24 * 3600

# KEYS: bucket keys..., pause key. ARGV: n, then (rate, burst, need, cost) per bucket.
# Returns {wait_ms, paused_ms}: wait 0 means ``cost`` tokens were taken from every bucket.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local n = tonumber(ARGV[1])
local paused = redis.call('PTTL', KEYS[n + 1])
if paused < 0 then paused = 0 end
local wait = paused / 1000.0
local levels = {}
for i = 1, n do
  local rate, burst, need = tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i])
  if burst < need then burst = need end
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'stamp')
  local level = burst
  if v[1] then
    local stamp = tonumber(v[2])
    if stamp <= now + 1 then level = math.min(burst, tonumber(v[1]) + math.max(0, now - stamp) * rate) end
  end
  levels[i] = level
  if level < need then wait = math.max(wait, (need - level) / rate) end
end
if wait > 1e-9 then return {math.ceil(wait * 1000), paused} end
for i = 1, n do
  local rate, burst, cost = tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i-1]), tonumber(ARGV[4*i+1])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - cost), 'stamp', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst / rate + 60) * 1000))
end
return {0, 0}
"""

# KEYS: bucket keys... ARGV: n, then (rate, burst, cost) per bucket: ``cost`` back, capped at burst.
GIVE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i = 1, tonumber(ARGV[1]) do
  local rate, burst, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'stamp')
  if v[1] then
    local level = math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
    redis.call('HSET', KEYS[i], 'tokens', tostring(math.min(burst, level + cost)), 'stamp', tostring(now))
  end
end
return 1
"""

# KEYS: pause key, pause count key. ARGV: ms. Extends the pause, never shortens it.
PAUSE = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
redis.call('INCR', KEYS[2])
return 1
"""

# KEYS: reader, epoch. ARGV: session id, lease ms. Returns the epoch when this session holds
# the lease after the call (acquired or renewed), else 0.
LEAD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# KEYS: reader, epoch, offset. ARGV: session id, epoch, offset. Fenced: only the current
# holder of the current epoch moves the shared offset, and only forward.
SET_OFFSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) then return 0 end
local old = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[3]) > old then redis.call('SET', KEYS[3], ARGV[3]) end
return 1
"""

# KEYS: reader. ARGV: session id. Let go of the lease if this session holds it.
RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CoordinationUnavailable(NetworkError):
    """Redis (the shared coordination) did not answer: the send stays queued in this machine's
    outbox and is retried; it says nothing about Telegram's health, so no breaker counts it."""

    code = "COORDINATION_UNAVAILABLE"
    counts_as_failure = False


T = TypeVar("T")


#: The lease owner names of Redis sessions; other owners (a hook's) are never judged by liveness.
SESSION_ID = re.compile(r"r[0-9]+-[0-9a-f]{8}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: What ``XREAD`` answers: [(stream, [(entry id, {field: value})])] (redis-py types it loosely).
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


def bot_namespace(bot_id: int) -> str:
    return f"cctg:{bot_id}:"


def connect(url: str, password: str | None = None) -> Redis:
    """A redis-py asyncio client for ``url`` (``redis://``, ``rediss://`` for TLS)."""
    try:
        from redis.asyncio import Redis as _Redis
    except ImportError:  # pragma: no cover - exercised by the extra's absence, not in CI
        raise ConfigurationError(
            "CCTG_REDIS_URL is set but the redis client is not installed: pip install 'cctg-mcp[redis]'."
        ) from None
    try:
        return _Redis.from_url(url, password=password or None, socket_timeout=5.0, socket_connect_timeout=5.0)
    except ValueError as exc:
        raise ConfigurationError(f"CCTG_REDIS_URL is not a Redis URL ({redact(str(exc))}).") from None


UpdatesSink = Callable[[list[dict[str, Any]]], Awaitable[object]]


class RedisCoordinator:
    """Coordination through Redis (see the module docstring). asyncio only (redis-py)."""

    def __init__(
        self,
        client: Redis,
        bot_id: int,
        *,
        clock: Clock = SYSTEM_CLOCK,
        lease_s: float = 10.0,
        # Longer than a Redis call may take (socket timeout 5 s): a slow reply or a short blip
        # must not make live sessions look dead and free their leased rows.
        session_ttl_s: float = 10.0,
        heartbeat_s: float = 1.0,
        lead_retry_s: float = 1.0,
    ) -> None:
        self.redis = client
        self.ns = bot_namespace(bot_id)
        self.clock = clock
        self.lease_s = lease_s
        self.session_ttl_s = session_ttl_s
        self.heartbeat_s = heartbeat_s
        self.lead_retry_s = lead_retry_s
        self.session_id = f"r{os.getpid()}-{uuid.uuid4().hex[:8]}"  # SESSION_ID
        self.info = SessionInfo(self.session_id, os.getpid(), socket.gethostname(), clock.time())
        self.epoch = 0
        self._lease_deadline = 0.0  # monotonic: this process may act as reader until then
        self._listeners: list[Callable[[], None]] = []
        self._known: set[str] = set()
        self.peer_deaths = 0
        self._changed: anyio.Event | None = None
        self._sink: UpdatesSink | None = None
        self._stream_pos = "0-0"
        self.last_error: str | None = None
        self.became_leader_at: float | None = None
        #: Redis as a component: after 3 failures within 30 s, sends stop waiting on it for 5 s.
        self.breaker = CircuitBreaker(
            "coordination",
            BreakerSettings(failure_threshold=3, success_threshold=1, open_timeout=5.0, monitoring_window=30.0),
            clock=clock,
            is_failure=lambda exc: True,
        )
        self._take = client.register_script(TAKE)
        self._give = client.register_script(GIVE_BACK)
        self._pause = client.register_script(PAUSE)
        self._lead = client.register_script(LEAD)
        self._set_offset = client.register_script(SET_OFFSET)
        self._resign = client.register_script(RESIGN)

    def __repr__(self) -> str:
        return f"RedisCoordinator({self.session_id}, leader={self.is_leader()})"

    def key(self, name: str) -> str:
        return self.ns + name

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """A Redis call on the send path, through the coordination breaker: a failure becomes
        ``CoordinationUnavailable``; while the breaker is open, sends do not wait on Redis."""
        try:
            result = await self.breaker.call(call)
        except CircuitBreakerError as exc:
            raise CoordinationUnavailable(
                f"Redis coordination is unreachable (breaker {self.breaker.state.value}; last error: "
                f"{self.last_error}); the send stays queued",
                # when it admits a probe (half-open: one is in flight, so a moment)
                retry_after=max(exc.retry_after or 0.0, 0.5),
            ) from None
        except Exception as exc:
            self.last_error = redact(str(exc))
            # Due again when the breaker would admit a probe, not after Telegram's backoff for
            # the row's attempts (up to 60 s): Redis being away says nothing about the message.
            raise CoordinationUnavailable(
                f"Redis coordination is unreachable ({self.last_error})",
                retry_after=self.breaker.settings.open_timeout,
            ) from None
        self.last_error = None
        return result

    # ---- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._heartbeat()
        except Exception as exc:  # redis raises its own tree; say what and where, never the password
            raise NetworkError(f"Redis is unreachable ({redact(str(exc))}); check CCTG_REDIS_URL.") from None
        # The stream is read from its start: answers that arrived while this process was away
        # reach its store too (rows are unique per update id, so a replay stores nothing twice).
        self._stream_pos = "0-0"

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self._resign(keys=[self.key("reader")], args=[self.session_id])
                await self.redis.delete(self.key(f"session:{self.session_id}"))
                await self.redis.srem(self.key("sessions"), self.session_id)
            except Exception as exc:
                log.warning("coordination: could not sign off from Redis: %s", redact(str(exc)))
        self._lease_deadline = 0.0
        await self.redis.aclose()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_alive)
            tg.start_soon(self._listen)
            task_status.started()

    async def _heartbeat(self) -> None:
        body = json.dumps(asdict(self.info))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(f"session:{self.session_id}"), body, px=int(self.session_ttl_s * 1000))
            pipe.sadd(self.key("sessions"), self.session_id)
            await pipe.execute()

    async def _keep_alive(self) -> None:
        while True:
            try:
                await self._heartbeat()
                if self.is_leader() or self._lease_deadline:
                    await self._renew()
                await self.sessions()
                self.last_error = None
            except Exception as exc:
                self.last_error = redact(str(exc))
                log.warning("coordination: Redis unreachable (%s); sends keep queueing locally", self.last_error)
            await self.clock.sleep(
                self.heartbeat_s if not self.is_leader() else min(self.heartbeat_s, self.lease_s / 3)
            )

    # ---- liveness ---------------------------------------------------------------------

    async def sessions(self) -> list[SessionInfo]:
        ids = sorted(_text(m) for m in await self.redis.smembers(self.key("sessions")))
        bodies = await self.redis.mget([self.key(f"session:{i}") for i in ids]) if ids else []
        live: list[SessionInfo] = []
        dead: set[str] = set()
        for sid, body in zip(ids, bodies, strict=True):
            if body is None:
                dead.add(sid)
                continue
            raw = json.loads(body)
            live.append(SessionInfo(raw["session_id"], raw["pid"], raw["host"], raw["started_at"]))
        if dead:
            await self.redis.srem(self.key("sessions"), *dead)
            self._dead_found(dead)
        return live

    async def dead_among(self, owners: Iterable[str]) -> set[str]:
        # Only session-named owners are judged: a hook's short lease (``hook-...``) has no
        # session key and runs out by itself.
        wanted = [o for o in owners if o != self.session_id and SESSION_ID.fullmatch(o)]
        if not wanted:
            return set()
        found = await self._guard(lambda: self.redis.mget([self.key(f"session:{o}") for o in wanted]))
        return {o for o, body in zip(wanted, found, strict=True) if body is None}

    def add_death_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _dead_found(self, dead: set[str]) -> None:
        new = dead - self._known
        if not new:
            return
        self._known |= new
        self.peer_deaths += len(new)
        log.info("coordination: session(s) %s stopped; their work moves to live sessions", ", ".join(sorted(new)))
        for listener in self._listeners:
            listener()

    # ---- the reader -------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.clock.monotonic() < self._lease_deadline

    async def _renew(self) -> bool:
        sent = self.clock.monotonic()
        epoch = int(
            await self._lead(
                keys=[self.key("reader"), self.key("reader:epoch")], args=[self.session_id, int(self.lease_s * 1000)]
            )
        )
        if epoch:
            if not self.is_leader():
                self.became_leader_at = self.clock.time()
                log.info("coordination: session %s now reads the bot's updates (epoch %d)", self.session_id, epoch)
            self.epoch = epoch
            # Counted from before the request: Redis's lease cannot end before ours does.
            self._lease_deadline = sent + self.lease_s * 0.9
            return True
        if self._lease_deadline:
            log.warning("coordination: session %s lost the reader lease", self.session_id)
        self._lease_deadline = 0.0
        return False

    async def try_lead(self) -> bool:
        """Lead if the lease is free or ours. Redis unreachable is "not now" (the reader keeps
        leading only until its own lease deadline), never an error that stops the server."""
        if self.is_leader():
            return True
        try:
            return await self._renew()
        except Exception as exc:
            self.last_error = redact(str(exc))
            return False

    async def lead(self) -> None:
        while not await self.try_lead():
            await self.clock.sleep(self.lead_retry_s)

    async def leader(self) -> str | None:
        holder = await self.redis.get(self.key("reader"))
        return _text(holder) if holder is not None else None

    async def shared_offset(self) -> int | None:
        raw = await self.redis.get(self.key("offset"))
        return int(raw) if raw is not None else None

    async def commit_offset(self, offset: int) -> bool:
        """Move the shared getUpdates offset forward; refused unless this session holds the
        current epoch (a paused old leader cannot move it back or skip ahead)."""
        if not self.is_leader():
            return False
        keys = [self.key("reader"), self.key("reader:epoch"), self.key("offset")]
        return bool(await self._set_offset(keys=keys, args=[self.session_id, self.epoch, offset]))

    # ---- budgets ----------------------------------------------------------------------

    async def take(self, buckets: Sequence[BucketSpec], now: float) -> Take:
        keys = [self.key(f"bucket:{b.key}") for b in buckets] + [self.key("pause")]
        args: list[Any] = [len(buckets)]
        for b in buckets:
            args += [b.rate, b.burst, b.need, b.cost]
        wait_ms, paused_ms = cast(list[int], await self._guard(lambda: self._take(keys=keys, args=args)))
        return Take(wait_ms / 1000.0, paused_ms / 1000.0)

    async def give_back(self, buckets: Sequence[BucketSpec], now: float) -> None:
        args: list[Any] = [len(buckets)]
        for b in buckets:
            args += [b.rate, max(b.burst, b.need), b.cost]
        await self._guard(lambda: self._give(keys=[self.key(f"bucket:{b.key}") for b in buckets], args=args))

    async def pause(self, seconds: float, now: float) -> None:
        await self._guard(
            lambda: self._pause(keys=[self.key("pause"), self.key("pauses")], args=[max(1, int(seconds * 1000))])
        )

    async def end_pause(self, now: float) -> float:
        """End the shared 429 pause now (recovery's lever); the seconds it still had to run."""
        left = await self.redis.pttl(self.key("pause"))
        await self.redis.delete(self.key("pause"))
        return max(0, left) / 1000.0

    async def budget(self, now: float) -> dict[str, Any]:
        paused, count, glob = await self.redis.pttl(self.key("pause")), await self.redis.get(self.key("pauses")), None
        tokens = await self.redis.hget(self.key("bucket:global"), "tokens")
        if tokens is not None:
            glob = round(float(tokens), 3)
        return {
            "paused_for_s": round(max(0, paused) / 1000.0, 3),
            "pauses": int(count or 0),
            "global_tokens_at_last_send": glob,
        }

    # ---- answers ----------------------------------------------------------------------

    def set_updates_sink(self, sink: UpdatesSink) -> None:
        """Where this process stores the updates the reader shares (its own answers store)."""
        self._sink = sink

    async def share_updates(self, updates: list[dict[str, Any]]) -> None:
        """The reader: append a batch of raw updates to the stream every process reads."""
        if not updates:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.key("updates"), {"batch": json.dumps(updates)}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.expire(self.key("updates"), STREAM_TTL_S)
            await pipe.execute()

    def answers_changed(self) -> anyio.Event:
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def _wake(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    async def _listen(self) -> None:
        """Read the shared updates stream into this process's store, and wake waiters."""
        while True:
            try:
                got = cast(
                    StreamReply,
                    await self.redis.xread({self.key("updates"): self._stream_pos}, block=1000, count=100),
                )
            except Exception as exc:
                self.last_error = redact(str(exc))
                await self.clock.sleep(self.heartbeat_s)
                continue
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    batch = json.loads(fields[b"batch"])
                    if self._sink is not None and batch:
                        await self._sink(batch)
                    self._stream_pos = _text(entry_id)
                self._wake()

    # ---- status -----------------------------------------------------------------------

    async def describe(self, now: float) -> dict[str, Any]:
        try:
            sessions = await self.sessions()
            reader = await self.leader()
            budget = await self.budget(now)
            reachable = True
        except Exception as exc:
            self.last_error = redact(str(exc))
            sessions, reader, budget, reachable = [], None, {}, False
        return {
            "kind": "redis",
            "reachable": reachable,
            "error": self.last_error,
            "breaker": self.breaker.state.value,
            "session_id": self.session_id,
            "sessions": [asdict(s) for s in sessions],
            "reader": reader,
            "reader_epoch": self.epoch if self.is_leader() else None,
            "this_session_reads_updates": self.is_leader(),
            "peer_deaths_seen": self.peer_deaths,
            "budget": budget,
        }
