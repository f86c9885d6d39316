"""Pacing to Telegram's flood limits: token buckets per chat and overall, and a global pause.

Telegram allows about 1 message/s per chat (short bursts tolerated), about 30/s overall
and 20/min per group. Sending at those rates drains a backlog without provoking 429s; a 429
that happens anyway pauses *every* send for its ``retry_after`` (the limit is per bot).
All waiting goes through the injected clock.

With a shared budget (``delivery.coordination``: every process serving the same bot) the
buckets and the pause live there instead, so the limits hold for all processes together:
the same bucket shapes, taken atomically across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cctg_mcp.config import PacingSettings
from cctg_mcp.delivery.coordination import BucketSpec, Take
from cctg_mcp.resilience.clock import SYSTEM_CLOCK, Clock
from cctg_mcp.resilience.errors import DeadlineExceededError


@dataclass
class _Bucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    stamp: float
    need: float = 1.0  # tokens a send waits for: 1 plus the jitter margin (see Pacer)
    cost: float = 1.0  # tokens a send takes: more than 1 only for a bucket without a burst

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for_one(self) -> float:
        return 0.0 if self.tokens >= self.need else (self.need - self.tokens) / self.rate


def _bucket(rate: float, burst: float, now: float, margin_s: float, spacing_s: float) -> _Bucket:
    if burst <= 1.0:
        # No burst (groups; CCTG_RATE_PER_CHAT_BURST=1): the receiver holds at most one token,
        # so a spare on our side cannot absorb jitter. Space sends 1/rate + spacing_s apart.
        cost = 1.0 + min(1.0, rate * spacing_s)
        return _Bucket(rate, cost, cost, now, cost, cost)
    need = 1.0 + min(1.0, rate * margin_s)
    burst = max(burst, need)
    return _Bucket(rate, burst, burst, now, need)


class SharedBudget(Protocol):
    """The part of a ``Coordinator`` the pacer uses."""

    async def take(self, buckets: Sequence[BucketSpec], now: float) -> Take: ...

    async def give_back(self, buckets: Sequence[BucketSpec], now: float) -> None: ...

    async def pause(self, seconds: float, now: float) -> None: ...

    async def end_pause(self, now: float) -> float: ...


#: With a shared budget, the longest a waiting send sleeps before it asks the budget again.
SHARED_RECHECK_S = 1.0


class Pacer:
    """``margin_s``: every send waits until its buckets hold one token *plus* ``margin_s`` of
    refill (at most one token more), and keeps that spare. Telegram counts arrivals, we count
    departures: with both buckets running at the limit, a request that travels faster than
    the one before it would arrive early and be refused (429). The spare absorbs that much
    jitter; it costs ``margin_s`` once per backlog, not per message. A bucket without a burst
    has no room for a spare: its sends are spaced ``1/rate + spacing_s`` apart instead."""

    def __init__(
        self,
        settings: PacingSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_chats: int = 10_000,
        margin_s: float = 0.25,
        spacing_s: float = 0.1,
        shared: SharedBudget | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self._clock = clock
        self.margin_s = margin_s
        self.spacing_s = min(spacing_s, margin_s)
        now = clock.monotonic()
        self._global = _bucket(
            settings.global_per_second, max(1.0, settings.global_per_second), now, margin_s, self.spacing_s
        )
        self._chats: dict[int, _Bucket] = {}
        self._max_chats = max_chats
        self.paused_until = 0.0
        self._cleared = 0  # how many times the pause was ended here (see acquire)
        self.pauses = 0
        self.waits = 0

    def _chat(self, chat_id: int, now: float) -> _Bucket:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            if len(self._chats) >= self._max_chats:
                # Forget full buckets first: they carry no state worth keeping.
                for key, old in list(self._chats.items()):
                    old.refill(now)
                    if old.tokens >= old.burst:
                        del self._chats[key]
            if chat_id < 0:  # groups and channels: 20 per minute, no burst
                rate, burst = self.settings.group_per_minute / 60.0, 1.0
            else:
                rate, burst = self.settings.per_chat_per_second, float(self.settings.per_chat_burst)
            bucket = self._chats[chat_id] = _bucket(rate, burst, now, self.margin_s, self.spacing_s)
        return bucket

    def _specs(self, chat_id: int) -> list[BucketSpec]:
        """The shared buckets a send to ``chat_id`` takes from: same shapes as the local ones."""
        chat = self._chat(chat_id, self._clock.monotonic())
        g = self._global
        return [
            BucketSpec(f"chat:{chat_id}", chat.rate, chat.burst, chat.need, chat.cost),
            BucketSpec("global", g.rate, g.burst, g.need, g.cost),
        ]

    async def rate_limited(self, seconds: float) -> None:
        """Telegram answered 429: pause, with a shared budget in every process (the shared
        pause first: it is what holds sends; ``paused_until`` here is what paused_for reports)."""
        if self.shared is not None:
            await self.shared.pause(seconds, self._clock.monotonic())
        self.pause(seconds)

    async def give_back(self, chat_id: int) -> None:
        """``refund``, in the shared budget when there is one."""
        if self.shared is not None:
            await self.shared.give_back(self._specs(chat_id), self._clock.monotonic())
        else:
            self.refund(chat_id)

    def pause(self, seconds: float) -> None:
        """Stop all sends for ``seconds`` (a 429's retry_after)."""
        until = self._clock.monotonic() + max(0.0, seconds)
        if until > self.paused_until:
            self.paused_until = until
            self.pauses += 1

    def clear_pause(self) -> float:
        """End a 429 pause now (``trigger_recovery``); the seconds it still had to run."""
        left = self.paused_for()
        self.paused_until = 0.0
        self._cleared += 1
        return left

    async def end_pause(self) -> float:
        """End the pause for every process (the shared one) and then here: a send reading the
        shared pause before it ended cannot put the local copy back (``_cleared``)."""
        left = 0.0
        if self.shared is not None:
            left = await self.shared.end_pause(self._clock.monotonic())
        return max(left, self.clear_pause())

    def refund(self, chat_id: int) -> None:
        """Give back the slot ``acquire`` took for a message that was never sent (the breaker
        rejected it): an outage must not use up the rate budget the recovery needs."""
        chat = self._chats.get(chat_id)
        if chat is not None:
            chat.tokens = min(chat.burst, chat.tokens + chat.cost)
        self._global.tokens = min(self._global.burst, self._global.tokens + self._global.cost)

    def paused_for(self) -> float:
        return max(0.0, self.paused_until - self._clock.monotonic())

    async def acquire(self, chat_id: int, *, deadline: float | None = None) -> None:
        """Wait for a send slot for ``chat_id``; give up if the wait would pass ``deadline``."""
        counted = False
        while True:
            now = self._clock.monotonic()
            if self.shared is not None:
                cleared = self._cleared
                took = await self.shared.take(self._specs(chat_id), now)
                # The shared pause is the one that holds (its wait is in took.wait); this copy is
                # what paused_for() reports. Assigned, not maxed: another process may have ended
                # it; and not from a reading older than an end_pause here.
                if cleared == self._cleared:
                    self.paused_until = now + took.paused_s if took.paused_s > 0 else 0.0
                if took.wait <= 1e-9:  # taken
                    return
                self._check(chat_id, now, took.wait, deadline)
                if not counted:
                    self.waits, counted = self.waits + 1, True
                # Look again at least every SHARED_RECHECK_S: a pause another process ends
                # (trigger_recovery there) must not keep this one asleep for the rest of it.
                await self._clock.sleep(min(took.wait, SHARED_RECHECK_S))
                continue
            chat = self._chat(chat_id, now)
            chat.refill(now)
            self._global.refill(now)
            wait = max(self.paused_until - now, chat.wait_for_one(), self._global.wait_for_one())
            if wait <= 1e-9:  # float dust from refills must not turn into a zero-length wait loop
                chat.tokens -= chat.cost
                self._global.tokens -= self._global.cost
                return
            self._check(chat_id, now, wait, deadline)
            self.waits += 1
            await self._clock.sleep(wait)

    @staticmethod
    def _check(chat_id: int, now: float, wait: float, deadline: float | None) -> None:
        if deadline is not None and now + wait > deadline:
            raise DeadlineExceededError(
                f"sending to chat {chat_id} must wait {wait:.2f}s for Telegram's rate limit, past this call's deadline",
                retry_after=wait,
            )
