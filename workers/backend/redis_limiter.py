"""`Limiter` shared by every process on one Redis: a per-endpoint concurrency cap and pace.

- Concurrency: a sorted set of holders per endpoint (`token -> expiry`, Redis server time).
  Admission drops expired holders and adds one if fewer than `max_concurrency` remain, in one
  script. Live holders are extended every `hold_seconds / 3` by the limiter's keeper task, so
  a call may run as long as it needs, while a killed process's slots free themselves within
  `hold_seconds`.
- Pace: GCRA, as in `LocalLimiter`: one stored theoretical arrival time per endpoint. A caller
  books the next admission and sleeps until it, still holding its slot, so a burst never
  overshoots the concurrency cap.

Both use Redis' clock (`TIME`), so processes on machines with skewed clocks agree. Waiting
for a free slot polls with capped exponential backoff: a freed slot goes to whichever waiter
asks first, not strictly first come, first served. Redis being unreachable raises
`BackendUnavailable` at once, unless `patience` is set: then admission waits for Redis up to
that many seconds (workers use it like their `RetryingBackend`, so that an agent about to call
the model does not fail because Redis is restarting).

Use it as `async with RedisLimiter(...)`: the keeper task lives between enter and exit.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from workers.backend.keys import RedisKeys
from workers.backend.redis import RedisBackend, unavailable_on_failure
from workers.errors import BackendUnavailable

log = logging.getLogger(__name__)

_NOW_MS = (
    "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)

# KEYS: holders. ARGV: token, max concurrency, hold ms. Returns 1 when admitted.
# The set itself expires a hold after its last change: every holder's expiry is sooner.
_ACQUIRE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: holders. ARGV: token, hold ms. Extends a holder that is still there (0 if it lapsed).
_EXTEND = (
    _NOW_MS
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: pace. ARGV: interval µs, burst. Books the next admission; returns the wait in µs.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local booked = tat + interval
redis.call('SET', KEYS[1], string.format('%d', booked), 'PX', math.ceil((booked - now) / 1000) + 1000)
local wait = tat - (tonumber(ARGV[2]) - 1) * interval - now
if wait < 0 then wait = 0 end
return wait
"""

_POLL_MIN = 0.005
_POLL_MAX = 0.25
_OUTAGE_DELAY_MAX = 2.0


class RedisLimiter:
    def __init__(
        self,
        client: Redis,
        keys: RedisKeys,
        *,
        hold_seconds: float = 30.0,
        burst: int = 1,
        where: str = "redis",
        patience: float = 0.0,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if hold_seconds <= 0:
            raise ValueError("hold_seconds must be positive")
        self._client = client
        self._keys = keys
        self._hold_ms = max(1, int(hold_seconds * 1000))
        self._burst = burst
        self._where = where
        self._patience = patience
        self._held: dict[str, str] = {}  # token -> holders key
        self._task_group: TaskGroup | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_backend(
        cls, backend: RedisBackend, *, hold_seconds: float = 30.0, burst: int = 1, patience: float = 0.0
    ) -> RedisLimiter:
        """Share the backend's connection pool and key prefix."""
        return cls(
            backend.client,
            backend.keys,
            hold_seconds=hold_seconds,
            burst=burst,
            where=backend.where,
            patience=patience,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("RedisLimiter is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._keep_alive)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        task_group.cancel_scope.cancel()
        # The block's own exception is not handed to the task group: it would come back
        # wrapped in an ExceptionGroup, and callers expect it unchanged.
        await task_group.__aexit__(None, None, None)

    # -- the Limiter protocol ---------------------------------------------------------------------
    @asynccontextmanager
    async def slot(self, endpoint_key: str, max_concurrency: int, rpm: int) -> AsyncIterator[None]:
        if self._task_group is None:
            raise RuntimeError("RedisLimiter is not running: use `async with limiter:`")
        holders = self._keys.limiter_slots(endpoint_key)
        token = os.urandom(8).hex()
        await self._acquire(holders, token, max_concurrency)
        self._held[token] = holders
        try:
            if rpm > 0:
                # Paced while holding the place, so a burst never overshoots the cap. A caller
                # cancelled mid-wait forfeits its booking, which errs on the slow side.
                wait = await self._reserve(self._keys.limiter_pace(endpoint_key), rpm)
                if wait > 0:
                    await anyio.sleep(wait)
            yield
        finally:
            self._held.pop(token, None)
            with anyio.CancelScope(shield=True):
                await self._release(holders, token)

    # -- internals --------------------------------------------------------------------------------
    async def _script(self, source: str, keys: list[str], args: list[str | int]) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        async with unavailable_on_failure(self._where):
            return await script(keys=keys, args=args)

    async def _script_patiently(self, source: str, keys: list[str], args: list[str | int]) -> Any:
        """`_script` that waits out a Redis outage (with backoff) for up to `patience` seconds.
        Only admission waits: a release that fails is logged and its hold lapses by itself."""
        give_up = time.monotonic() + self._patience
        delay = 0.05
        while True:
            try:
                return await self._script(source, keys, args)
            except BackendUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("LLM limiter: %s; retrying in %.2fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, _OUTAGE_DELAY_MAX)

    async def _acquire(self, holders: str, token: str, max_concurrency: int) -> None:
        delay = _POLL_MIN
        args: list[str | int] = [token, max_concurrency, self._hold_ms]
        while not int(await self._script_patiently(_ACQUIRE, [holders], args)):
            # Jittered, so waiters in many processes do not poll in lockstep.
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _POLL_MAX)

    async def _reserve(self, pace: str, rpm: int) -> float:
        interval_us = max(1, round(60_000_000 / rpm))
        wait_us = int(await self._script_patiently(_RESERVE, [pace], [interval_us, self._burst]))
        return wait_us / 1_000_000

    async def _release(self, holders: str, token: str) -> None:
        try:
            async with unavailable_on_failure(self._where):
                await self._client.zrem(holders, token)
        except BackendUnavailable as exc:
            # Nothing is lost: the holder expires by itself within `hold_seconds`.
            log.warning("could not release an LLM slot (%s); it frees itself when its hold lapses", exc)

    async def _keep_alive(self) -> None:
        """Extend every slot this process holds, a few times per hold period."""
        while True:
            await anyio.sleep(self._hold_ms / 3000)
            held = list(self._held.items())
            if not held:
                continue
            try:
                for token, holders in held:
                    extended = int(await self._script(_EXTEND, [holders], [token, self._hold_ms]))
                    if not extended and token in self._held:
                        log.warning(
                            "an LLM slot on %s lapsed before it was extended (stalled for over %.0fs?)",
                            holders,
                            self._hold_ms / 1000,
                        )
            except BackendUnavailable as exc:
                log.warning("could not extend LLM slots (%s); retrying in %.1fs", exc, self._hold_ms / 3000)
